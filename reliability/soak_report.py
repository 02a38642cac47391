"""The soak's figures: growth of each sampled quantity after warm-up, a PNG of the samples, the RELIABILITY.md
section (kept in ``reliability/soak-results/``, which the campaign's report carries over)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .soak import Sample, SoakResult

RESULTS = Path(__file__).with_name("soak-results")
SECTION = RESULTS / "soak.md"
PNG = RESULTS / "samples.png"
HEADING = "## Soak"
#: Samples taken before this share of the requests was done are warm-up.
WARM_UP = 0.1
_MiB = 1 << 20
#: (label, field, unit divisor, unit, allowed growth after warm-up: a share of the value then, and an absolute)
SERIES = (
    ("RSS, orchestrator", "orchestrator_rss", _MiB, "MiB", 0.05, 4 * _MiB),
    ("RSS, stage replicas (sum)", "stages_rss", _MiB, "MiB", 0.05, 4 * _MiB),
    ("open fds, orchestrator", "orchestrator_fds", 1, "", 0.0, 2),
    ("open fds, stage replicas (sum)", "stages_fds", 1, "", 0.0, 2),
    ("/dev/shm entries of the run", "shm_entries", 1, "", 0.0, 2),
    ("/dev/shm bytes of the run", "shm_bytes", _MiB, "MiB", 0.05, 4 * _MiB),
)


@dataclass(frozen=True)
class Growth:
    """One quantity after warm-up: its value then and at the end, the peaks of the first and the second half of
    the samples after warm-up (what fluctuates, such as payloads in flight, cancels out; what accumulates shows),
    and the least-squares slope."""

    label: str
    start: float
    end: float
    first_peak: float
    second_peak: float
    per_10k: float  # fitted change per 10,000 requests
    flat: bool


def growth(samples: list[Sample], total: int) -> tuple[list[Growth], Sample | None]:
    """Each series' growth over the samples after warm-up (empty with fewer than two), and the first of those.

    Flat: the second half's peak exceeds the first half's by at most the series' allowance.
    """
    after = [s for s in _running(samples, total) if s.requests >= WARM_UP * total]
    if len(after) < 2:
        return [], None
    half = len(after) // 2
    out = []
    for label, name, _, _, share, absolute in SERIES:
        values = [float(getattr(s, name)) for s in after]
        slope = _slope([float(s.requests) for s in after], values)
        first, second = max(values[:half]), max(values[half:])
        flat = second - first <= max(share * first, absolute)
        out.append(Growth(label, values[0], values[-1], first, second, slope * 10_000, flat))
    return out, after[0]


def _running(samples: list[Sample], total: int) -> list[Sample]:
    """The samples taken while every stage replica ran and requests were left (not the start or the shutdown)."""
    most = max((s.stages for s in samples), default=0)
    return [s for s in samples if s.stages == most and most and s.requests < total]


def _slope(xs: list[float], ys: list[float]) -> float:
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def plot(result: SoakResult, path: Path) -> None:
    """Three panels against requests done: RSS, open descriptors, /dev/shm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    samples = _running(result.samples, result.settings.requests)
    x = [s.requests for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(8, 9), sharex=True)
    panels = (
        ("resident memory (MiB)", (("orchestrator", "orchestrator_rss"), ("stage replicas (sum)", "stages_rss")), _MiB),
        ("open file descriptors", (("orchestrator", "orchestrator_fds"), ("stage replicas (sum)", "stages_fds")), 1),
        ("/dev/shm of the run", (("entries", "shm_entries"), ("MiB", "shm_bytes")), 1),
    )
    for ax, (title, lines, scale) in zip(axes, panels, strict=True):
        for label, name in lines:
            divisor = _MiB if name == "shm_bytes" else scale
            ax.plot(x, [getattr(s, name) / divisor for s in samples], marker=".", label=label)
        ax.axvline(WARM_UP * result.settings.requests, color="grey", linestyle=":", label="end of warm-up")
        ax.set_title(title)
        ax.set_ylim(bottom=0)
        ax.legend(loc="lower right", fontsize=8)
        ax.grid(alpha=0.3)
    axes[-1].set_xlabel(f"requests done (a sample every {result.settings.interval_s:g} s)")
    fig.suptitle(f"soak: {result.settings.requests:,} requests through the default pipeline")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def section(result: SoakResult, command: str, png: str) -> str:
    """The RELIABILITY.md section (markdown, starting with :data:`HEADING`)."""
    settings = result.settings
    rows, first = growth(result.samples, settings.requests)
    done = result.samples[-1].requests if result.samples else 0
    rate = settings.requests / result.seconds if result.seconds and result.exit_code == 0 else 0.0
    lines = [
        f"{HEADING}: {settings.requests:,} requests through the default pipeline",
        "",
        "Produced by (the numbers below are from this run):",
        "",
        "```bash",
        command,
        "```",
        "",
        f"`omni run examples/thinker_talker_vocoder.yaml` (thinker → talker → vocoder over shared memory, each stage "
        f"its own process) with its workload replaced: {settings.requests:,} requests, each stage emitting a "
        f"{settings.tensor_bytes >> 10} KiB hidden-state tensor and a {settings.kv_cache_bytes >> 10} KiB KV-cache "
        f"tensor through its KV pipe, {settings.in_flight} requests in flight. The orchestrator (the `omni run` "
        f"process) and every stage replica are sampled every {settings.interval_s:g} s (psutil: resident memory, "
        "open descriptors), and so are the run's `/dev/shm` entries.",
        "",
        f"Run: exit code {result.exit_code}, {result.seconds / 60:.1f} min"
        + (f" ({rate:.0f} requests/s)" if rate else f", {done:,} requests done")
        + f", {len(result.samples)} samples. {result.summary.strip()}",
        "",
        f"Left after it exited: {result.left_processes} stage processes, {result.left_shm_entries} `/dev/shm` "
        "entries.",
        "",
    ]
    if first is None:
        return "\n".join([*lines, "Too few samples after warm-up to measure growth.", ""])
    lines += [
        f"Growth after warm-up (the first {WARM_UP:.0%} of the requests; from request {first.requests:,}, "
        f"{first.t:.0f} s in, to the end). The samples after warm-up are split in two halves; flat: the second "
        "half's peak is at most 5 % (and 4 MiB) above the first half's for memory, at most 2 above it for counts "
        "(payloads in flight come and go; what accumulates shows).",
        "",
        "| quantity | after warm-up | at the end | peak, 1st half | peak, 2nd half | fitted change per 10,000 requests "
        "| flat |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for row, (_, _, divisor, unit, _, _) in zip(rows, SERIES, strict=True):
        def fmt(value: float, divisor: float = divisor, unit: str = unit) -> str:
            return f"{value / divisor:.1f} {unit}" if unit else f"{value:.0f}"

        slope = f"{row.per_10k / divisor:+.2f} {unit}" if unit else f"{row.per_10k:+.2f}"
        lines.append(f"| {row.label} | {fmt(row.start)} | {fmt(row.end)} | {fmt(row.first_peak)} | "
                     f"{fmt(row.second_peak)} | {slope} | {'yes' if row.flat else '**no**'} |")
    lines += ["", f"![soak samples]({png})", ""]
    return "\n".join(lines)


def splice(document: Path, text: str) -> None:
    """Put ``text`` (a section starting with :data:`HEADING`) into ``document`` in place of its soak section,
    or at its end; the next ``## `` heading ends the old section."""
    old = document.read_text() if document.exists() else ""
    start = old.find(f"\n{HEADING}")
    if start < 0:
        document.write_text(old.rstrip("\n") + "\n\n" + text.rstrip("\n") + "\n")
        return
    end = old.find("\n## ", start + 1)
    tail = old[end:] if end >= 0 else "\n"
    document.write_text(old[: start + 1] + text.rstrip("\n") + "\n" + tail)
