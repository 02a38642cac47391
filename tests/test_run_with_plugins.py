"""``omni run`` with several plugins: replicas behind the coordinator, a third-party connector, the README."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
from omni_pipeline.testing import edge_rows, omni_run, replica_rows

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def test_replica_killed_mid_run_loses_nothing() -> None:
    done = omni_run(str(EXAMPLES / "replicated_talker.yaml"), "--kill-replica", "1")
    assert done.returncode == 0, done.stderr
    assert all(row[0] == "30" for row in edge_rows(done.stdout).values())
    assert re.search(r"killed stage 1 replica 0 .*re-routed; the coordinator dropped it", done.stdout)
    # the events on stderr: the replica found gone, then the end of its re-routed work (the recovery time)
    assert re.search(r"omni run: stage 1 replica 0 \(.*\) is gone; \d+ unfinished request\(s\) re-routed\n"
                     r"(.*\n)*omni run: every request re-routed from stage 1 replica 0 \(.*\) finished [\d.]+ s after",
                     done.stderr), done.stderr
    rows = replica_rows(done.stdout)
    talkers = {label: handled for label, (_, handled) in rows.items() if label.startswith("stage 1")}
    assert len(talkers) == 3 and sum(talkers.values()) == 30


def test_orchestrator_forwarding_survives_a_replica_kill(tmp_path) -> None:
    """The orchestrator puts every output itself (initialize_orchestrator_connectors); stages only receive."""
    config = tmp_path / "forwarded.yaml"
    config.write_text((EXAMPLES / "replicated_talker.yaml").read_text() + "  forwarding: orchestrator\n")
    done = omni_run(str(config), "--kill-replica", "1")
    assert done.returncode == 0, done.stderr
    assert all(row[0] == "30" for row in edge_rows(done.stdout).values()), done.stdout
    assert "the orchestrator put every stage's output on its edges" in done.stdout
    assert re.search(r"killed stage 1 replica 0 .*re-routed", done.stdout)


def test_an_unknown_load_balancing_policy_is_named_before_anything_starts(tmp_path) -> None:
    config = tmp_path / "fastest.yaml"
    config.write_text((EXAMPLES / "replicated_talker.yaml").read_text().replace("least-queue-length", "fastest"))
    done = omni_run(str(config))
    assert done.returncode == 1
    assert "unknown load-balancing policy 'fastest'; valid policies: least-queue-length, random, round-robin" \
        in done.stderr, done.stderr


def test_stage_that_fails_to_start_is_named(tmp_path) -> None:
    config = tmp_path / "unreachable.yaml"
    config.write_text(
        "connectors: {d: {name: DropboxConnector, extra: {root: /proc/omni-cannot-create-this}}}\n"
        "stages:\n"
        "  - {stage_id: 0, output_connectors: {to_stage_1: d}}\n"
        "  - {stage_id: 1, input_connectors: {from_stage_0: d}}\n"
        "workload: {requests: 2, tensor_bytes: 0}\n"
    )
    done = omni_run(str(config))
    assert done.returncode == 1
    assert re.search(r"stage 0 replica 0 \(pid \d+\) failed to start: .*DropboxConnector", done.stderr), done.stderr


def test_readme_first_command_from_a_clean_checkout(tmp_path) -> None:
    """Clone the committed repository and run the README's first command exactly as written."""
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"```bash\n(.*?)```", readme, re.S)
    assert block is not None
    command = next(line for line in block.group(1).splitlines() if line.strip() and not line.startswith("#"))
    if not (ROOT / ".git").exists():
        pytest.fail("this test needs the git checkout to clone from")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(tmp_path / "clone")], check=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOX", "VIRTUAL_ENV"))}
    env["PATH"] = os.pathsep.join(p for p in env["PATH"].split(os.pathsep) if ".nox" not in p)
    done = subprocess.run(
        command, shell=True, cwd=tmp_path / "clone", capture_output=True, text=True, timeout=1200, env=env
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert re.search(r"^0 -> 1\s+24\s", done.stdout, re.M) and "exactly once" in done.stdout
