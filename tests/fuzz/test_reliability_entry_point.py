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
