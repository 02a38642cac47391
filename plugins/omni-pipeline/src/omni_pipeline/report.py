"""What ``omni run`` reports: per-edge figures and the progress bar (``omni bench`` draws it too)."""

from __future__ import annotations

import statistics
import sys
from array import array
from dataclasses import dataclass, field

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

    def row(self, edge: Edge) -> list[str]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else 0.0
        rates = [size / t for size, t in zip(self.sizes, self.latencies, strict=True) if t > 0]
        return [
            f"{edge[0]} -> {edge[1]}",
            str(len(self.sizes)),
            _human(sum(self.sizes)),
            f"{statistics.median(lat) * 1e3:.2f}" if lat else "-",
            f"{p99 * 1e3:.2f}",
            f"{statistics.median(rates) / 1e9:.2f}" if rates else "-",
        ]


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def progress_bar(done: int, total: int, unit: str) -> None:
    """Draw ``[####......] done/total unit`` over the previous one on stderr."""
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}")
    sys.stderr.flush()


