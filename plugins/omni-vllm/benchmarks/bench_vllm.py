"""Decode time to first token with the KV loaded through OmniKVConnector, against recompute and vLLM's
ExampleConnector (disk), in one run.

    python bench_vllm.py --out DIR [--lengths 512,1024,2048,4096] [--reps 5] [--transports shm,te]

The model is the tests' tiny Qwen2 widened to what two cores prefill in seconds (``bench_model/``: 8 layers,
hidden 512, 4 KV heads of 64, bfloat16, dummy weights), with vLLM's CPU block size (128) and no local
prefix caching, so every measured prompt is new to the engine.  One repetition at length L:

- **omni-shm / omni-te**: a prefill engine (kv_producer) prefills a fresh prompt (``max_tokens=1``); the
  decode engine (kv_consumer, another process) then generates 1 token for it: it looks the prompt up,
  loads its whole blocks (all but the last partial block, and never the last token) and computes the rest;
- **recompute**: the same decode engine, a fresh prompt nobody prefilled: a miss (the lookup included),
  then the whole prompt is computed;
- **example-disk**: vLLM's ExampleConnector (kv_both, safetensors files under DIR): a first request saves,
  a second request of the same prompt loads.

TTFT is the wall time of ``LLM.generate(prompt, max_tokens=1)`` inside the engine's process.  Each timed
call starts after SETTLE_S of quiet: vLLM's workers busy-poll their input queue for a second after each
step (``SpinCondition`` in shm_broadcast), and on two cores an engine that has just run slows the next
one several times over (a decode right after its prefill took 350-900 ms instead of 70-130 ms).  Writes
``results.json`` and ``results.md`` into DIR; ratios are of medians (and of minima) of the same run.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from omni_vllm.driver import Engine, close_engines, start_engines

MODEL_DIR = Path(__file__).parent / "bench_model"
BLOCK_SIZE = 128
MAX_LEN = 4608
ENV = {"VLLM_CPU_KVCACHE_SPACE": "2"}
SETTLE_S = 1.2
_rng = random.Random(20261204)


def llm_args(kv_transfer_config: dict[str, Any] | None) -> dict[str, Any]:
    return {
        "model": str(MODEL_DIR), "load_format": "dummy", "skip_tokenizer_init": True, "enforce_eager": True,
        "dtype": "bfloat16", "max_model_len": MAX_LEN, "max_num_batched_tokens": MAX_LEN, "max_num_seqs": 1,
        "seed": 0, "disable_log_stats": False, "block_size": BLOCK_SIZE, "enable_prefix_caching": False,
        "kv_transfer_config": kv_transfer_config,
    }  # fmt: skip


def omni(role: str, connector: dict[str, Any]) -> dict[str, Any]:
    return {"kv_connector": "OmniKVConnector", "kv_role": role, "kv_load_failure_policy": "recompute",
            "kv_connector_extra_config": {"omni_connector": connector, "namespace": "bench"}}  # fmt: skip


def prompt(length: int) -> list[int]:
    return [_rng.randrange(3, 1000) for _ in range(length)]


def loadable(length: int) -> int:
    return (length - 1) // BLOCK_SIZE * BLOCK_SIZE


def counter(engine: Engine, name: str) -> float:
    return engine.metrics().get(name, 0.0)


def timed(engine: Engine, text: list[int]) -> float:
    """Seconds of one ``generate(max_tokens=1)``, started after every engine has gone quiet."""
    time.sleep(SETTLE_S)
    return engine.generate_timed([text], max_tokens=1)[1]


def measure_pair(producer: Engine, consumer: Engine, lengths: list[int], reps: int, label: str,
                 samples: dict[str, dict[int, list[float]]], recompute: bool) -> dict[str, float]:  # fmt: skip
    """TTFT of loads through the pair (and of recompute on the consumer); bytes and tokens loaded."""
    before = consumer.metrics()
    for length in lengths:
        for _ in range(reps):
            loaded = prompt(length)
            producer.generate([loaded], max_tokens=1)
            hits = counter(consumer, "vllm:external_prefix_cache_hits")
            seconds = timed(consumer, loaded)
            if counter(consumer, "vllm:external_prefix_cache_hits") - hits != loadable(length):
                raise RuntimeError(f"{label}: the decode engine did not load the prompt of {length} tokens")
            samples[label].setdefault(length, []).append(seconds)
            if recompute:
                seconds = timed(consumer, prompt(length))
                samples["recompute"].setdefault(length, []).append(seconds)
    after = consumer.metrics()
    return {name: after.get(f"vllm:omni_kv_{name}", 0) - before.get(f"vllm:omni_kv_{name}", 0)
            for name in ("bytes_loaded", "tokens_loaded", "load_failures")}  # fmt: skip


def measure_example(engine: Engine, store: Path, lengths: list[int], reps: int,
                    samples: dict[str, dict[int, list[float]]]) -> dict[str, float]:  # fmt: skip
    saved_bytes = tokens = 0
    for length in lengths:
        for _ in range(reps):
            text = prompt(length)
            size = _tree_bytes(store)
            engine.generate([text], max_tokens=1)  # saves
            saved_bytes += _tree_bytes(store) - size
            hits = counter(engine, "vllm:external_prefix_cache_hits")
            seconds = timed(engine, text)  # loads
            loaded = counter(engine, "vllm:external_prefix_cache_hits") - hits
            if loaded <= 0:
                raise RuntimeError(f"ExampleConnector did not load the prompt of {length} tokens")
            tokens += loaded
            samples["example-disk"].setdefault(length, []).append(seconds)
    return {"bytes_loaded": saved_bytes, "tokens_loaded": tokens}


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def warm_up(*engines: Engine) -> None:
    for engine in engines:
        engine.generate([prompt(300)], max_tokens=1)


def run(out: Path, lengths: list[int], reps: int, transports: list[str]) -> dict[str, Any]:
    samples: dict[str, dict[int, list[float]]] = {"recompute": {}, "example-disk": {}}
    moved: dict[str, dict[str, float]] = {}
    store = out / "example-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    shm = {"name": "SharedMemoryConnector", "extra": {"namespace": "omnibench", "zero_copy": True}}
    example = {"kv_connector": "ExampleConnector", "kv_role": "kv_both",
               "kv_connector_extra_config": {"shared_storage_path": str(store)}}  # fmt: skip
    engines = start_engines(
        lambda: Engine(llm_args(omni("kv_producer", shm)), env=ENV),
        lambda: Engine(llm_args(omni("kv_consumer", shm)), env=ENV),
        lambda: Engine(llm_args(example), env=ENV),
    )
    try:
        warm_up(*engines)
        if "shm" in transports:
            samples["omni-shm"] = {}
            moved["omni-shm"] = measure_pair(engines[0], engines[1], lengths, reps, "omni-shm", samples, True)
        moved["example-disk"] = measure_example(engines[2], store, lengths, reps, samples)
    finally:
        close_engines(*engines)
        shutil.rmtree(store, ignore_errors=True)
    if "te" in transports:
        te = {"protocol": "tcp", "host": "127.0.0.1", "zmq_port": 55000, "memory_pool_size": 256 << 20}
        producer, consumer = start_engines(
            lambda: Engine(llm_args(omni("kv_producer", {"name": "MooncakeTransferEngineConnector", "extra": te})),
                           env=ENV),
            lambda: Engine(llm_args(omni("kv_consumer", {"name": "MooncakeTransferEngineConnector",
                                                          "extra": {**te, "sender_host": "127.0.0.1"}})), env=ENV),
        )  # fmt: skip
        try:
            warm_up(producer, consumer)
            samples["omni-te"] = {}
            moved["omni-te"] = measure_pair(producer, consumer, lengths, reps, "omni-te", samples, False)
        finally:
            close_engines(producer, consumer)
    return {"samples": samples, "moved": moved}


def summarize(result: dict[str, Any], lengths: list[int]) -> dict[str, Any]:
    samples, moved = result["samples"], result["moved"]
    rows = []
    for length in lengths:
        row: dict[str, Any] = {"tokens": length, "loaded_tokens": loadable(length)}
        for label, per_length in samples.items():
            values = per_length.get(length, [])
            if values:
                row[label] = {"median_ms": statistics.median(values) * 1e3, "min_ms": min(values) * 1e3}
        for label in ("omni-shm", "omni-te"):
            if label in row:
                for ref in ("recompute", "example-disk"):
                    row[f"{label}/{ref}"] = {
                        "median": row[label]["median_ms"] / row[ref]["median_ms"],
                        "min": row[label]["min_ms"] / row[ref]["min_ms"],
                    }
        rows.append(row)
    bytes_per_token = {label: m["bytes_loaded"] / m["tokens_loaded"] for label, m in moved.items()
                       if m["tokens_loaded"]}  # fmt: skip
    return {"rows": rows, "bytes_per_token": bytes_per_token, "moved": moved}


def markdown(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    labels = [label for label in ("recompute", "omni-shm", "omni-te", "example-disk") if label in summary["rows"][0]]
    lines = [
        f"Decode TTFT (ms, median / min of {meta['reps']}), {meta['model']}, block size {BLOCK_SIZE}, "
        f"{meta['cpus']} CPUs, vLLM {meta['vllm']}.",
        "",
        "| prompt tokens | loaded | " + " | ".join(labels) + " | " + " | ".join(
            f"{o}/{r}" for o in ("omni-shm", "omni-te") if o in labels for r in ("recompute", "example-disk")) + " |",
        "| --- | --- | " + " | ".join("---" for _ in labels) + " | " + " | ".join(
            "---" for o in ("omni-shm", "omni-te") if o in labels for _ in range(2)) + " |",
    ]  # fmt: skip
    for row in summary["rows"]:
        cells = [f"{row[label]['median_ms']:.1f} / {row[label]['min_ms']:.1f}" for label in labels]
        ratios = [f"{row[f'{o}/{r}']['median']:.2f} / {row[f'{o}/{r}']['min']:.2f}"
                  for o in ("omni-shm", "omni-te") if o in labels for r in ("recompute", "example-disk")]  # fmt: skip
        lines.append(f"| {row['tokens']} | {row['loaded_tokens']} | " + " | ".join(cells + ratios) + " |")
    lines += ["", "Bytes moved per loaded token: " + ", ".join(
        f"{label} {value:.0f}" for label, value in summary["bytes_per_token"].items()) + "."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lengths", default="512,1024,2048,4096")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--transports", default="shm,te", help="omni transports: shm, te (Mooncake TE on loopback)")
    args = parser.parse_args()
    lengths = [int(x) for x in args.lengths.split(",")]
    transports = [t for t in args.transports.split(",") if t]
    args.out.mkdir(parents=True, exist_ok=True)
    import vllm

    started = time.perf_counter()
    result = run(args.out, lengths, args.reps, transports)
    meta = {"model": "tiny Qwen2 widened (8 layers, hidden 512, 4 KV heads x 64, bf16)", "reps": args.reps,
            "cpus": len(__import__("os").sched_getaffinity(0)), "vllm": vllm.__version__,
            "python": platform.python_version(), "seconds": time.perf_counter() - started,
            "command": " ".join(sys.argv)}  # fmt: skip
    summary = summarize(result, lengths)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, **summary, **result}, indent=1))
    table = markdown(summary, meta)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
