"""``omni run`` with its stages as Ray actors against the same run with local processes, on one host.

    python bench_launcher.py --out DIR [--runs 3]

One test host (a network namespace; needs root) runs a one-node Ray cluster and ``omni run``; each config runs
with ``--launcher local`` and ``--launcher ray`` in turn, ``--runs`` times each, alternating (its ``launcher``
and ``placement`` sections removed: the same file for both, every stage on the one host).  The per-edge p50 of
put+get (the runs' own tables) is compared side by side, median over the runs; ``ratio`` = local / ray
(1.0 = stages as Ray actors move payloads as fast as local processes).  Two configs: the default example over
shared memory, and the RayConnector example.  Writes results.json and results.md into DIR.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from omni_pipeline.testing import edge_rows

from omni_ray.testing import RayTestCluster

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
CONFIGS = {
    "shared memory (thinker_talker_vocoder.yaml)": EXAMPLES / "thinker_talker_vocoder.yaml",
    "RayConnector (thinker_talker_vocoder_ray_connector.yaml)": EXAMPLES / "thinker_talker_vocoder_ray_connector.yaml",
}
LAUNCHERS = ("local", "ray")


def omni_run(cluster: RayTestCluster, config: Path, launcher: str) -> tuple[dict[str, float], float]:
    """One run on the cluster's host: ``({edge: p50 ms}, wall seconds)``."""
    command = [*cluster.head.exec_prefix, sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress",
               "--launcher", launcher, str(config)]  # fmt: skip
    started = time.monotonic()
    done = subprocess.run(command, capture_output=True, text=True, timeout=600, env=cluster.env())
    wall = time.monotonic() - started
    if done.returncode != 0:
        raise RuntimeError(f"omni run --launcher {launcher} {config.name} failed:\n{done.stderr[-3000:]}")
    return {edge: float(row[3]) for edge, row in edge_rows(done.stdout).items()}, wall


def placed_anywhere(example: Path, directory: Path) -> Path:
    """``example`` without its ``launcher`` and ``placement`` sections, written into ``directory``."""
    doc = yaml.safe_load(example.read_text())
    doc.pop("launcher", None)
    doc.pop("placement", None)
    path = directory / example.name
    path.write_text(yaml.safe_dump(doc))
    return path


def measure(cluster: RayTestCluster, runs: int, directory: Path) -> list[dict[str, Any]]:
    rows = []
    for label, example in CONFIGS.items():
        config = placed_anywhere(example, directory)
        p50: dict[str, dict[str, list[float]]] = {launcher: {} for launcher in LAUNCHERS}
        walls: dict[str, list[float]] = {launcher: [] for launcher in LAUNCHERS}
        for _ in range(runs):
            for launcher in LAUNCHERS:
                edges, wall = omni_run(cluster, config, launcher)
                walls[launcher].append(wall)
                for edge, ms in edges.items():
                    p50[launcher].setdefault(edge, []).append(ms)
        for edge in sorted(p50["local"]):
            local, ray_ = (statistics.median(p50[launcher][edge]) for launcher in LAUNCHERS)
            rows.append({
                "config": label, "edge": edge, "local_p50_ms": local, "ray_p50_ms": ray_, "ratio": local / ray_,
                "local_wall_s": statistics.median(walls["local"]), "ray_wall_s": statistics.median(walls["ray"]),
                "samples": p50["local"][edge] + p50["ray"][edge],
            })  # fmt: skip
            print(f"{label} {edge}: local {local:.2f} ms, ray {ray_:.2f} ms", file=sys.stderr)
    return rows


def markdown(rows: list[dict[str, Any]], runs: int) -> str:
    lines = [
        f"`omni run` on one host, stages as local processes vs as Ray actors (one-node cluster); per-edge put+get "
        f"p50, median of {runs} runs each; ratio = local / ray.",
        "",
        "| config | edge | local p50 ms | ray p50 ms | ratio | wall s local / ray |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r['edge']} | {r['local_p50_ms']:.2f} | {r['ray_p50_ms']:.2f} | {r['ratio']:.2f} | "
            f"{r['local_wall_s']:.1f} / {r['ray_wall_s']:.1f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory for results.json and results.md")
    parser.add_argument("--runs", type=int, default=3, help="runs per config and launcher")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with RayTestCluster(1, num_cpus=2, object_store_bytes=600 * 10**6) as cluster, tempfile.TemporaryDirectory() as tmp:
        rows = measure(cluster, args.runs, Path(tmp))
    table = markdown(rows, args.runs)
    print(table)
    (args.out / "results.md").write_text(table)
    environment = {"python": platform.python_version(), "cpus": os.cpu_count(), "runs": args.runs}
    (args.out / "results.json").write_text(json.dumps({"environment": environment, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
