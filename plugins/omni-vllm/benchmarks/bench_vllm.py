"""Decode time to first token with the KV loaded through OmniKVConnector, against recompute and vLLM's
ExampleConnector (disk), in one run.

    python bench_vllm.py --out DIR [--lengths 512,1024,2048,4096] [--reps 5] [--transports shm,te]

The model is the tests' tiny Qwen2 widened to what two cores prefill in seconds (``bench_model/``: 8 layers,
hidden 512, 4 KV heads of 64, bfloat16, dummy weights), with vLLM's CPU block size (128) and no local
prefix caching, so every measured prompt is new to the engine.  One repetition at length L:

- **omni-shm / omni-te**: a prefill engine (kv_producer) prefills a fresh prompt (``max_tokens=1``); the
  decode engine (kv_consumer, another process; Mooncake TE over TCP on loopback) then generates 1 token
  for it: it looks the prompt up, loads its whole blocks (never the last token) and computes the rest;
- **recompute**: the same decode engine, a fresh prompt nobody prefilled: a miss (the lookup included),
  then the whole prompt is computed;
- **example-disk**: vLLM's ExampleConnector (kv_both, safetensors files under DIR): a first request saves,
  a second request of the same prompt loads.

All five engines run at once; each repetition times every variant once, in an order that rotates, so
load from other work on the machine falls on all of them alike.  TTFT is the wall time of
``LLM.generate(prompt, max_tokens=1)`` inside the engine's process.  Each timed call starts after
SETTLE_S of quiet: vLLM's workers busy-poll their input queue for a second after each step
(``SpinCondition`` in shm_broadcast), and on two cores an engine that has just run slows the next one
several times over (a decode right after its prefill took 350-900 ms instead of 70-130 ms).  Writes
``results.json``, ``results.md`` and ``summary.json`` (for benchmarks/summarize.py) into DIR; ratios are of
medians (and of minima) of the same run.
"""

from __future__ import annotations

import argparse
import json
import os
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
ENV = {"VLLM_CPU_KVCACHE_SPACE": "1"}
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


def warm_up(*engines: Engine) -> None:
    for engine in engines:
        engine.generate([prompt(300)], max_tokens=1)


def _tree_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run(out: Path, lengths: list[int], reps: int, transports: list[str]) -> dict[str, Any]:
    """All engines up at once; each repetition times every variant once, in a rotating order."""
    store = out / "example-store"
    shutil.rmtree(store, ignore_errors=True)
    store.mkdir(parents=True)
    shm = {"name": "SharedMemoryConnector", "extra": {"namespace": "omnibench", "zero_copy": True}}
    te = {"protocol": "tcp", "host": "127.0.0.1", "zmq_port": 55000, "memory_pool_size": 256 << 20}
    te_producer = {"name": "MooncakeTransferEngineConnector", "extra": te}
    te_consumer = {"name": "MooncakeTransferEngineConnector", "extra": {**te, "sender_host": "127.0.0.1"}}
    example = {"kv_connector": "ExampleConnector", "kv_role": "kv_both",
               "kv_connector_extra_config": {"shared_storage_path": str(store)}}  # fmt: skip
    configs = {"example-disk": example}
    if "shm" in transports:
        configs.update({"shm-prefill": omni("kv_producer", shm), "omni-shm": omni("kv_consumer", shm)})
    if "te" in transports:
        configs.update({"te-prefill": omni("kv_producer", te_producer), "omni-te": omni("kv_consumer", te_consumer)})
    names = list(configs)
    started = start_engines(*[lambda c=configs[n]: Engine(llm_args(c), env=ENV) for n in names])
    engines = dict(zip(names, started, strict=True))
    samples: dict[str, dict[int, list[float]]] = {name: {} for name in names if "prefill" not in name}
    samples["recompute"] = {}
    before = {name: engines[name].metrics() for name in ("omni-shm", "omni-te") if name in engines}
    saved_bytes = example_tokens = 0
    try:
        warm_up(*started)
        recompute_on = engines["omni-shm" if "omni-shm" in engines else "example-disk"]
        for length in lengths:
            for rep in range(reps):
                texts = {name: prompt(length) for name in samples}
                for name in samples:
                    if name.startswith("omni-"):
                        engines[name.replace("omni-", "") + "-prefill"].generate([texts[name]], max_tokens=1)
                size = _tree_bytes(store)
                engines["example-disk"].generate([texts["example-disk"]], max_tokens=1)  # its save
                saved_bytes += _tree_bytes(store) - size
                order = list(samples)
                order = order[rep % len(order) :] + order[: rep % len(order)]
                for name in order:
                    engine = recompute_on if name == "recompute" else engines[name]
                    hits = counter(engine, "vllm:external_prefix_cache_hits")
                    seconds = timed(engine, texts[name])
                    loaded = counter(engine, "vllm:external_prefix_cache_hits") - hits
                    expected = 0 if name == "recompute" else loadable(length)
                    if loaded != expected:
                        raise RuntimeError(f"{name}: {loaded} tokens loaded of a {length}-token prompt, not {expected}")
                    if name == "example-disk":
                        example_tokens += loaded
                    samples[name].setdefault(length, []).append(seconds)
        moved = {"example-disk": {"bytes_loaded": saved_bytes, "tokens_loaded": example_tokens}}
        for name, first in before.items():
            last = engines[name].metrics()
            moved[name] = {key: last.get(f"vllm:omni_kv_{key}", 0) - first.get(f"vllm:omni_kv_{key}", 0)
                           for key in ("bytes_loaded", "tokens_loaded", "load_failures")}  # fmt: skip
    finally:
        close_engines(*started)
        shutil.rmtree(store, ignore_errors=True)
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
        f"{meta['cpus']} CPUs (5-minute load average {meta['load_average_5min'][0]:.1f} before, "
        f"{meta['load_average_5min'][1]:.1f} after), vLLM {meta['vllm']}.",
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
    load_before = os.getloadavg()[1]
    result = run(args.out, lengths, args.reps, transports)
    meta = {"model": "tiny Qwen2 widened (8 layers, hidden 512, 4 KV heads x 64, bf16)", "reps": args.reps,
            "cpus": len(os.sched_getaffinity(0)), "vllm": vllm.__version__,
            "load_average_5min": [load_before, os.getloadavg()[1]],
            "python": platform.python_version(), "seconds": time.perf_counter() - started,
            "command": " ".join(sys.argv)}  # fmt: skip
    summary = summarize(result, lengths)
    (args.out / "results.json").write_text(json.dumps({"meta": meta, **summary, **result}, indent=1))
    rows = [
        {"connector": "OmniKVConnector", "path": f"decode TTFT, KV over {label.removeprefix('omni-')}",
         "payload": f"{row['tokens']} prompt tokens", "bytes": row["tokens"], "size_unit": "prompt tokens",
         "reference": ref, "measure": "connector TTFT / reference TTFT (lower is better)",
         **row[f"{label}/{ref}"]}
        for row in summary["rows"] for label in ("omni-shm", "omni-te") for ref in ("recompute", "example-disk")
        if f"{label}/{ref}" in row
    ]  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps({"command": meta["command"], "rows": rows}, indent=1))
    table = markdown(summary, meta)
    (args.out / "results.md").write_text(table)
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
