"""``omni run``: the main job, end to end, in real processes over real shared memory."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from omni_pipeline.testing import edge_rows, marked_env, omni_run, replica_rows, run_processes

from omni_core.testing import scrape_metrics

ROOT = Path(__file__).resolve().parents[3]
EXAMPLES = ROOT / "examples"
DEFAULT = EXAMPLES / "thinker_talker_vocoder.yaml"


def test_default_example_delivers_every_payload_exactly_once_and_says_where_each_stage_ran() -> None:
    done = omni_run(str(DEFAULT))
    assert done.returncode == 0, done.stderr
    table = edge_rows(done.stdout)
    assert set(table) == {"0 -> 1", "1 -> 2"}
    assert all(row[0] == "24" for row in table.values()), table
    assert replica_rows(done.stdout) == {f"stage {s} replica 0": (socket.gethostname(), 24) for s in range(3)}
    assert "host (local launcher)" in done.stdout
    assert "every payload arrived intact, exactly once" in done.stdout


def test_json_is_one_document_with_every_edge_and_replica(tmp_path) -> None:
    done = _run_default_with(tmp_path, "", "--json")
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert set(doc) == {"ok", "config", "launcher", "requests", "stages", "wall_s", "forwarding", "edges", "replicas",
                        "killed", "rerouted"}
    assert (doc["ok"], doc["launcher"], doc["requests"], doc["stages"], doc["forwarding"]) == (
        True, "local", 24, 3, "stages")
    assert doc["config"] == str(tmp_path / "pipeline.yaml") and doc["wall_s"] > 0
    assert [(e["edge"], e["from_stage"], e["to_stage"], e["requests"]) for e in doc["edges"]] == [
        ("0 -> 1", "0", "1", 24), ("1 -> 2", "1", "2", 24)]
    for edge in doc["edges"]:
        assert edge["bytes"] > 24 * (4 << 20) and 0 < edge["p50_ms"] <= edge["p99_ms"] and edge["gbps_median"] > 0
    assert doc["replicas"] == [{"stage": str(s), "replica": 0, "host": socket.gethostname(), "requests_handled": 24}
                               for s in range(3)]
    assert (doc["killed"], doc["rerouted"]) == (None, 0)


def test_json_reports_a_failure_as_a_document_too(tmp_path) -> None:
    done = _run_default_with(tmp_path, "", "--json", "--launcher", "lokal")
    assert done.returncode == 1
    doc = json.loads(done.stdout)
    assert (set(doc), doc["ok"], doc["exit_code"]) == ({"ok", "error", "exit_code"}, False, 1)
    assert doc["error"].startswith("unknown launcher 'lokal' (did you mean 'local'?); valid launchers: local")
    assert done.stderr.startswith("omni run: unknown launcher") and "Traceback" not in done.stderr


def test_progress_off_a_terminal_is_plain_lines_not_bar_frames() -> None:
    env, marker = marked_env()
    done = subprocess.run([sys.executable, "-m", "omni_core.cli.main", "run", str(DEFAULT)], capture_output=True,
                          text=True, timeout=300, env=env)
    assert not run_processes(marker)
    assert done.returncode == 0, done.stderr
    lines = [line for line in done.stderr.splitlines() if "requests" in line]
    assert lines[-1] == "omni run: 24/24 requests" and len(lines) <= 11, done.stderr
    assert "#" not in done.stderr and "\r" not in done.stderr


def _run_default_with(tmp_path: Path, appended: str, *args: str) -> subprocess.CompletedProcess[str]:
    """``omni run`` of the default example with ``appended`` at the end of its config."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT.read_text() + appended)
    return omni_run(str(config), *args)


def test_unknown_forwarding_mode_is_named(tmp_path) -> None:
    done = _run_default_with(tmp_path, "  forwarding: sideways\n")
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


@pytest.mark.parametrize("where", ["option", "config"])
def test_an_unknown_launcher_is_an_error_naming_the_valid_ones(tmp_path, where) -> None:
    if where == "config":
        done = _run_default_with(tmp_path, "launcher: lokal\n")
    else:
        done = _run_default_with(tmp_path, "", "--launcher", "lokal")
    assert done.returncode == 1
    assert "unknown launcher 'lokal' (did you mean 'local'?); valid launchers: local" in done.stderr, done.stderr


def test_the_local_launcher_refuses_placement_it_cannot_honour(tmp_path) -> None:
    done = _run_default_with(tmp_path, "placement:\n  strategy: SPREAD\n"
                             "  stages: {1: {resources: {host_b: 1}}, 2: {num_gpus: 1}}\n")
    assert done.returncode == 1
    faults = (("stages.1.resources", "resources"), ("stages.2.num_gpus", "num_gpus"), ("strategy", "strategy"))
    for where, key in faults:
        assert f"placement.{where}: the 'local' launcher cannot honour {key!r} (it honours: host)" in done.stderr


def test_a_typo_in_the_placement_names_the_closest_key_and_starts_nothing(tmp_path) -> None:
    done = _run_default_with(tmp_path, "hosts: {h1: {address: 127.0.0.1}}\nplacement: {stages: {0: {hots: h1}}}\n")
    assert done.returncode == 1
    assert "placement.stages.0: unknown key 'hots' (did you mean 'host'?)" in done.stderr


WRAPPER = """
import json, os, sys
log = sys.argv[1]
with open(os.path.join(log, f"{os.getpid()}.json"), "w") as out:
    json.dump(sys.argv[2:], out)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def test_a_stage_placed_on_a_host_runs_under_its_exec_prefix_with_its_address(tmp_path) -> None:
    """Each host's ``exec`` prefix starts its stages (as ssh would), passing OMNI_HOST_IP and OMNI_REPLICA_ID."""
    log = tmp_path / "log"
    log.mkdir()
    (tmp_path / "wrapper.py").write_text(WRAPPER)
    prefix = json.dumps([sys.executable, str(tmp_path / "wrapper.py"), str(log)])
    config = tmp_path / "hosts.yaml"
    config.write_text(DEFAULT.read_text().replace("requests: 24", "requests: 6") + f"""
hosts:
  a: {{address: 127.0.0.2, exec: {prefix}}}
  b: {{address: 127.0.0.3, exec: {prefix}}}
placement:
  stages: {{0: {{host: a}}, 1: {{host: b}}}}
""")
    done = omni_run(str(config))
    assert done.returncode == 0, done.stderr
    assert replica_rows(done.stdout) == {
        "stage 0 replica 0": ("a (127.0.0.2)", 6),
        "stage 1 replica 0": ("b (127.0.0.3)", 6),
        "stage 2 replica 0": (socket.gethostname(), 6),
    }
    started = sorted(json.loads(path.read_text()) for path in log.iterdir())
    assert [command[:3] for command in started] == [
        ["env", "OMNI_REPLICA_ID=0", "OMNI_HOST_IP=127.0.0.2"],
        ["env", "OMNI_REPLICA_ID=0", "OMNI_HOST_IP=127.0.0.3"],
    ]
    assert all(command[3:6] == [sys.executable, "-m", "omni_pipeline.stage"] for command in started)


def _start_long_run(tmp_path: Path, *options: str) -> tuple[subprocess.Popen[bytes], str]:
    """An ``omni run`` of many small requests, returned (with its marker) once it drives them; ``run.seen`` is
    its stderr so far."""
    config = tmp_path / "long.yaml"
    config.write_text(DEFAULT.read_text().replace("requests: 24", "requests: 100000")
                      .replace("4194304", "4096").replace("kv_cache_bytes: 1048576", "kv_cache_bytes: 0"))
    env, marker = marked_env()
    run = subprocess.Popen([sys.executable, "-m", "omni_core.cli.main", "run", str(config), *options],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert run.stderr is not None
    seen = b""
    while b"omni run: 0/100000 requests" not in seen:
        chunk = os.read(run.stderr.fileno(), 4096)
        assert chunk, f"omni run ended before driving requests: {seen.decode(errors='replace')}"
        seen += chunk
    run.seen = seen  # type: ignore[attr-defined]
    return run, marker


def _replicas_of(marker: str) -> dict[str, int]:
    """PID of each stage replica of the run marked ``marker``, by stage id."""
    found = {}
    for pid in run_processes(marker):
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        found[argv[argv.index(b"omni_pipeline.stage") + 2].decode()] = pid
    return found


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_run_removes_every_replica(tmp_path, signum) -> None:
    run, marker = _start_long_run(tmp_path)
    replicas = _replicas_of(marker)
    assert sorted(replicas) == ["0", "1", "2"]
    run.send_signal(signum)  # to the runner only: it stops its replicas itself
    _, err = run.communicate(timeout=120)
    assert run.returncode == 130, err
    assert b"omni run: interrupted; stopping every stage replica" in err
    assert not run_processes(marker), "a stage replica outlived the interrupted run"


def test_a_replica_that_dies_fails_the_run_and_the_others_are_removed(tmp_path) -> None:
    run, marker = _start_long_run(tmp_path)
    os.kill(_replicas_of(marker)["1"], signal.SIGKILL)
    _, err = run.communicate(timeout=120)
    assert run.returncode == 1, err
    assert b"stage 1: no live replica left" in err
    assert not run_processes(marker), "a stage replica outlived the failed run"


def test_a_host_whose_exec_prefix_is_missing_names_the_stage(tmp_path) -> None:
    done = _run_default_with(tmp_path, "hosts: {h1: {address: 198.18.0.1, exec: [omni-no-such-command]}}\n"
                             "placement: {stages: {1: {host: h1}}}\n")
    assert done.returncode == 1
    assert "stage 1 replica 0: the 'local' launcher could not start it: " in done.stderr
    assert "omni-no-such-command" in done.stderr


def test_a_finished_requests_state_is_dropped_and_a_late_duplicate_is_still_caught(tmp_path) -> None:
    """The orchestrator keeps no per-request state once a request finished everywhere (a long run's memory stays
    flat: ``python -m reliability soak``), only its figures; a delivery arriving after that is a duplicate."""
    from omni_pipeline.orchestrator import Run

    config = tmp_path / "pipeline.yaml"
    config.write_text(DEFAULT.read_text().replace("requests: 24", "requests: 40").replace("4194304", "65536"))
    run = Run(str(config))
    try:
        run.start()
        run.drive(progress=False)
        run.verify()
        per_request = (run.expected, run.deliveries, run.delivered_to, run.producer, run.owner, run.outputs_sent,
                       run.completed, run.finished)  # fmt: skip
        assert all(len(table) == 0 for table in per_request), [len(t) for t in per_request]
        assert all(len(stats.latencies) == 40 and not stats.samples for stats in run.stats.values())
        assert run.done == 40 and all(run.retired)
        edge = run.edges[0]
        late = {"checksum": "x", "kv_checksum": None, "size": 1, "get_s": 0.0}
        run._received(run.replicas[edge[1]][0], "req-000003", edge, late)
        assert run.problems == [f"edge {edge[0]}->{edge[1]}: request req-000003 delivered twice (after it finished)"]
    finally:
        run.stop()


def test_metrics_port_serves_every_replicas_connector_metrics_while_it_runs(tmp_path) -> None:
    """Each stage replica's puts and gets, by edge and stage, from the orchestrator's one endpoint."""
    run, marker = _start_long_run(tmp_path, "--metrics-port", "0")
    try:
        url = re.search(rb"omni run: metrics at (http://\S+)", run.seen)
        assert url is not None, run.seen
        deadline = time.monotonic() + 60
        while True:
            samples = scrape_metrics(url[1].decode())
            puts = {dict(labels)["stage"]: value for (name, labels), value in samples.items()
                    if name == "omni_connector_puts_total" and dict(labels)["edge"] == "0->1"}
            gets = {dict(labels)["stage"]: value for (name, labels), value in samples.items()
                    if name == "omni_connector_gets_total" and dict(labels)["edge"] == "0->1"}
            if (puts.get("0", 0) > 0 and gets.get("1", 0) > 0) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert puts.get("0", 0) > 0 and gets.get("1", 0) > 0, samples  # the thinker puts, the talker gets
        labels = frozenset({"connector": "SharedMemoryConnector", "edge": "0->1", "stage": "1", "replica": "0"}.items())
        assert samples[("omni_connector_get_seconds_count", labels)] == samples[("omni_connector_gets_total", labels)]
        assert samples[("omni_connector_bytes_total", labels | {("direction", "get")})] > 0
    finally:
        run.send_signal(signal.SIGINT)
        run.communicate(timeout=120)
    assert not run_processes(marker)
    with pytest.raises(OSError):  # the endpoint is gone with the run
        urllib.request.urlopen(url[1].decode(), timeout=2)
