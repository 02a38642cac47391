"""What ``omni run`` reports: per-edge figures."""

from __future__ import annotations

import statistics
from array import array
from dataclasses import dataclass, field
from typing import Any

Edge = tuple[str, str]


@dataclass
class EdgeStats:
    """Per request on one edge: (bytes, put + get seconds) of its counted delivery.

    ``samples`` holds those of requests still in the graph (a replica's death may discard one); :meth:`settle`
    moves a finished request's into two flat arrays (16 bytes a request: a long run's figures stay small).
    """

    samples: dict[str, tuple[int, float]] = field(default_factory=dict)
    _sizes: array = field(default_factory=lambda: array("q"))
    _seconds: array = field(default_factory=lambda: array("d"))

    def settle(self, request_id: str) -> None:
        """Keep the sample of ``request_id`` for good (it finished)."""
        sample = self.samples.pop(request_id, None)
        if sample is not None:
            self._sizes.append(sample[0])
            self._seconds.append(sample[1])

    @property
    def sizes(self) -> list[int]:
        return [*self._sizes, *(size for size, _ in self.samples.values())]

    @property
    def latencies(self) -> list[float]:
        return [*self._seconds, *(seconds for _, seconds in self.samples.values())]

    def figures(self, edge: Edge) -> dict[str, Any]:
        """The edge's row of ``omni run --json``: counts, bytes, put + get p50/p99 in ms, median GB/s (or None)."""
        lat = sorted(self.latencies)
        rates = [size / t for size, t in zip(self.sizes, self.latencies, strict=True) if t > 0]
        return {
            "edge": f"{edge[0]} -> {edge[1]}",
            "from_stage": edge[0],
            "to_stage": edge[1],
            "requests": len(self.sizes),
            "bytes": sum(self.sizes),
            "p50_ms": statistics.median(lat) * 1e3 if lat else None,
            "p99_ms": lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] * 1e3 if lat else None,
            "gbps_median": statistics.median(rates) / 1e9 if rates else None,
        }

    def row(self, edge: Edge) -> list[str]:
        f = self.figures(edge)
        shown = [f"{f[key]:.2f}" if f[key] is not None else "-" for key in ("p50_ms", "p99_ms", "gbps_median")]
        return [f["edge"], str(f["requests"]), _human(f["bytes"]), *shown]


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"
