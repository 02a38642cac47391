"""Every example runs against real services that ``omni services up`` starts (and ``down`` stops)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from omni_pipeline.testing import edge_rows, omni_run

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _omni(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "omni_core.cli.main", *args], capture_output=True, text=True, timeout=180, env=env
    )


def _alive(pid: int) -> bool:
    return Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()


@pytest.mark.parametrize(
    ("service", "example", "requests"),
    [
        ("yuanrong", "thinker_talker_vocoder_yuanrong.yaml", 16),
        ("mooncake", "thinker_talker_vocoder_mooncake.yaml", 16),
    ],
)
def test_example_against_a_service_started_by_omni_services(tmp_path, monkeypatch, service, example, requests):
    env = {**os.environ, "OMNI_STATE_DIR": str(tmp_path / "state")}
    up = _omni("services", "up", service, env=env)
    assert up.returncode == 0, up.stderr
    info = json.loads((tmp_path / "state" / f"{service}.json").read_text())
    try:
        for name, value in info.get("env", {}).items():
            monkeypatch.setenv(name, value)
        done = omni_run(str(EXAMPLES / example))
        assert done.returncode == 0, done.stderr
        assert all(row[0] == str(requests) for row in edge_rows(done.stdout).values()), done.stdout
    finally:
        down = _omni("services", "down", service, env=env)
    assert down.returncode == 0 and f"{service} stopped" in down.stdout
    assert not _alive(int(info["pid"])), f"{service} (pid {info['pid']}) survived omni services down"
    assert not Path(info["workdir"]).exists()
    assert not list((tmp_path / "state").glob("*.json"))


def test_mooncake_transfer_engine_example_forwards_through_the_orchestrator() -> None:
    done = omni_run(str(EXAMPLES / "thinker_talker_vocoder_mooncake_te.yaml"))
    assert done.returncode == 0, done.stderr
    assert all(row[0] == "16" for row in edge_rows(done.stdout).values()), done.stdout
    assert "the orchestrator put every stage's output on its edges" in done.stdout


def test_example_with_unset_service_variable_names_it(monkeypatch) -> None:
    monkeypatch.delenv("OMNI_YR_PORT", raising=False)
    done = omni_run(str(EXAMPLES / "thinker_talker_vocoder_yuanrong.yaml"))
    assert done.returncode == 1 and "OMNI_YR_PORT" in done.stderr


def test_unknown_service_lists_available(tmp_path) -> None:
    done = _omni("services", "up", "nope", env={**os.environ, "OMNI_STATE_DIR": str(tmp_path)})
    assert done.returncode == 2 and "unknown service 'nope'; valid services: mooncake, yuanrong" in done.stderr


def test_backend_that_is_down_names_the_stage_and_leaves_nothing(monkeypatch) -> None:
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv("OMNI_YR_PORT", str(port))
    done = omni_run(str(EXAMPLES / "thinker_talker_vocoder_yuanrong.yaml"))
    assert done.returncode == 1
    assert "failed to start" in done.stderr and f"127.0.0.1:{port}" in done.stderr, done.stderr
