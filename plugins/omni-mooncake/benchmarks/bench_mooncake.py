"""Benchmark: omni-mooncake's two connectors against the raw Mooncake APIs they use, in the same run.

    python bench_mooncake.py --out DIR [--quick]

Everything runs on loopback over TCP with a ``mooncake_master`` started here (default 10 s leases).  Every
actor is its own process (``bench_worker.py``), driven over pipes with JSON; each process times only its
own API call.  Raw and connector iterations alternate (which goes first alternates too), so background
load on a shared host hits both alike.  Per payload size (1, 16, 256 MiB of uint8 tensor):

* Store: a holder process owns the only segment, so writers and readers both cross TCP.  Raw reference:
  ``put_from`` / ``get_into`` with registered buffers and known sizes.  Connector: ``put(tensor)``,
  ``get`` with the put metadata, as an orchestrator forwards it, and ``get (key only)`` without it, the
  default path of a stage (both return the tensor).
* TransferEngine: raw references ``transfer_sync_write`` and ``transfer_sync_read`` between registered
  buffers.  Connector: ``get`` with the put metadata, timed in the receiver (the claim sent on the side
  channel, the receiver's read from the sender's pool, the claim's answer), against the raw write and the
  raw read that move the same bytes; ``put`` (the one copy into the sender's pool) is reported too.

The table gives two ratios (connector throughput / raw throughput): of the medians, and of the best
times, which background load on a shared host disturbs least.  Writes ``results.json``, ``results.md``,
``throughput.png`` and ``summary.json`` (ratios for ``benchmarks/summarize.py``) into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

MIB = 1 << 20
SIZES = {"1 MiB": 1 * MIB, "16 MiB": 16 * MIB, "256 MiB": 256 * MIB}
#: size -> (repetitions, quick repetitions); two warm-up iterations come first
REPS = {1 * MIB: (100, 20), 16 * MIB: (30, 8), 256 * MIB: (8, 3)}
WARMUP = 2
WORKER = Path(__file__).with_name("bench_worker.py")
#: The store connector's get without metadata, by key alone (what a stage does by default).
KEY_ONLY = "get (key only)"
#: The TE receiver's side-channel round trip to its sender alone (a query), timed next to each get.
ROUND_TRIP = "round trip"
#: (backend, connector op, raw op it is compared with)
PAIRS = [
    ("store", "put", "put_from"),
    ("store", "get", "get_into"),
    ("store", KEY_ONLY, "get_into"),
    ("te", "get", "write"),
    ("te", "get", "read"),
]
#: (backend, connector op, raw op, size) -> target
TARGETS = {
    ("store", "put", "put_from", 1 * MIB): ">= 0.9",
    ("store", KEY_ONLY, "get_into", 1 * MIB): ">= 0.9",
    **{("te", "get", raw, size): ">= 0.9" for size in SIZES.values() for raw in ("write", "read")},
}
CONNECTORS = {"store": "MooncakeStoreConnector", "te": "MooncakeTransferEngineConnector"}


class Worker:
    """A bench_worker.py process."""

    def __init__(self, kind: str, **options: Any) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), kind, json.dumps(options)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        hello = self._read()
        self.info: dict[str, Any] = hello["info"]

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"worker {self.proc.args[2]} exited with {self.proc.wait()}")
        return json.loads(line)

    def call(self, op: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        answer = self._read()
        if not answer.get("ok", True):
            raise RuntimeError(f"{self.proc.args[2]} {op} {args.get('key', '')} failed: {answer}")
        return answer

    def close(self) -> None:
        try:
            self.call("close")
            self.proc.wait(60)
        except (OSError, RuntimeError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_master() -> tuple[subprocess.Popen[bytes], str]:
    binary = Path(sys.executable).with_name("mooncake_master")
    command = str(binary) if binary.exists() else shutil.which("mooncake_master")
    if command is None:
        raise SystemExit("mooncake_master not found: pip install 'omni-mooncake[cpu]'")
    rpc, metrics = free_port(), free_port()
    proc = subprocess.Popen(
        [command, "--rpc_address=127.0.0.1", f"--rpc_port={rpc}", "--metrics_host=127.0.0.1",
         f"--metrics_port={metrics}", "--enable_metric_reporting=false", "--minloglevel=1"]
    )  # fmt: skip
    for _ in range(300):
        if proc.poll() is not None:
            raise SystemExit(f"mooncake_master exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{metrics}/health", timeout=1):
                return proc, f"127.0.0.1:{rpc}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("mooncake_master did not become healthy")


def run_store(master: str, reps: dict[int, int]) -> dict[tuple[str, str, int], list[float]]:
    """Raw and connector writer/reader pairs, alternating iterations; the holder keeps every object."""
    biggest = max(SIZES.values())
    raw_writer = Worker("raw-store", master=master, max_bytes=biggest)
    raw_reader = Worker("raw-store", master=master, max_bytes=biggest)
    writer = Worker("connector-store", master=master, localbuf=64 * MIB)
    reader = Worker("connector-store", master=master, localbuf=biggest + 64 * MIB)
    pairs = {"raw": (raw_writer, raw_reader, ("put_from", "get_into")), "connector": (writer, reader, ("put", "get"))}
    samples: dict[tuple[str, str, int], list[float]] = {}
    try:
        for nbytes, count in reps.items():
            for i in range(WARMUP + count):
                for impl in _alternating(i):
                    writer, reader, ops = pairs[impl]
                    key = f"{impl}-{nbytes}-{i}"
                    put = writer.call("put", key=key, nbytes=nbytes)
                    extra = {"verify": True} if impl == "connector" and i == 0 else {}
                    timings = {ops[0]: put["seconds"]}
                    # the connector also gets by key alone, the default path (reads do not consume); which of
                    # its two gets reads first alternates, as the first read after a put can cost more
                    gets = {ops[1]: put["metadata"], **({KEY_ONLY: None} if impl == "connector" else {})}
                    for op in list(gets)[:: 1 if i % 2 else -1]:
                        got = reader.call("get", key=key, nbytes=nbytes, metadata=gets[op], **extra)
                        timings[op] = got["seconds"]
                    writer.call("remove", key=key)
                    if i >= WARMUP:
                        for op, seconds in timings.items():
                            samples.setdefault((impl, op, nbytes), []).append(seconds)
    finally:
        for writer, reader, _ in pairs.values():
            writer.close()
            reader.close()
    return samples


def run_te(reps: dict[int, int]) -> dict[tuple[str, str, int], list[float]]:
    """Raw and connector sender/receiver pairs, alternating iterations."""
    biggest = max(SIZES.values())
    pool = biggest + 16 * MIB
    pairs = {
        "raw": (Worker("raw-te", max_bytes=biggest), Worker("raw-te", max_bytes=biggest)),
        "connector": (
            Worker("connector-te", role="sender", pool=pool),
            Worker("connector-te", role="receiver", pool=pool),
        ),
    }
    samples: dict[tuple[str, str, int], list[float]] = {}
    try:
        for nbytes, count in reps.items():
            for i in range(WARMUP + count):
                for impl in _alternating(i):
                    sender, receiver = pairs[impl]
                    if impl == "raw":
                        timings = {
                            "write": sender.call("write", peer=receiver.info, nbytes=nbytes)["seconds"],
                            "read": receiver.call("read", peer=sender.info, nbytes=nbytes)["seconds"],
                        }
                    else:
                        key = f"te-{nbytes}-{i}"
                        put = sender.call("put", key=key, nbytes=nbytes)
                        got = receiver.call("get", key=key, nbytes=nbytes, metadata=put["metadata"], verify=i == 0)
                        ping = receiver.call("ping", peer=sender.info)  # the side channel's round trip alone
                        timings = {"put": put["seconds"], "get": got["seconds"], ROUND_TRIP: ping["seconds"]}
                    if i >= WARMUP:
                        for op, seconds in timings.items():
                            samples.setdefault((impl, op, nbytes), []).append(seconds)
    finally:
        for sender, receiver in pairs.values():
            sender.close()
            receiver.close()
    return samples


def _alternating(iteration: int) -> tuple[str, str]:
    """Which implementation goes first: alternating, so background load hits both alike."""
    return ("raw", "connector") if iteration % 2 == 0 else ("connector", "raw")


def summarize(backend: str, samples: dict[tuple[str, str, int], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for (impl, op, nbytes), values in samples.items():
        median = statistics.median(values)
        rows.append({
            "backend": backend, "impl": impl, "op": op, "bytes": nbytes, "n": len(values),
            "min_ms": min(values) * 1e3, "median_ms": median * 1e3, "median_gbps": nbytes / median / 1e9,
            "min_gbps": nbytes / max(values) / 1e9,
        })  # fmt: skip
    return rows


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["backend"], r["impl"], r["op"], r["bytes"]): r for r in rows}
    out = []
    for backend, op, raw_op in PAIRS:
        for label, nbytes in SIZES.items():
            mine, raw = by.get((backend, "connector", op, nbytes)), by.get((backend, "raw", raw_op, nbytes))
            if mine and raw:
                out.append({
                    "backend": backend, "size": label, "bytes": nbytes, "connector_op": op, "raw_op": raw_op,
                    "connector_gbps": mine["median_gbps"], "raw_gbps": raw["median_gbps"],
                    "ratio": mine["median_gbps"] / raw["median_gbps"], "ratio_min": raw["min_ms"] / mine["min_ms"],
                    "target": TARGETS.get((backend, op, raw_op, nbytes), ""),
                })  # fmt: skip
    return out


def summary_rows(compared: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The ratios for ``benchmarks/summarize.py``."""
    rows = []
    for c in compared:
        rows.append({
            "connector": CONNECTORS[c["backend"]], "path": c["connector_op"], "payload": f"{c['size']} uint8 tensor",
            "bytes": c["bytes"], "reference": f"raw {c['raw_op']}", "measure": "throughput / raw throughput",
            "min": c["ratio_min"], "median": c["ratio"], "target": c["target"],
        })  # fmt: skip
    return rows


def floors(rows: list[dict[str, Any]]) -> list[str]:
    """What a TE get cannot beat: a read plus the claim's round trip on the side channel.  With a core to
    spare the two overlap (the get takes the longer of them); when the transfer's threads take every core
    (2 cores: the sender's and the receiver's engine), the claim is answered after it (their sum)."""
    by = {(r["impl"], r["op"], r["bytes"]): r for r in rows if r["backend"] == "te"}
    lines = []
    for label, nbytes in SIZES.items():
        read, trip = by.get(("raw", "read", nbytes)), by.get(("connector", ROUND_TRIP, nbytes))
        if read and trip:
            for stat in ("min_ms", "median_ms"):
                overlapped = read[stat] / max(read[stat], trip[stat])
                serial = read[stat] / (read[stat] + trip[stat])
                lines.append(f"- TE {label} ({stat[:-3]}): raw read {read[stat]:.2f} ms, side-channel round trip "
                             f"{trip[stat]:.2f} ms: get <= {overlapped:.2f}x raw read overlapped, "
                             f"{serial:.2f}x in turn")  # fmt: skip
    return lines


def markdown(rows: list[dict[str, Any]], compared: list[dict[str, Any]]) -> str:
    lines = ["| backend | size | connector op | raw op | connector GB/s (median) | raw GB/s (median) | ratio "
             "(medians) | ratio (best times) |", "| --- " * 8 + "|"]  # fmt: skip
    for c in compared:
        cells = [c["backend"], c["size"], f"`{c['connector_op']}`", f"`{c['raw_op']}`", f"{c['connector_gbps']:.2f}",
                 f"{c['raw_gbps']:.2f}", f"{c['ratio']:.2f}", f"{c['ratio_min']:.2f}"]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "| backend | impl | op | size | n | min ms | median ms | median GB/s |", "| --- " * 8 + "|"]
    for r in sorted(rows, key=lambda r: (r["backend"], r["op"], r["bytes"], r["impl"])):
        lines.append(f"| {r['backend']} | {r['impl']} | `{r['op']}` | {r['bytes'] // MIB} MiB | {r['n']} | "
                     f"{r['min_ms']:.2f} | {r['median_ms']:.2f} | {r['median_gbps']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(compared: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = [(b, op, raw) for b, op, raw in PAIRS if any(c["backend"] == b for c in compared)]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.5 * len(groups), 4), sharey=False)
    for ax, (backend, op, raw_op) in zip(axes, groups, strict=True):
        picked = [c for c in compared if (c["backend"], c["connector_op"], c["raw_op"]) == (backend, op, raw_op)]
        xs = range(len(picked))
        ax.bar([x - 0.2 for x in xs], [c["raw_gbps"] for c in picked], 0.4, label=f"raw {picked[0]['raw_op']}")
        ax.bar([x + 0.2 for x in xs], [c["connector_gbps"] for c in picked], 0.4, label=f"connector {op}")
        for x, c in zip(xs, picked, strict=True):
            ax.annotate(f"{c['ratio']:.2f}x", (x + 0.2, c["connector_gbps"]), ha="center", va="bottom", fontsize=8)
        ax.set_xticks(list(xs), [c["size"] for c in picked])
        ax.set_title(f"{'Store' if backend == 'store' else 'TransferEngine'}: {op}")
        ax.set_ylabel("GB/s (median)")
        ax.legend(fontsize=8)
    fig.suptitle("omni-mooncake connectors vs raw Mooncake APIs (loopback TCP, same run)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--backends", nargs="+", choices=CONNECTORS, default=list(CONNECTORS), help="default: both")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    reps = {nbytes: counts[1 if args.quick else 0] for nbytes, counts in REPS.items()}
    master, address = start_master()
    rows: list[dict[str, Any]] = []
    try:
        if "store" in args.backends:
            holder = Worker("store-holder", master=address, segment=768 * MIB)
            try:
                rows += summarize("store", run_store(address, reps))
            finally:
                holder.close()
        if "te" in args.backends:
            rows += summarize("te", run_te(reps))
    finally:
        master.send_signal(signal.SIGTERM)
        master.wait(30)
    compared = ratios(rows)
    result = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "host": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
        "rows": rows,
        "compared": compared,
    }
    (args.out / "results.json").write_text(json.dumps(result, indent=2))
    summary = {"command": result["command"], "load_average": os.getloadavg(), "rows": summary_rows(compared)}
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = markdown(rows, compared)
    floor_lines = floors(rows)
    if floor_lines:
        table += "\nFloors (from this run):\n\n" + "\n".join(floor_lines) + "\n"
    (args.out / "results.md").write_text(table)
    plot(compared, args.out / "throughput.png")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
