"""``omni bench``: put/get bandwidth of connectors between two processes, with memcpy as the ceiling.

Each connector runs in a producer and a consumer child process
(:class:`omni_core.ChildConnector`); the parent relays the put metadata
as an orchestrator would.  A sample is one payload's ``put`` time plus its
``get`` time; the reference is a numpy copy of the same bytes in this process.
"""

from __future__ import annotations

import json
import re
import statistics
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from omni_core import (
    ChildConnector,
    ConfigError,
    ConnectorSpec,
    OmniConnectorFactory,
    ProgressReporter,
    render_table,
)

DEFAULT_SIZES = "4KiB,1MiB,16MiB,64MiB"
_UNITS = {"": 1, "B": 1, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_size(text: str) -> int:
    """``"64MiB"`` -> 67108864 (B, KiB, MiB, GiB)."""
    match = re.fullmatch(r"\s*(\d+)\s*([KMG]iB|B)?\s*", text, re.I)
    if not match or int(match.group(1)) <= 0:
        raise ConfigError(f"bad size {text!r}: use e.g. 4KiB, 1MiB, 64MiB")
    return int(match.group(1)) * _UNITS[(match.group(2) or "").upper()]


def _label(nbytes: int) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if nbytes >= scale and nbytes % scale == 0:
            return f"{nbytes // scale} {unit}"
    return f"{nbytes} B"


def role_specs(name: str, extra: Mapping[str, Any]) -> tuple[ConnectorSpec, ConnectorSpec]:
    """Producer and consumer specs: endpoint connectors get sender/receiver roles wired to each other."""
    if not OmniConnectorFactory.capabilities(name).needs_endpoint:
        return ConnectorSpec(name, dict(extra)), ConnectorSpec(name, dict(extra))
    if "zmq_port" not in extra:
        raise ConfigError(f"{name} needs an explicit zmq_port in the bench config to wire sender and receiver")
    host = extra.get("host") if extra.get("host") not in (None, "auto") else "127.0.0.1"
    receiver = {k: v for k, v in extra.items() if k != "zmq_port"}
    return (ConnectorSpec(name, {**extra, "role": "sender"}),
            ConnectorSpec(name, {**receiver, "role": "receiver", "sender_host": host,
                                 "sender_zmq_port": extra["zmq_port"]}))


def memcpy_samples(nbytes: int, repeat: int) -> list[float]:
    """Seconds per numpy copy of ``nbytes`` into a pre-faulted buffer."""
    import numpy as np

    src, dst = np.ones(nbytes, dtype=np.uint8), np.zeros(nbytes, dtype=np.uint8)
    samples = []
    for _ in range(repeat + 1):
        started = time.perf_counter()
        np.copyto(dst, src)
        samples.append(time.perf_counter() - started)
    return samples[1:]


def connector_samples(name: str, extra: Mapping[str, Any], nbytes: int, repeat: int,
                      tick: Callable[[], None]) -> list[float]:
    """Seconds of put + get per payload between two child processes (one warm-up not counted)."""
    producer_spec, consumer_spec = role_specs(name, extra)
    samples = []
    with ChildConnector(producer_spec) as producer, ChildConnector(consumer_spec) as consumer:
        for i in range(repeat + 1):
            key = f"bench-{uuid.uuid4().hex[:12]}"
            put = producer.call({"op": "put", "from": "0", "to": "1", "key": key, "kind": f"bytes:{nbytes}"})
            if not put.get("ok"):
                raise RuntimeError(f"{name}: put of {_label(nbytes)} failed: {put}")
            got = consumer.call({"op": "get", "from": "0", "to": "1", "key": key, "metadata": put["metadata"],
                                 "timeout": 60})
            if not got.get("found"):
                raise RuntimeError(f"{name}: get of {_label(nbytes)} found nothing")
            if i:
                samples.append(put["put_s"] + got["get_s"])
            tick()
    return samples


def _row(name: str, nbytes: int, samples: list[float], ceiling: float) -> dict[str, Any]:
    median = statistics.median(samples)
    return {"connector": name, "bytes": nbytes, "min_ms": min(samples) * 1e3, "median_ms": median * 1e3,
            "median_gbps": nbytes / median / 1e9, "vs_memcpy": ceiling / median if median else 0.0}


def plot(results: list[dict[str, Any]], path: Path) -> bool:
    """Bandwidth vs payload size per connector, memcpy as the ceiling; False if matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["connector"] for r in results):
        rows = [r for r in results if r["connector"] == name]
        style: dict[str, Any] = {"linestyle": "--", "color": "gray"} if name == "memcpy" else {"marker": "o"}
        ax.plot([r["bytes"] for r in rows], [r["median_gbps"] for r in rows], label=name, **style)
    ax.set(xscale="log", xlabel="payload size (bytes)", ylabel="GB/s (median, put + get)",
           title="omni bench: connector bandwidth between two processes")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def run_bench(connectors: list[str], extras: Mapping[str, Mapping[str, Any]], sizes: list[int], repeat: int,
              out: Path, progress: bool = True) -> int:
    """Run the benchmark, write results.json / results.md / bandwidth.png into ``out``; print the table."""
    for name in connectors:
        OmniConnectorFactory.registration(name)  # unknown names fail before anything starts
    total, done = len(connectors) * len(sizes) * (repeat + 1), 0
    results = []
    with ProgressReporter(total, "transfers", enabled=progress, label="omni bench") as shown:

        def tick() -> None:
            nonlocal done
            done += 1
            shown.update(done)

        for nbytes in sizes:
            ceiling = statistics.median(memcpy_samples(nbytes, repeat))
            results.append(_row("memcpy", nbytes, [ceiling], ceiling))
            for name in connectors:
                samples = connector_samples(name, extras.get(name, {}), nbytes, repeat, tick)
                results.append(_row(name, nbytes, samples, ceiling))
    results.sort(key=lambda r: (r["connector"] != "memcpy", r["connector"], r["bytes"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"repeat": repeat, "results": results}, indent=2))
    table = render_table(
        ["connector", "size", "min ms", "median ms", "median GB/s", "x memcpy"],
        [[r["connector"], _label(r["bytes"]), f"{r['min_ms']:.3f}", f"{r['median_ms']:.3f}",
          f"{r['median_gbps']:.2f}", f"{r['vs_memcpy']:.2f}"] for r in results],
    )
    (out / "results.md").write_text(table + "\n")
    print(table)
    if plot(results, out / "bandwidth.png"):
        print(f"\nwrote {out / 'results.json'}, {out / 'results.md'} and {out / 'bandwidth.png'}")
    else:
        print(f"\nwrote {out / 'results.json'} and {out / 'results.md'}; pip install matplotlib for the PNG plot")
    return 0
