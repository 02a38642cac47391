"""The coordinator as a child process: OmniCoordinatorRuntime and ``omni coordinator serve``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pytest
import zmq.auth
from coord_helpers import addrs, eventually

from omni_coordinator import CurveClientKeys, OmniCoordinatorRuntime
from omni_coordinator.cli import main, parse_announcement


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_runtime_serves_stage_and_hub_clients(make_stage, make_hub) -> None:
    runtime = OmniCoordinatorRuntime(host="127.0.0.1", heartbeat_timeout=1.0)
    try:
        for address in (runtime.router_address, runtime.pub_address):
            assert address.startswith("tcp://127.0.0.1:") and int(address.rsplit(":", 1)[1]) > 0
        hub = make_hub(runtime.pub_address)
        stage = make_stage(runtime.router_address, 7000)
        eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 10.0, "served via the child")
        eventually(lambda: stage.heartbeat_interval <= 1.0 / 3, 5.0, "timeout passed to the child")
    finally:
        runtime.close()
    assert not alive(runtime.pid)
    runtime.close()  # idempotent


@pytest.mark.parametrize(("kwargs", "match"), [({"host": ""}, "host"), ({"heartbeat_timeout": 0}, "heartbeat_timeout")])
def test_runtime_validates_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        OmniCoordinatorRuntime(**{"host": "127.0.0.1", "heartbeat_timeout": 1.0, **kwargs})


def test_runtime_reports_a_child_that_dies_during_startup(tmp_path) -> None:
    with pytest.raises(RuntimeError, match="died during startup"):
        OmniCoordinatorRuntime(host="127.0.0.1", heartbeat_timeout=1.0, curve_secret_key=str(tmp_path / "missing"))


def test_runtime_child_exits_when_its_parent_is_killed() -> None:
    parent_code = textwrap.dedent(
        """
        import time
        from omni_coordinator import OmniCoordinatorRuntime
        runtime = OmniCoordinatorRuntime(host="127.0.0.1", heartbeat_timeout=1.0)
        print(runtime.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    child_pid = int(parent.stdout.readline())
    assert alive(child_pid)
    parent.kill()
    parent.wait(timeout=10)
    eventually(lambda: not alive(child_pid), 10.0, "orphaned coordinator exited (its stdin lifeline closed)")


def serve(*args: str, stdin: int | None = None) -> tuple[subprocess.Popen, dict[str, str]]:
    """``omni coordinator serve ARGS`` through core's CLI dispatch; returns the process and its addresses."""
    proc = subprocess.Popen([sys.executable, "-m", "omni_core.cli.main", "coordinator", "serve", *args],
                            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    endpoints = dict(filter(None, (parse_announcement(proc.stdout.readline()) for _ in range(2))))
    assert set(endpoints) == {"router", "pub"}, proc.stderr.read() if proc.stderr else ""
    return proc, endpoints


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_addresses_and_stops_cleanly_on_signal(signum, make_stage, make_hub) -> None:
    proc, endpoints = serve("--heartbeat-timeout", "1")
    try:
        hub = make_hub(endpoints["pub"])
        make_stage(endpoints["router"], 7000)
        eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 10.0, "served by the CLI")
        proc.send_signal(signum)
        assert proc.wait(timeout=15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("host", ["*", "0.0.0.0", "auto"])
def test_serve_on_a_wildcard_or_auto_prints_this_hosts_address(host: str, make_hub) -> None:
    """Not ``tcp://0.0.0.0``: peers on other hosts are handed what is printed (``host: auto``'s rules)."""
    from omni_core import resolve_host

    proc, endpoints = serve("--host", host)
    try:
        for address in endpoints.values():
            assert address.startswith(f"tcp://{resolve_host(host)}:"), address
        hub = make_hub(endpoints["pub"])
        eventually(lambda: hub.stats()["applied"] > 0, 10.0, "a hub served at the printed address")
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_serve_stops_when_its_stdin_lifeline_closes() -> None:
    proc, _ = serve("--stdin-lifeline", stdin=subprocess.PIPE)
    assert proc.stdin is not None
    proc.stdin.close()
    assert proc.wait(timeout=15) == 0


def test_serve_with_curve_refuses_unkeyed_and_serves_keyed_clients(tmp_path, make_stage, make_hub) -> None:
    assert main(["keygen", str(tmp_path / "server")]) == 0
    assert main(["keygen", str(tmp_path / "clients"), "--name", "stage"]) == 0
    proc, endpoints = serve("--curve-secret-key", str(tmp_path / "server" / "coordinator.key_secret"),
                            "--curve-authorized-keys", str(tmp_path / "clients"), "--keepalive-interval", "0.2")
    try:
        keys = CurveClientKeys.from_files(tmp_path / "server" / "coordinator.key",
                                          tmp_path / "clients" / "stage.key_secret")
        plain_hub = make_hub(endpoints["pub"])
        hub = make_hub(endpoints["pub"], curve=keys)
        make_stage(endpoints["router"], 7000, curve=keys)
        make_stage(endpoints["router"], 7100)
        eventually(lambda: addrs(hub.get_replica_list()) == {"tcp://127.0.0.1:7000"}, 10.0, "keyed replica only")
        eventually(lambda: hub.stats()["applied"] >= 3, 10.0, "more publications")
        assert plain_hub.stats()["applied"] == 0
        assert zmq.auth.load_certificate(tmp_path / "clients" / "stage.key")[0] == keys.public_key
    finally:
        proc.terminate()
        assert proc.wait(timeout=15) == 0


def test_serve_usage_and_bind_errors(capsys) -> None:
    assert main(["serve", "--curve-authorized-keys", "/tmp"]) == 2
    assert "needs --curve-secret-key" in capsys.readouterr().err
    assert main(["serve", "--host", "256.0.0.1"]) == 1
    assert "omni coordinator serve:" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["fly"])
    assert exc.value.code == 2


def test_announcement_parsing() -> None:
    assert parse_announcement("router: tcp://127.0.0.1:5\n") == ("router", "tcp://127.0.0.1:5")
    assert parse_announcement("pub: tcp://h:6") == ("pub", "tcp://h:6")
    assert parse_announcement("WARNING: something") is None
