"""Benchmark: each cross-host connector between two test hosts, against a raw TCP stream between the same
two hosts in the same run (the floor of that path), then on a link limited to 1 Gbit/s.

    python benchmarks/multihost/bench_multihost.py --out DIR [--quick]      # root: makes network namespaces

Two test hosts (network namespaces on a bridge, ``omni_core.testing.hosts``); every connector is configured
``host: auto`` and runs in a child process on its host: the writer on host 1, the reader on host 2.  A
sample is the reader's ``get`` (the payload crossing from host 1 to host 2), timed in the reader; the raw
reference is one TCP stream of the same bytes from host 1 to host 2, timed from the first byte sent to the
receiver's acknowledgement.  Targets and raw samples alternate (their order rotates), so background load
hits them alike.  Then host 2's link is limited to 1 Gbit/s (``tc`` token bucket, both directions) and
each is measured again: the fraction of the limit it achieves.  Payload: a uint8 tensor of 1, 16 and 256
MiB.  Writes ``results.json``, ``results.md``, ``throughput.png`` and ``summary.json`` (for
``benchmarks/summarize.py``) into DIR.

A connector joins with one entry in :func:`targets`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omni_core import ConnectorSpec
from omni_core.cli.table import render_table
from omni_core.remote import JsonLinesChild
from omni_core.testing.hosts import NamespaceHosts, TestHost

MIB = 1 << 20
SIZES = [1 * MIB, 16 * MIB, 256 * MIB]
#: Repetitions per size (unlimited link, 1 Gbit/s link); ``--quick`` halves them.  One warm-up comes first.
REPS = {1 * MIB: (30, 10), 16 * MIB: (12, 4), 256 * MIB: (5, 2)}
LIMIT = "1gbit"
LIMIT_BYTES_PER_S = 1e9 / 8
RAW = "raw TCP"
RAW_SCRIPT = Path(__file__).with_name("raw_tcp.py")


@dataclass(frozen=True)
class Target:
    """A connector between the hosts: ``writer`` (extra) puts on host 1, ``reader`` gets on host 2."""

    name: str
    connector: str
    writer: dict[str, Any]
    reader: dict[str, Any]


def targets(master: str) -> list[Target]:
    """The connectors measured; ``master`` is the Mooncake master's address (on host 1)."""
    store = {"metadata_server": "P2PHANDSHAKE", "master": master, "localbuf": 288 * MIB}
    te = {"protocol": "tcp", "memory_pool_size": 288 * MIB}
    return [
        # the only segment is the writer's: a put stays on host 1, the get reads it across
        Target("Mooncake Store", "MooncakeStoreConnector", {**store, "segment": 640 * MIB}, {**store, "segment": 0}),
        # the receiver's pull: the sender writes into the receiver's pool across the link
        Target("Mooncake TE", "MooncakeTransferEngineConnector", {**te, "role": "sender"}, {**te, "role": "receiver"}),
    ]


class Pair:
    """A writer and a reader child connector of one target."""

    def __init__(self, target: Target, writer_host: TestHost, reader_host: TestHost) -> None:
        self.target = target
        self.writer = writer_host.child_connector(ConnectorSpec(target.connector, target.writer), timeout=300)
        self.reader = reader_host.child_connector(ConnectorSpec(target.connector, target.reader), timeout=300)

    def sample(self, size: int) -> float:
        key = f"b{size}-{uuid.uuid4().hex[:12]}"
        put = self.writer.call({"op": "put", "from": "0", "to": "1", "key": key, "kind": f"bytes:{size}"})
        if not put["ok"]:
            raise RuntimeError(f"{self.target.name}: put of {size} bytes failed")
        got = self.reader.call({"op": "get", "from": "0", "to": "1", "key": key, "metadata": put["metadata"],
                                "timeout": 120})  # fmt: skip
        if not got["found"] or got["size"] != size:
            raise RuntimeError(f"{self.target.name}: get of {size} bytes failed: {got}")
        self.writer.call({"op": "cleanup", "key": key})
        return float(got["get_s"])

    def close(self) -> None:
        self.writer.close()
        self.reader.close()


class RawStream:
    """One TCP connection from host 1 to host 2, through the raw_tcp.py children."""

    def __init__(self, sender_host: TestHost, receiver_host: TestHost) -> None:
        env = {"PYTHONUNBUFFERED": "1"}
        self.receiver = JsonLinesChild(
            [*receiver_host.exec_prefix, sys.executable, str(RAW_SCRIPT), "recv", receiver_host.address], env=env
        )
        port = str(self.receiver.hello["port"])
        self.sender = JsonLinesChild(
            [*sender_host.exec_prefix, sys.executable, str(RAW_SCRIPT), "send", receiver_host.address, port], env=env
        )

    def sample(self, size: int) -> float:
        answer = self.sender.call({"op": "send", "size": size}, timeout=300)
        if not answer["ok"]:
            raise RuntimeError("raw TCP: the receiver did not acknowledge")
        return float(answer["seconds"])

    def close(self) -> None:
        self.sender.close()
        self.receiver.close()


def measure(actors: dict[str, Any], phase: str, quick: bool) -> dict[tuple[str, int], list[float]]:
    """Seconds per sample, by (actor, size), the actors' order rotating every repetition."""
    samples: dict[tuple[str, int], list[float]] = {}
    names = list(actors)
    for size in SIZES:
        reps = REPS[size][0 if phase == "unlimited" else 1]
        reps = max(2, reps // 2) if quick else reps
        for name in names:
            actors[name].sample(size)  # warm-up: connections, page faults
        for rep in range(reps):
            for name in names[rep % len(names):] + names[: rep % len(names)]:
                samples.setdefault((name, size), []).append(actors[name].sample(size))
        print(f"  {phase}: {size // MIB} MiB done", file=sys.stderr, flush=True)
    return samples


def rows_of(phase: str, samples: dict[tuple[str, int], list[float]]) -> list[dict[str, Any]]:
    rows = []
    for (name, size), times in samples.items():
        raw = samples[(RAW, size)]
        row: dict[str, Any] = {
            "link": phase, "target": name, "size": size, "samples": len(times),
            "min_s": min(times), "median_s": statistics.median(times),
            "gbps_median": size / statistics.median(times) / 1e9,
            "ratio_median": statistics.median(raw) / statistics.median(times),
            "ratio_best": min(raw) / min(times),
        }  # fmt: skip
        if phase != "unlimited":
            row["fraction_of_limit_median"] = size / statistics.median(times) / LIMIT_BYTES_PER_S
            row["fraction_of_limit_best"] = size / min(times) / LIMIT_BYTES_PER_S
        rows.append(row)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    headers = ["link", "target", "size", "min ms", "median ms", "GB/s (median)", "÷ raw TCP (median)",
               "÷ raw TCP (best)", "of 1 Gbit/s (median)", "of 1 Gbit/s (best)"]  # fmt: skip
    body = [
        [r["link"], r["target"], f"{r['size'] // MIB} MiB", f"{r['min_s'] * 1e3:.1f}", f"{r['median_s'] * 1e3:.1f}",
         f"{r['gbps_median']:.2f}", f"{r['ratio_median']:.2f}", f"{r['ratio_best']:.2f}",
         f"{r['fraction_of_limit_median']:.2f}" if "fraction_of_limit_median" in r else "-",
         f"{r['fraction_of_limit_best']:.2f}" if "fraction_of_limit_best" in r else "-"]
        for r in rows
    ]  # fmt: skip
    return render_table(headers, body)


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    links = sorted({r["link"] for r in rows}, reverse=True)
    fig, axes = plt.subplots(1, len(links), figsize=(6 * len(links), 4), squeeze=False)
    for axis, link in zip(axes[0], links, strict=True):
        for name in dict.fromkeys(r["target"] for r in rows):
            mine = sorted((r["size"], r["gbps_median"]) for r in rows if r["link"] == link and r["target"] == name)
            axis.plot([f"{s // MIB} MiB" for s, _ in mine], [g for _, g in mine], marker="o", label=name)
        if link != "unlimited":
            axis.axhline(LIMIT_BYTES_PER_S / 1e9, linestyle="--", color="grey", label="1 Gbit/s")
        axis.set_title(f"host 1 -> host 2, link {link}")
        axis.set_ylabel("GB/s (median)")
        axis.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``benchmarks/summarize.py``: each connector's get across hosts against raw TCP."""
    return [
        {"connector": row["target"], "path": f"get across hosts ({row['link']})",
         "payload": f"{row['size'] // MIB} MiB", "bytes": row["size"], "reference": "raw TCP stream",
         "measure": "raw time / connector time", "min": row["ratio_best"], "median": row["ratio_median"]}
        for row in rows if row["target"] != RAW
    ]  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--quick", action="store_true", help="half the repetitions")
    args = parser.parse_args(argv)
    os.environ.setdefault("MC_LOG_LEVEL", "ERROR")
    from omni_mooncake.master import MooncakeMaster

    started = time.monotonic()
    with NamespaceHosts(2) as net:
        h1, h2 = net.hosts
        master = MooncakeMaster(lease_ms=10_000, host=h1.address, launcher=h1.exec_prefix).start()
        actors: dict[str, Any] = {RAW: RawStream(h1, h2)}
        try:
            for target in targets(master.address):
                actors[target.name] = Pair(target, h1, h2)
            rows = rows_of("unlimited", measure(actors, "unlimited", args.quick))
            h2.limit_bandwidth(LIMIT)
            rows += rows_of(LIMIT, measure(actors, LIMIT, args.quick))
        finally:
            for actor in actors.values():
                actor.close()
            master.stop()
    results = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
        "machine": f"{os.cpu_count()} CPUs, Linux {platform.release()}, Python {platform.python_version()}",
        "wall_s": round(time.monotonic() - started, 1),
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "summary.json").write_text(json.dumps({"command": results["command"], "rows": summary_rows(rows)}))
    text = table(rows)
    (args.out / "results.md").write_text(
        f"{results['machine']}; {results['wall_s']} s.  Reader's get (host 1 -> host 2) against a raw TCP stream "
        f"between the same hosts; ratios are throughput ÷ raw TCP's (medians, and best times).\n\n{text}\n"
    )
    plot(rows, args.out / "throughput.png")
    print(text)
    print(f"wrote {args.out}/results.json, results.md, throughput.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
