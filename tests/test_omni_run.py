"""``omni run``: the main job, end to end, in real processes over real connectors."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def _stage_processes() -> list[int]:
    """PIDs of live ``omni run`` stage workers or coordinators (scanned from /proc)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if b"omni_core.run.stage" in cmdline or b"omni_coordinator.cli" in cmdline:
            pids.append(int(entry.name))
    return pids


def omni_run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    before = set(_stage_processes())
    done = subprocess.run(
        [sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    survivors = sorted(set(_stage_processes()) - before)
    assert not survivors, f"stage or coordinator processes outlived omni run: {survivors}"
    return done


def _table(stdout: str) -> dict[str, list[str]]:
    rows = {}
    for line in stdout.splitlines():
        match = re.match(r"^(\d+ -> \d+)\s+(.*)$", line)
        if match:
            rows[match.group(1)] = match.group(2).split()
    return rows


def test_default_example_delivers_every_payload_exactly_once() -> None:
    done = omni_run(str(EXAMPLES / "thinker_talker_vocoder.yaml"))
    assert done.returncode == 0, done.stderr
    table = _table(done.stdout)
    assert set(table) == {"0 -> 1", "1 -> 2"}
    assert all(row[0] == "24" for row in table.values()), table
    assert "every payload arrived intact, exactly once" in done.stdout


def test_replica_killed_mid_run_loses_nothing() -> None:
    done = omni_run(str(EXAMPLES / "replicated_talker.yaml"), "--kill-replica", "1")
    assert done.returncode == 0, done.stderr
    assert all(row[0] == "30" for row in _table(done.stdout).values())
    assert re.search(r"killed stage 1 replica 0 .*re-routed; the coordinator dropped it", done.stdout)
    handled = dict(re.findall(r"^(stage 1 replica \d)\s+(\d+)$", done.stdout, re.M))
    assert len(handled) == 3 and sum(map(int, handled.values())) == 30


def test_orchestrator_forwarding_survives_a_replica_kill(tmp_path) -> None:
    """The orchestrator puts every output itself (initialize_orchestrator_connectors); stages only receive."""
    config = tmp_path / "forwarded.yaml"
    config.write_text((EXAMPLES / "replicated_talker.yaml").read_text() + "  forwarding: orchestrator\n")
    done = omni_run(str(config), "--kill-replica", "1")
    assert done.returncode == 0, done.stderr
    assert all(row[0] == "30" for row in _table(done.stdout).values()), done.stdout
    assert "the orchestrator put every stage's output on its edges" in done.stdout
    assert re.search(r"killed stage 1 replica 0 .*re-routed", done.stdout)


def test_unknown_forwarding_mode_is_named(tmp_path) -> None:
    config = tmp_path / "sideways.yaml"
    config.write_text((EXAMPLES / "thinker_talker_vocoder.yaml").read_text() + "  forwarding: sideways\n")
    done = omni_run(str(config))
    assert done.returncode == 1
    assert "workload.forwarding must be one of ('stages', 'orchestrator'), got 'sideways'" in done.stderr


def test_bad_config_names_the_edge_and_starts_nothing(tmp_path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text(
        "connectors: {shm: {name: SharedMemoryConnector, extra: {namespac: x}}}\n"
        "stages:\n"
        "  - {stage_id: 0, output_connectors: {to_stage_1: shm}}\n"
        "  - {stage_id: 1, input_connectors: {from_stage_0: shm}}\n"
    )
    done = omni_run(str(config))
    assert done.returncode == 1
    assert "namespac" in done.stderr and "valid keys" in done.stderr


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
    assert re.search(r"stage 0 replica 0 \(pid \d+\) failed to start: .*DropboxConnector", done.stderr)


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
