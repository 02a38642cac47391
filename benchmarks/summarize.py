"""One summary of every benchmark that ran: ``summary.md`` and a PNG of each connector's ratios.

    python benchmarks/summarize.py bench-results shm mooncake ...

Reads ``<results>/<target>/summary.json`` of each named target (as ``nox -s bench`` runs them).  A
benchmark writes that file with one row per measured comparison::

    {"command": "...", "rows": [{"connector": "SharedMemoryConnector", "path": "copy (default)",
      "payload": "64 MiB float16 tensor", "bytes": 67108928, "reference": "memcpy",
      "measure": "reference time / connector time", "min": 0.45, "median": 0.48, "target": ">= 0.6"}]}

(``size_unit`` may name what ``bytes`` counts when it is not payload bytes, e.g. ``"replicas"``.)

``min`` and ``median`` are the ratio of the best times and the ratio of the medians, measured in one
run; ``target`` is optional (``">= x"`` or ``"<= x"``, compared with both).  Writes
``<results>/summary.md`` and ``<results>/<connector>.png`` (the ratio to each reference by payload size).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any

_TARGET = re.compile(r"\s*(>=|<=)\s*([0-9.]+)\s*")


def met(row: dict[str, Any]) -> str:
    """``yes`` / ``no`` / ``min only`` against the row's target (empty without one)."""
    target = row.get("target")
    if not target:
        return ""
    match = _TARGET.fullmatch(target)
    if match is None:
        raise ValueError(f"bad target {target!r} in row {row!r}")
    op, bound = match[1], float(match[2])
    ok = [(value >= bound) if op == ">=" else (value <= bound) for value in (row["min"], row["median"])]
    return "yes" if all(ok) else ("min only" if ok[0] else ("median only" if ok[1] else "**no**"))


def load(results: Path, targets: list[str]) -> dict[str, dict[str, Any]]:
    found = {}
    for name in targets:
        path = results / name / "summary.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
        else:
            print(f"summarize: {path} is missing (the {name} benchmark failed or wrote no summary)", file=sys.stderr)
    return found


def markdown(summaries: dict[str, dict[str, Any]]) -> str:
    lines = [
        "# Benchmark summary",
        "",
        "Ratios measured in one run per target: *min* is the ratio of the best times, *median* the ratio of the",
        "median times (see each row's measure).  Full tables, raw timings and profiles are in `<target>/`.",
        "",
        "| connector | path | payload | reference | measure | min | median | target | met |",
        "| --- | --- | --- | --- | --- | ---: | ---: | --- | --- |",
    ]
    for summary in summaries.values():
        for r in summary["rows"]:
            lines.append(
                f"| {r['connector']} | {r['path']} | {r['payload']} | {r['reference']} | {r['measure']} | "
                f"{r['min']:.2f} | {r['median']:.2f} | {r.get('target') or ''} | {met(r)} |"
            )
    lines += ["", "## Runs", ""]
    for name, summary in summaries.items():
        load_average = summary.get("load_average")
        noise = f"; load average {', '.join(f'{x:.1f}' for x in load_average)} at its end" if load_average else ""
        lines.append(f"- `{name}`: `{summary.get('command', '?')}`{noise}")
    lines.append(f"- host: {os.cpu_count()} CPUs")
    return "\n".join(lines) + "\n"


def plot(connector: str, rows: list[dict[str, Any]], path: Path) -> None:
    """One panel per reference: ratio (median line, min markers) against payload bytes, targets in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    references = list(dict.fromkeys(r["reference"] for r in rows))
    fig, axes = plt.subplots(1, len(references), figsize=(6.5 * len(references), 4.5), squeeze=False)
    for ax, reference in zip(axes[0], references, strict=True):
        picked = [r for r in rows if r["reference"] == reference]
        for index, name in enumerate(dict.fromkeys(r["path"] for r in picked)):
            points = sorted((r["bytes"], r["median"], r["min"]) for r in picked if r["path"] == name)
            xs = [p[0] for p in points]
            color = f"C{index}"
            ax.plot(xs, [p[1] for p in points], marker="o", color=color, label=f"{name} (median)")
            ax.scatter(xs, [p[2] for p in points], marker="x", color=color, label=f"{name} (min)")
        for r in picked:
            match = _TARGET.fullmatch(r.get("target") or "")
            if match:
                ax.scatter([r["bytes"]], [float(match[2])], marker="_", s=400, color="red", zorder=3)
        ax.set_xscale("log", base=2)
        ax.set_xlabel(picked[0].get("size_unit", "payload bytes"))
        ax.set_ylabel(picked[0]["measure"])
        ax.set_title(f"vs {reference} (red: target)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(connector)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="directory holding <target>/summary.json")
    parser.add_argument("targets", nargs="+")
    args = parser.parse_args()
    summaries = load(args.results, args.targets)
    (args.results / "summary.md").write_text(markdown(summaries))
    rows = [row for summary in summaries.values() for row in summary["rows"]]
    for connector in dict.fromkeys(r["connector"] for r in rows):
        plot(connector, [r for r in rows if r["connector"] == connector], args.results / f"{connector}.png")
    print((args.results / "summary.md").read_text())
    return 0 if len(summaries) == len(args.targets) else 1


if __name__ == "__main__":
    raise SystemExit(main())
