"""``omni run`` and its stage replicas log on stderr at ``OMNI_LOG_LEVEL``, each replica's lines prefixed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from omni_pipeline.testing import omni_run

DEFAULT = Path(__file__).resolve().parents[3] / "examples" / "thinker_talker_vocoder.yaml"


def _small_default(tmp_path: Path) -> str:
    """The default example with 4 requests (the logs are what is checked)."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT.read_text().replace("requests: 24", "requests: 4"))
    return str(config)


def _env(**extra: str) -> dict[str, str]:
    return {**{k: v for k, v in os.environ.items() if k != "OMNI_LOG_LEVEL"}, **extra}


def test_replica_lines_are_prefixed_with_stage_and_replica_and_leave_the_results_alone(tmp_path) -> None:
    done = omni_run(_small_default(tmp_path), "--json", env=_env(OMNI_LOG_LEVEL="DEBUG"))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["ok"] is True  # stdout (and each replica's JSON lines) carry no log line
    ready = sorted(line for line in done.stderr.splitlines() if "ready:" in line)
    assert ready == ["[stage 0 replica 0] INFO omni.pipeline: ready: receives on no edge; sends on 0 -> 1",
                     "[stage 1 replica 0] INFO omni.pipeline: ready: receives on 0 -> 1; sends on 1 -> 2",
                     "[stage 2 replica 0] INFO omni.pipeline: ready: receives on 1 -> 2; sends on no edge"]
    received = re.findall(r"^\[stage 2 replica 0\] DEBUG omni\.pipeline: (req-\d+) on edge 1 -> 2: received \d+ bytes",
                          done.stderr, re.M)
    assert sorted(received) == [f"req-{i:06d}" for i in range(4)]


def test_a_run_at_the_default_level_logs_nothing(tmp_path) -> None:
    done = omni_run(_small_default(tmp_path), env=_env())
    assert done.returncode == 0, done.stderr
    assert "omni." not in done.stderr and "[stage" not in done.stderr


def test_a_bad_level_stops_omni_run_before_any_replica_starts(tmp_path) -> None:
    done = omni_run(_small_default(tmp_path), env=_env(OMNI_LOG_LEVEL="verbose"))
    assert done.returncode == 2
    assert done.stderr.strip() == ("omni: OMNI_LOG_LEVEL='verbose' is not a log level; "
                                   "use one of DEBUG, INFO, WARNING, ERROR")
