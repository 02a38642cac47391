"""End-to-end benchmark of omni-shm's SharedMemoryConnector against vllm-omni 0.30.0's and against memcpy.

    python bench_shm.py --out DIR [--quick]

The parent process is the producer; each (connector, payload) pair gets a fresh consumer process.  One
repetition is timed from just before ``put`` in the producer to ``get`` returning the object in the consumer;
the key and metadata travel over a pipe, as an orchestrator would send them.  Both sides take
``time.perf_counter()`` (CLOCK_MONOTONIC, shared by all processes of the host).  References measured in the
same run: ``memcpy`` (numpy copy of the same number of bytes between two pre-faulted buffers: the floor of
any transfer) and ``handoff`` (the pipe round trip alone: the floor of any small message).

Both processes run torch with one intra-op thread (``--threads``): on a host with few cores the OpenMP
workers of one process spin-wait after each copy and starve the other process (1 MiB took 2-4 ms instead of
0.2 ms with torch's default on the 2-core machine this was written on).

vllm-omni is installed on first use with ``pip install --no-deps vllm-omni==0.30.0`` and its connector
module is imported with the minimum stubbed (see ``load_vllm_omni_connector``).  Writes ``results.json``,
``results.md`` and ``bandwidth.png`` into DIR.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

MIB = 1 << 20
VLLM_OMNI = "vllm-omni==0.30.0"
#: payload name -> (repetitions, quick repetitions)
CASES = {
    "dict_1k": (2000, 300),
    "tensor_1m": (300, 50),
    "dict_16m": (60, 10),
    "tensor_64m": (30, 8),
}
#: omni-shm-thp: copy mode with the consumer's torch allocating through transparent huge pages
#: (``THP_MEM_ALLOC_ENABLE=1``), to show what a large copy costs in page faults.
CONNECTORS = ("omni-shm", "omni-shm-zero-copy", "omni-shm-thp", "vllm-omni")
WARMUP = 3


# -- payloads (deterministic, so the consumer can check what it got) ------------------------------------------
def make_payload(case: str) -> Any:
    import torch

    if case == "dict_1k":
        return {
            "engine_inputs": {"prompt_token_ids": list(range(1000, 1150)), "prompt": "Describe the picture. " * 4},
            "sampling_params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "stop": ["</s>"]},
            "metadata": {"stage_transition": "0->1", "timestamp": 1700000000.0, "request_id": "req-0123456789"},
        }
    if case == "tensor_1m":
        return torch.arange(MIB // 2, dtype=torch.float16)
    if case == "tensor_64m":
        return torch.arange(64 * MIB // 2, dtype=torch.float32).to(torch.float16)
    if case == "dict_16m":
        return {
            "hidden_states": torch.arange(16 * MIB // 2, dtype=torch.float32).to(torch.float16).view(-1, 4096),
            "request_id": "req-0123456789",
            "token_ids": list(range(64)),
            "finished": False,
        }
    raise ValueError(case)


def payload_bytes(payload: Any) -> int:
    """Bytes of the payload as omni's serializer frames it (the common measure of size)."""
    from omni_core import OmniSerializer

    return OmniSerializer.prepare(payload).nbytes


def same_payload(expected: Any, actual: Any) -> bool:
    import torch

    if isinstance(expected, torch.Tensor):
        return isinstance(actual, torch.Tensor) and expected.dtype == actual.dtype and torch.equal(expected, actual)
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(same_payload(expected[k], actual[k]) for k in expected)
        )
    return bool(expected == actual) or (isinstance(expected, tuple) and list(expected) == actual)


# -- connectors -----------------------------------------------------------------------------------------
def ensure_vllm_omni() -> None:
    """Install vllm-omni without its dependencies (vLLM itself is not needed for its SHM connector)."""
    if importlib.util.find_spec("vllm_omni") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", VLLM_OMNI], check=True)


@functools.cache
def load_vllm_omni_connector() -> type:
    """Import vllm-omni's SharedMemoryConnector with the minimum stubbed.

    Stubbed: the package ``__init__`` files of ``vllm_omni``, ``vllm_omni.distributed[.omni_connectors]``
    and ``vllm_omni.entrypoints`` (they import vLLM and every backend; the connector's own modules are
    loaded from the installed package), ``vllm_omni.config.yaml_util.to_dict`` and
    ``vllm_omni.platforms.current_omni_platform`` (imported by ``stage_utils`` for unrelated helpers), and
    ``vllm.outputs.{RequestOutput, CompletionOutput}`` (only referenced by the serializer's output
    reconstruction, which these payloads never reach).  Real: the connector, ``stage_utils``' shm helpers,
    the msgspec serializer, torch, numpy, PIL.
    """
    root = Path(importlib.util.find_spec("vllm_omni").submodule_search_locations[0])  # type: ignore[union-attr]
    for package in ("", ".distributed", ".distributed.omni_connectors", ".entrypoints"):
        module = types.ModuleType("vllm_omni" + package)
        module.__path__ = [str(root / package.lstrip(".").replace(".", "/"))]
        sys.modules.setdefault(module.__name__, module)
    stubs = {
        "vllm_omni.config": {},
        "vllm_omni.config.yaml_util": {"to_dict": dict},
        "vllm_omni.platforms": {"current_omni_platform": None},
        "vllm": {},
        "vllm.outputs": {"RequestOutput": type("RequestOutput", (), {}),
                         "CompletionOutput": type("CompletionOutput", (), {})},
    }  # fmt: skip
    for name, attrs in stubs.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules.setdefault(name, module)
    module = importlib.import_module("vllm_omni.distributed.omni_connectors.connectors.shm_connector")
    return module.SharedMemoryConnector


def make_connector(kind: str) -> Any:
    if kind == "vllm-omni":
        return load_vllm_omni_connector()({})
    from omni_core import ConnectorSpec, OmniConnectorFactory

    extra = {"namespace": "bench", "zero_copy": kind == "omni-shm-zero-copy", "keep_idle_bytes": 1 << 30}
    return OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", extra))


# -- the two processes ----------------------------------------------------------------------------------
def consume(kind: str, case: str) -> None:
    """Consumer process: get every key announced on stdin, time it, acknowledge on stdout."""
    connector = None if kind == "handoff" else make_connector(kind)
    expected = make_payload(case)
    latencies: list[float] = []
    ok = True
    print("ready", flush=True)
    for line in sys.stdin:
        message = json.loads(line)
        if message.get("done"):
            break
        if connector is not None:
            result = connector.get("0", "1", message["key"], message["meta"])
            received = time.perf_counter()
            ok = ok and result is not None and (len(latencies) > 0 or same_payload(expected, result[0]))
            del result  # zero-copy views are released here, before the producer may reuse the region
        else:
            received = time.perf_counter()
        latencies.append(received - message["t0"])
        print("ack", flush=True)
    if connector is not None:
        connector.close()
    print(json.dumps({"latencies": latencies, "ok": ok}), flush=True)


def produce(kind: str, case: str, reps: int) -> dict[str, Any]:
    """Producer (this process): put, announce, wait for the ack; return the consumer's timings."""
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1"} if kind == "omni-shm-thp" else None
    child = subprocess.Popen(
        [sys.executable, __file__, "--consume", kind, case],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1, env=env,
    )  # fmt: skip
    assert child.stdin is not None and child.stdout is not None
    if child.stdout.readline().strip() != "ready":
        raise RuntimeError(f"consumer for {kind}/{case} did not start")
    connector = None if kind == "handoff" else make_connector(kind)
    payload = make_payload(case)
    try:
        for i in range(reps + WARMUP):
            key = f"bench-{case}-{os.getpid()}-{i}"
            t0 = time.perf_counter()
            meta = None
            if connector is not None:
                ok, _, meta = connector.put("0", "1", key, payload)
                assert ok, f"{kind} put failed"
            child.stdin.write(json.dumps({"key": key, "meta": meta, "t0": t0}) + "\n")
            child.stdin.flush()
            if child.stdout.readline().strip() != "ack":
                raise RuntimeError(f"consumer for {kind}/{case} stopped")
        child.stdin.write(json.dumps({"done": True}) + "\n")
        child.stdin.flush()
        report = json.loads(child.stdout.readline())
    finally:
        if connector is not None:
            connector.close()
        child.stdin.close()
        child.wait()
    return {"latencies": report["latencies"][WARMUP:], "ok": report["ok"]}


def memcpy_seconds(nbytes: int, reps: int) -> list[float]:
    """numpy copy of ``nbytes`` between two pre-faulted buffers."""
    import numpy as np

    src = np.ones(nbytes, dtype=np.uint8)
    dst = np.zeros(nbytes, dtype=np.uint8)
    times = []
    for _ in range(reps + WARMUP):
        t0 = time.perf_counter()
        np.copyto(dst, src)
        times.append(time.perf_counter() - t0)
    return times[WARMUP:]


def small_payload_floor(reps: int) -> dict[str, float]:
    """Median microseconds of what any key-addressed shared-memory hand-off of the 1 KiB dict must do.

    Measured in one warm process: the serializer's encode + decode, and the five system calls an omni-shm
    message costs (symlink to publish, readlink to find, unlink to consume, two fcntl for the region lock);
    then omni-shm's own put + get in one process, for comparison.  The pipe hand-off is measured above.
    """
    import fcntl
    import struct

    from omni_core import OmniSerializer

    payload = make_payload("dict_1k")
    frame = bytearray(payload_bytes(payload))
    entry = f"/dev/shm/omni-bench-k-floor-{os.getpid()}"
    lock_file = f"/dev/shm/omni-bench-floor-{os.getpid()}"
    fd = os.open(lock_file, os.O_CREAT | os.O_RDWR, 0o600)
    flock = struct.Struct("hhqqi4x")

    def serializer() -> None:
        OmniSerializer.prepare(payload).write_into(frame)
        OmniSerializer.deserialize(frame)

    def syscalls() -> None:
        os.symlink("target", entry)
        os.readlink(entry)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock.pack(fcntl.F_WRLCK, 0, 0, 2, 0))
        os.unlink(entry)
        fcntl.fcntl(fd, fcntl.F_OFD_SETLK, flock.pack(fcntl.F_UNLCK, 0, 0, 2, 0))

    connector = make_connector("omni-shm")
    keys = iter(range(1 << 62))

    def put_get() -> None:
        key = f"floor-{next(keys)}"
        connector.put("0", "1", key, payload)
        connector.get("0", "1", key)

    try:
        return {name: _median_us(step, reps) for name, step in
                (("serializer encode + decode", serializer), ("5 system calls", syscalls),
                 ("omni-shm put + get, one process", put_get))}  # fmt: skip
    finally:
        connector.close()
        os.close(fd)
        os.unlink(lock_file)


def _median_us(step: Any, reps: int) -> float:
    times = []
    for _ in range(reps + WARMUP):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return round(statistics.median(times[WARMUP:]) * 1e6, 1)


# -- report ---------------------------------------------------------------------------------------------
def summarize(connector: str, case: str, nbytes: int, seconds: list[float], ok: bool = True) -> dict[str, Any]:
    median = statistics.median(seconds)
    return {
        "connector": connector, "case": case, "bytes": nbytes, "reps": len(seconds), "ok": ok,
        "min_ms": min(seconds) * 1e3, "median_ms": median * 1e3, "median_gbps": nbytes / median / 1e9,
    }  # fmt: skip


def targets(rows: list[dict[str, Any]]) -> dict[str, Any]:
    by = {(r["connector"], r["case"]): r for r in rows}
    out: dict[str, Any] = {}
    memcpy = by.get(("memcpy", "tensor_64m"))
    for kind in ("omni-shm", "omni-shm-zero-copy", "omni-shm-thp"):
        row = by.get((kind, "tensor_64m"))
        if row and memcpy:
            ratio = row["median_gbps"] / memcpy["median_gbps"]
            out[f"{kind} 64 MiB bandwidth / memcpy (target >= 0.5)"] = round(ratio, 3)
        small, upstream = by.get((kind, "dict_1k")), by.get(("vllm-omni", "dict_1k"))
        if small and upstream:
            ratio = small["median_ms"] / upstream["median_ms"]
            out[f"{kind} 1 KiB median / vllm-omni's (target <= 0.2)"] = round(ratio, 3)
    return out


def write_report(out: Path, rows: list[dict[str, Any]], floor: dict[str, float], command: str) -> None:
    result = {
        "command": command,
        "host": {"python": platform.python_version(), "machine": platform.machine(), "cpus": os.cpu_count()},
        "rows": rows,
        "targets": targets(rows),
        "small_payload_floor_us": floor,
    }
    (out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "| payload | bytes | connector | reps | min ms | median ms | median GB/s |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        flag = "" if r["ok"] else " (WRONG DATA)"
        lines.append(
            f"| {r['case']} | {r['bytes']} | {r['connector']}{flag} | {r['reps']} | {r['min_ms']:.3f} | "
            f"{r['median_ms']:.3f} | {r['median_gbps']:.2f} |"
        )
    lines += ["", *(f"- {name}: **{value}**" for name, value in result["targets"].items())]
    lines += ["", "1 KiB dict, median µs of the unavoidable steps (one warm process):", ""]
    lines += [f"- {name}: {value}" for name, value in floor.items()]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    plot(out / "bandwidth.png", rows)


def plot(path: Path, rows: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for connector in dict.fromkeys(r["connector"] for r in rows):
        points = sorted((r["bytes"], r["median_gbps"]) for r in rows if r["connector"] == connector)
        style = {"linestyle": "--", "color": "black"} if connector == "memcpy" else {"marker": "o"}
        ax.plot(*zip(*points, strict=True), label=connector, **style)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("payload bytes (serialized frame)")
    ax.set_ylabel("end-to-end GB/s (median)")
    ax.set_title("producer put -> consumer get, separate processes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # vllm-omni's resource tracker warns per consumed segment
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="directory for results.json, results.md and bandwidth.png")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads per process (default 1)")
    parser.add_argument("--consume", nargs=2, metavar=("CONNECTOR", "CASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # inherited by the consumers
    import torch

    torch.set_num_threads(args.threads)
    if args.consume:
        consume(*args.consume)
        return 0
    if args.out is None:
        parser.error("--out is required")
    args.out.mkdir(parents=True, exist_ok=True)
    ensure_vllm_omni()
    rows = []
    for case, (reps, quick_reps) in CASES.items():
        reps = quick_reps if args.quick else reps
        nbytes = payload_bytes(make_payload(case))
        rows.append(summarize("memcpy", case, nbytes, memcpy_seconds(nbytes, reps)))
        if case == "dict_1k":
            handoff = produce("handoff", case, reps)
            rows.append(summarize("handoff (pipe only)", case, nbytes, handoff["latencies"]))
        for kind in CONNECTORS:
            run = produce(kind, case, reps)
            rows.append(summarize(kind, case, nbytes, run["latencies"], run["ok"]))
            print(f"{case:>10} {kind:>20}: median {rows[-1]['median_ms']:.3f} ms", flush=True)
    floor = small_payload_floor(CASES["dict_1k"][1 if args.quick else 0])
    write_report(args.out, rows, floor, " ".join([Path(sys.executable).name, *sys.argv]))
    print((args.out / "results.md").read_text())
    return 0 if all(r["ok"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
