"""The reliability entry point on a tiny budget: seeds reproduce kill points, the chaos tally adds up, and
``python -m reliability`` writes RELIABILITY.md with the command that produced it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from reliability.chaos import ChaosRun, plan_kills
from reliability.scenarios import SCENARIOS
from reliability.stage import child_env


def test_the_same_seed_gives_the_same_kill_points() -> None:
    assert plan_kills(5, "shm-producer", 1000, 5) == plan_kills(5, "shm-producer", 1000, 5)
    assert plan_kills(5, "shm-producer", 1000, 5) != plan_kills(6, "shm-producer", 1000, 5)
    assert all(100 <= k.request < 900 for k in plan_kills(5, "shm-producer", 1000, 5))


def test_a_short_chaos_run_accounts_for_every_payload() -> None:
    scenario = next(s for s in SCENARIOS if s.slug == "shm-consumer")
    result = ChaosRun(scenario, seed=11, requests=60, kills=2, window=4).run()
    assert result.acked == 60 and len(result.kills) == 2 and len(result.recover_s) == 2
    assert result.delivered + result.lost + result.lost_in_doubt + result.corrupt == result.acked
    assert result.lost == result.duplicates == result.corrupt == 0
    assert result.leaks.total == 0, result.leaks.details


def test_the_entry_point_writes_the_report(tmp_path: Path) -> None:
    command = [sys.executable, "-m", "reliability", "--out", str(tmp_path), "--seed", "3", "--requests", "40",
               "--kills", "1", "--scenarios", "coordinator", "--fuzz", "coordinator", "--fuzz-inputs", "300",
               "--no-atheris", "--artifacts", str(tmp_path / "artifacts")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "RELIABILITY.md").read_text()
    assert "python -m reliability --out" in report and "--seed 3" in report
    assert "| coordinator (2 consumer replicas, shared memory) | coordinator | 1 | 40 | 40 |" in report
    assert "| coordinator | mutation | 300 |" in report
    assert (tmp_path / "artifacts" / "results.json").is_file()


def test_partitions_are_seeded_cuts_of_one_to_five_seconds_during_a_put_or_a_get() -> None:
    from reliability.netsplit import plan_partitions

    plan = plan_partitions(5, "netsplit-x", 1000, 5)
    assert plan == plan_partitions(5, "netsplit-x", 1000, 5) != plan_partitions(6, "netsplit-x", 1000, 5)
    assert all(k.phase in ("put", "get") and 1.0 <= k.duration_s <= 5.0 and 100 <= k.request < 900 for k in plan)


def test_the_soak_samples_a_run_and_writes_its_section_and_plot(tmp_path: Path) -> None:
    (tmp_path / "RELIABILITY.md").write_text("# Reliability\n\n## Soak: old\n\nstale\n\n## Later\n\nkept\n")
    command = [sys.executable, "-m", "reliability", "soak", "--requests", "2500", "--interval", "0.25",
               "--tensor-bytes", "4096", "--kv-cache-bytes", "1024", "--out", str(tmp_path),
               "--results", str(tmp_path / "results"), "--artifacts", str(tmp_path / "artifacts")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=child_env(), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (tmp_path / "RELIABILITY.md").read_text()
    assert "stale" not in report and report.count("## Soak") == 1 and report.endswith("## Later\n\nkept\n")
    assert "## Soak: 2,500 requests through the default pipeline" in report and "exit code 0" in report
    assert "| RSS, orchestrator |" in report and "Left after it exited: 0 stage processes, 0 `/dev/shm`" in report
    assert (tmp_path / "results" / "samples.png").stat().st_size > 0
    assert (tmp_path / "results" / "soak.md").read_text() in report


def test_ray_node_kills_are_seeded_one_per_run_on_a_worker_node() -> None:
    from reliability.raynode import plan_node_kills

    plan = plan_node_kills(5, "ray-node", 200, 5)
    assert plan == plan_node_kills(5, "ray-node", 200, 5) != plan_node_kills(6, "ray-node", 200, 5)
    assert len(plan) == 5 and all(20 <= k.request < 140 and k.phase in ("node 2", "node 3") for k in plan)
