"""``omni run`` across hosts: each stage on its own test host, placed by the config's ``hosts`` and ``placement``.

The hosts are network namespaces in 198.18.0.0/15 that the test makes (and removes); the orchestrator runs on
host 1, each stage on the host its placement names, started there through the host's ``exec`` prefix with
``OMNI_HOST_IP`` set to its address, and the payloads cross the hosts' network over Mooncake's TransferEngine
(TCP, P2P handshake: no servers).  Needs root (CI runs as root); skipped without it, failed under CI=true.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from omni_pipeline.testing import edge_rows, marked_env, replica_rows, run_processes

from omni_core.testing.hosts import NamespaceHosts

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "thinker_talker_vocoder_mooncake_te.yaml"


@pytest.fixture
def hosts():
    with NamespaceHosts.for_test(3) as net:
        yield net


def _placed_on_hosts(net: NamespaceHosts, tmp_path: Path) -> Path:
    """The example with ``host: auto`` (each process advertises its own host's address) and a stage per host."""
    text = EXAMPLE.read_text().replace("host: 127.0.0.1", "host: auto")
    assert "host: auto" in text
    text += "\nhosts:\n" + "".join(
        f"  h{h.index}: {{address: {h.address}, exec: {json.dumps(h.exec_prefix)}}}\n" for h in net.hosts
    ) + "placement:\n  stages: {0: {host: h1}, 1: {host: h2}, 2: {host: h3}}\n"
    config = tmp_path / "te_on_three_hosts.yaml"
    config.write_text(text)
    return config


def _stage_namespaces(run: subprocess.Popen[str], marker: str) -> dict[str, int]:
    """While ``run`` lasts: the network namespace (inode) each stage's replica runs in, by stage id."""
    seen: dict[str, int] = {}
    while run.poll() is None and len(seen) < 3:
        for pid in run_processes(marker):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"omni_pipeline.stage" in argv:
                    seen[argv[argv.index(b"omni_pipeline.stage") + 2].decode()] = os.stat(f"/proc/{pid}/ns/net").st_ino
            except (OSError, IndexError):
                continue
        time.sleep(0.05)
    return seen


def test_each_stage_runs_on_its_own_host_and_the_table_names_it(hosts, tmp_path) -> None:
    config = _placed_on_hosts(hosts, tmp_path)
    env, marker = marked_env()
    orchestrator = [*hosts.host(1).exec_prefix, sys.executable, "-m", "omni_core.cli.main", "run", "--no-progress"]
    run = subprocess.Popen([*orchestrator, str(config)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env=env)
    try:
        namespaces = _stage_namespaces(run, marker)
        out, err = run.communicate(timeout=300)
    finally:
        if run.poll() is None:
            run.kill()
            run.communicate()
    assert run.returncode == 0, err[-3000:]
    assert namespaces == {str(h.index - 1): os.stat(f"/run/netns/{h.netns}").st_ino for h in hosts.hosts}
    assert replica_rows(out) == {f"stage {h.index - 1} replica 0": (f"h{h.index} ({h.address})", 16)
                                 for h in hosts.hosts}
    assert all(row[0] == "16" for row in edge_rows(out).values()) and len(edge_rows(out)) == 2
    assert "every payload arrived intact, exactly once" in out
    assert not run_processes(marker), "a stage replica outlived the run"
