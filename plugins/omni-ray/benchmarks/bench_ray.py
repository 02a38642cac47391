"""RayConnector against raw ``ray.put`` / ``ray.get`` between actors on two nodes, in one run.

    python bench_ray.py --out DIR [--sizes 1,16,64] [--reps 12]

A Ray cluster of two test hosts (network namespaces; needs root): a producer actor on node A, a consumer
actor on node B.  Each transfer is timed by the driver from the producer's call to the consumer's answer:

- raw: the producer ``ray.put``s a numpy array and returns the reference; the consumer ``ray.get``s it;
- RayConnector: the producer ``put``s the same array and returns the metadata; the consumer ``get``s it.

Two rows per size: the consumer keeps a read-only view (raw ``ray.get``; ``zero_copy: true``) or gets an
array of its own (raw ``ray.get`` + copy; the default).  Raw and connector transfers alternate rep by rep,
so machine noise hits both alike.  ``ratio`` = raw time / connector time (1.0 = no overhead; target >= 0.9),
of the minimum and of the median.  Writes results.json, results.md and results.png into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import ray

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_ray import remove_payload_owners
from omni_ray.testing import RayTestCluster, host_resource

MIB = 1 << 20
EDGE = ("0", "1")
NAMESPACE = "omni-bench"


@dataclass
class Row:
    """One size and consumer kind: connector and raw times (ms), and their ratios raw / connector."""

    size: str
    consumer_keeps: str
    connector_ms: list[float]
    raw_ms: list[float]
    #: where the time goes, measured inside the actors: ``{"put", "get"}`` -> (connector ms, raw ms) samples
    inside_ms: dict[str, tuple[list[float], list[float]]]

    def stats(self) -> dict[str, float]:
        ours = {"min": min(self.connector_ms), "median": statistics.median(self.connector_ms)}
        raw = {"min": min(self.raw_ms), "median": statistics.median(self.raw_ms)}
        inside = {
            f"{side}_{op}_median_ms": statistics.median(samples)
            for op, pair in self.inside_ms.items()
            for side, samples in zip(("connector", "raw"), pair, strict=True)
        }
        return {
            **{f"connector_{k}_ms": v for k, v in ours.items()},
            **{f"raw_{k}_ms": v for k, v in raw.items()},
            **{f"ratio_{k}": raw[k] / ours[k] for k in ours},
            **inside,
        }


@ray.remote(num_cpus=0)
class Producer:
    def __init__(self) -> None:
        self.connector = OmniConnectorFactory.create_connector(ConnectorSpec("RayConnector", {"namespace": NAMESPACE}))
        self.arrays: dict[int, np.ndarray] = {}

    def _array(self, nbytes: int) -> np.ndarray:
        return self.arrays.setdefault(nbytes, np.random.default_rng(nbytes).integers(0, 255, nbytes, dtype=np.uint8))

    def put_raw(self, nbytes: int) -> tuple[list[Any], float]:
        array = self._array(nbytes)
        started = time.perf_counter()
        ref = ray.put(array)
        return [ref], time.perf_counter() - started  # in a list: the consumer gets the reference, not the object

    def put(self, key: str, nbytes: int) -> tuple[dict[str, Any], float]:
        array = self._array(nbytes)
        started = time.perf_counter()
        ok, _, metadata = self.connector.put(*EDGE, key, array)
        assert ok and metadata is not None
        return metadata, time.perf_counter() - started

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()


@ray.remote(num_cpus=0)
class Consumer:
    def __init__(self) -> None:
        extra = {"namespace": NAMESPACE}
        self.copying = OmniConnectorFactory.create_connector(ConnectorSpec("RayConnector", extra))
        self.viewing = OmniConnectorFactory.create_connector(
            ConnectorSpec("RayConnector", {**extra, "zero_copy": True})
        )

    def get_raw(self, refs: list[Any], copy: bool) -> tuple[int, float]:
        started = time.perf_counter()
        array = ray.get(refs[0])
        kept = array.copy() if copy else array
        return int(kept.nbytes), time.perf_counter() - started

    def get(self, key: str, metadata: dict[str, Any], copy: bool) -> tuple[int, float]:
        started = time.perf_counter()
        result = (self.copying if copy else self.viewing).get(*EDGE, key, metadata)
        elapsed = time.perf_counter() - started
        assert result is not None, key
        return int(result[0].nbytes), elapsed

    def node_ip(self) -> str:
        return ray.util.get_node_ip_address()


def transfer_raw(producer: Any, consumer: Any, nbytes: int, copy: bool) -> tuple[float, float, float]:
    """(end to end, put inside the producer, get inside the consumer) seconds."""
    started = time.perf_counter()
    refs, put_s = ray.get(producer.put_raw.remote(nbytes))
    got, get_s = ray.get(consumer.get_raw.remote(refs, copy))
    elapsed = time.perf_counter() - started
    assert got == nbytes
    del refs
    return elapsed, put_s, get_s


def transfer(producer: Any, consumer: Any, key: str, nbytes: int, copy: bool) -> tuple[float, float, float]:
    started = time.perf_counter()
    metadata, put_s = ray.get(producer.put.remote(key, nbytes))
    got, get_s = ray.get(consumer.get.remote(key, metadata, copy))
    elapsed = time.perf_counter() - started
    assert got == nbytes
    return elapsed, put_s, get_s


def measure(producer: Any, consumer: Any, size_mib: int, reps: int) -> list[Row]:
    nbytes = size_mib * MIB
    rows = []
    for copy in (False, True):
        raw: list[tuple[float, ...]] = []
        ours: list[tuple[float, ...]] = []
        for rep in range(reps + 2):  # two warm-up rounds
            raw_s = transfer_raw(producer, consumer, nbytes, copy)
            ours_s = transfer(producer, consumer, f"b{size_mib}-{int(copy)}-{rep}", nbytes, copy)
            if rep >= 2:
                raw.append(tuple(t * 1e3 for t in raw_s))
                ours.append(tuple(t * 1e3 for t in ours_s))
        keeps = "its own copy" if copy else "a read-only view"
        column = lambda samples, i: [s[i] for s in samples]  # noqa: E731
        inside = {op: (column(ours, i), column(raw, i)) for i, op in ((1, "put"), (2, "get"))}
        rows.append(Row(f"{size_mib} MiB", keeps, column(ours, 0), column(raw, 0), inside))
        stats = rows[-1].stats()
        print(f"{size_mib:>3} MiB, consumer keeps {keeps}: ratio min {stats['ratio_min']:.2f} "
              f"median {stats['ratio_median']:.2f}", file=sys.stderr)  # fmt: skip
    return rows


def markdown(rows: list[Row], where: str) -> str:
    lines = [
        f"RayConnector vs raw `ray.put`/`ray.get`, producer actor on {where[0]}, consumer actor on {where[1]}; "
        "ratio = raw / connector time (target >= 0.9).",
        "",
        "| size | consumer keeps | connector min / median ms | raw min / median ms | ratio min / median |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        s = r.stats()
        lines.append(
            f"| {r.size} | {r.consumer_keeps} | {s['connector_min_ms']:.2f} / {s['connector_median_ms']:.2f} | "
            f"{s['raw_min_ms']:.2f} / {s['raw_median_ms']:.2f} | {s['ratio_min']:.2f} / {s['ratio_median']:.2f} |"
        )
    lines += [
        "",
        "Where the time goes, medians measured inside the actors (connector vs raw):",
        "",
        "| size | consumer keeps | `put` vs `ray.put` ms | `get` vs `ray.get` ms |",
        "|---|---|---|---|",
    ]
    for r in rows:
        s = r.stats()
        lines.append(
            f"| {r.size} | {r.consumer_keeps} | {s['connector_put_median_ms']:.2f} vs {s['raw_put_median_ms']:.2f} | "
            f"{s['connector_get_median_ms']:.2f} vs {s['raw_get_median_ms']:.2f} |"
        )
    return "\n".join(lines) + "\n"


def plot(rows: list[Row], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r.size}\n{r.consumer_keeps}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(x - 0.2, [r.stats()["ratio_min"] for r in rows], 0.4, label="ratio of minimums")
    ax.bar(x + 0.2, [r.stats()["ratio_median"] for r in rows], 0.4, label="ratio of medians")
    ax.axhline(0.9, color="red", linestyle="--", label="target 0.9")
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("raw time / RayConnector time")
    ax.set_title("RayConnector vs raw ray.put / ray.get, two nodes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json, results.md, results.png")
    parser.add_argument("--sizes", default="1,16,64", help="payload sizes in MiB, comma-separated")
    parser.add_argument("--reps", type=int, default=12, help="timed transfers per row and side")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with RayTestCluster(2, object_store_bytes=400 * 10**6) as cluster:
        cluster.connect_driver()
        cluster.wait_nodes(2)
        producer = Producer.options(resources={host_resource(1): 0.01}).remote()
        consumer = Consumer.options(resources={host_resource(2): 0.01}).remote()
        where = ray.get([producer.node_ip.remote(), consumer.node_ip.remote()])
        assert where[0] != where[1], where
        rows = [row for size in args.sizes.split(",") for row in measure(producer, consumer, int(size), args.reps)]
        remove_payload_owners(NAMESPACE)
    table = markdown(rows, where)
    print(table)
    (args.out / "results.md").write_text(table)
    plot(rows, args.out / "results.png")
    environment = {
        "python": platform.python_version(), "ray": version("ray"), "machine": platform.machine(),
        "cpus": os.cpu_count(), "reps": args.reps,
    }  # fmt: skip
    results = [{**asdict(r), **r.stats()} for r in rows]
    (args.out / "results.json").write_text(json.dumps({"environment": environment, "rows": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
