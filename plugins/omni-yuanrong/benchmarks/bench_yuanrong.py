"""YuanrongConnector against the raw KVClient it wraps, in one run against one loopback worker.

    python bench_yuanrong.py --out DIR

Each row pairs a connector operation with the raw KVClient call doing the same
work (write a 1 MiB / 64 MiB tensor, read it back into a fresh tensor, or map it
without a copy), interleaved rep by rep so machine noise hits both alike.
``ratio`` = raw time / connector time: 1.0 means no overhead, the target is >= 0.9.
Writes results.json, results.md, results.png and summary.json (ratios for
``benchmarks/summarize.py``) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omni_yuanrong.kv_connector import YuanrongConnector
from omni_yuanrong.testing import LocalDatasystemWorker

MIB = 1 << 20
EDGE = ("0", "1")
TIMEOUTS = {"connect_timeout_ms": 10_000, "req_timeout_ms": 10_000}


@dataclass
class Row:
    size: str
    operation: str
    connector_call: str
    raw_call: str
    connector_min_ms: float
    connector_median_ms: float
    raw_min_ms: float
    raw_median_ms: float

    @property
    def ratio_min(self) -> float:
        return self.raw_min_ms / self.connector_min_ms

    @property
    def ratio_median(self) -> float:
        return self.raw_median_ms / self.connector_median_ms


class Bench:
    """The clients, payloads and timed operations for one payload size."""

    def __init__(self, worker: LocalDatasystemWorker, nbytes: int) -> None:
        from yr.datasystem import KVClient, WriteMode

        self.raw = KVClient(worker.host, worker.port, **TIMEOUTS)
        self.raw.init()
        self.mode = WriteMode.NONE_L2_CACHE_EVICT
        extra = {"host": worker.host, "port": worker.port, **TIMEOUTS}
        self.copying = YuanrongConnector(extra)
        self.viewing = YuanrongConnector({**extra, "zero_copy": True})
        self.tensor = torch.randint(0, 256, (nbytes,), dtype=torch.uint8)
        self.tensor_bytes = memoryview(self.tensor.numpy())  # what a raw user hands to set(): no extra copy
        self.read_key = f"read-{uuid.uuid4().hex}"
        self.raw_write_key = self.write_key = ""

    # untimed, before each write: delete the last value and pick a fresh key (request keys are unique)
    def fresh_raw_key(self) -> None:
        if self.raw_write_key:
            self.raw.delete([self.raw_write_key])
        self.raw_write_key = f"write-{uuid.uuid4().hex}"

    def fresh_key(self) -> None:
        if self.write_key:
            self.copying.cleanup(self.write_key, *EDGE)
        self.write_key = f"write-{uuid.uuid4().hex}"

    # raw KVClient calls
    def raw_set(self) -> None:
        self.raw.set(self.raw_write_key, self.tensor_bytes, self.mode)

    def raw_get(self) -> Any:
        return self.raw.get([self.read_key])[0]

    def raw_get_buffers_copy(self) -> Any:
        return np.frombuffer(self.raw.get_buffers([self.read_key])[0], np.uint8).copy()

    def raw_get_buffers_view(self) -> Any:
        return memoryview(self.raw.get_buffers([self.read_key])[0])

    # connector calls
    def put(self) -> None:
        assert self.copying.put(*EDGE, self.write_key, self.tensor)[0]

    def get(self) -> Any:
        return self.copying.get(*EDGE, self.read_key)

    def get_zero_copy(self) -> Any:
        return self.viewing.get(*EDGE, self.read_key)

    def prepare_reads(self) -> None:
        """Write the value each side reads, and check the connector returns exactly what was put."""
        self.raw.set(self.read_key, self.tensor_bytes, self.mode)
        assert self.copying.put(*EDGE, self.read_key, self.tensor)[0]
        for connector in (self.copying, self.viewing):
            result = connector.get(*EDGE, self.read_key)
            assert result is not None and torch.equal(result[0], self.tensor), "connector returned wrong bytes"

    def close(self) -> None:
        self.fresh_raw_key()
        self.fresh_key()
        self.raw.delete([self.read_key])
        self.copying.cleanup(self.read_key, *EDGE)
        self.copying.close()
        self.viewing.close()


Step = tuple[Callable[[], Any], Callable[[], Any]]  # (untimed preparation, timed call)


def no_preparation() -> None:
    pass


def timed(pairs: list[tuple[Step, Step]], reps: int) -> list[tuple[list[float], list[float]]]:
    """Time each (connector, raw) pair ``reps`` times, interleaved, each call after its untimed preparation.

    Which side goes first alternates rep by rep: a call can be slowed by the worker still finishing the
    previous one, and that must not always hit the same side.  The first round is a discarded warm-up.
    """
    samples: list[tuple[list[float], list[float]]] = [([], []) for _ in pairs]
    for rep in range(reps + 1):
        for pair, (connector_times, raw_times) in zip(pairs, samples, strict=True):
            order = list(zip(pair, (connector_times, raw_times), strict=True))
            for (prepare, call), times in order[:: 1 if rep % 2 else -1]:
                prepare()
                start = time.perf_counter()
                result = call()
                elapsed = (time.perf_counter() - start) * 1000
                del result  # freeing what a call returned is not part of the call
                if rep:
                    times.append(elapsed)
    return samples


def measure(worker: LocalDatasystemWorker, nbytes: int, reps: int) -> list[Row]:
    bench = Bench(worker, nbytes)
    reading = no_preparation
    try:
        operations = [
            ("write", (bench.fresh_key, bench.put), (bench.fresh_raw_key, bench.raw_set)),
            ("read into a new tensor", (reading, bench.get), (reading, bench.raw_get)),
            ("read into a new tensor", (reading, bench.get), (reading, bench.raw_get_buffers_copy)),
            ("map without copying", (reading, bench.get_zero_copy), (reading, bench.raw_get_buffers_view)),
        ]
        bench.prepare_reads()
        samples = timed([(conn, raw) for _, conn, raw in operations], reps)
    finally:
        bench.close()
    size = f"{nbytes // MIB} MiB"
    return [
        Row(
            size,
            operation,
            f"connector.{conn[1].__name__}",
            f"KVClient.{raw[1].__name__.removeprefix('raw_')}",
            min(conn_times),
            statistics.median(conn_times),
            min(raw_times),
            statistics.median(raw_times),
        )
        for (operation, conn, raw), (conn_times, raw_times) in zip(operations, samples, strict=True)
    ]


#: (operation, raw call) -> target at every size
TARGETS = {("write", "KVClient.set"): ">= 0.9", ("read into a new tensor", "KVClient.get_buffers_copy"): ">= 0.9"}


def summary_rows(rows: list[Row]) -> list[dict[str, Any]]:
    """The ratios for ``benchmarks/summarize.py``."""
    return [
        {
            "connector": "YuanrongConnector",
            "path": f"{r.connector_call.removeprefix('connector.')} ({r.operation})",
            "payload": f"{r.size} uint8 tensor",
            "bytes": int(r.size.split()[0]) * MIB,
            "reference": r.raw_call,
            "measure": "raw time / connector time",
            "min": r.ratio_min,
            "median": r.ratio_median,
            "target": TARGETS.get((r.operation, r.raw_call), ""),
        }
        for r in rows
    ]


def markdown(rows: list[Row]) -> str:
    lines = [
        "| size | operation | connector | raw KVClient | connector min / median ms | raw min / median ms "
        "| ratio min / median |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.size} | {r.operation} | `{r.connector_call.removeprefix('connector.')}` "
            f"| `{r.raw_call.removeprefix('KVClient.')}` "
            f"| {r.connector_min_ms:.2f} / {r.connector_median_ms:.2f} | {r.raw_min_ms:.2f} / {r.raw_median_ms:.2f} "
            f"| {r.ratio_min:.2f} / {r.ratio_median:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        f"{r.size}\n{r.connector_call.removeprefix('connector.')}\nvs {r.raw_call.removeprefix('KVClient.')}"
        for r in rows
    ]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, 1.9 * len(rows)), 4.8))
    ax.bar(x - 0.2, [r.ratio_min for r in rows], 0.4, label="ratio of minima")
    ax.bar(x + 0.2, [r.ratio_median for r in rows], 0.4, label="ratio of medians")
    ax.axhline(1.0, color="black", linewidth=0.8)
    ax.axhline(0.9, color="red", linestyle="--", linewidth=0.8, label="target 0.9")
    ax.set_xticks(x, labels, fontsize=7)
    ax.set_ylabel("raw time / connector time (higher is better)")
    ax.set_title("YuanrongConnector vs raw KVClient, loopback worker")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, results.md, results.png")
    parser.add_argument("--reps-small", type=int, default=100, help="repetitions at 1 MiB")
    parser.add_argument("--reps-large", type=int, default=20, help="repetitions at 64 MiB")
    parser.add_argument("--quick", action="store_true", help="20 and 5 repetitions")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps_small, args.reps_large = 20, 5
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="omni-yuanrong-bench-logs-") as logs:
        os.environ.setdefault("DATASYSTEM_CLIENT_LOG_DIR", logs)  # keep client logs out of ~/.datasystem
        with LocalDatasystemWorker.start(shared_memory_mb=1024) as worker:
            rows = measure(worker, 1 * MIB, args.reps_small) + measure(worker, 64 * MIB, args.reps_large)
    table = markdown(rows)
    (args.out / "results.md").write_text(table)
    environment = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "openyuanrong-datasystem": version("openyuanrong-datasystem"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "reps": {"1 MiB": args.reps_small, "64 MiB": args.reps_large},
    }
    results = [{**asdict(r), "ratio_min": r.ratio_min, "ratio_median": r.ratio_median} for r in rows]
    (args.out / "results.json").write_text(json.dumps({"environment": environment, "rows": results}, indent=2))
    summary = {"command": " ".join([Path(sys.executable).name, *sys.argv]), "load_average": os.getloadavg(),
               "rows": summary_rows(rows)}  # fmt: skip
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    plot(rows, args.out / "results.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
