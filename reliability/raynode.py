"""A Ray node killed during ``omni run --launcher ray``.

A Ray cluster on three test hosts (``omni_ray.testing.RayTestCluster``: the head on host 1, a worker node on hosts 2
and 3).  ``omni run`` drives the Ray example (thinker -> talker -> vocoder over ``RayConnector``) from host 1, the
thinker and the vocoder on host 1 and one talker replica on each worker node.  Once the run has finished a seeded
number of requests, one worker node's raylet is SIGKILLed: the node dies with its talker and its payload owner.
The orchestrator re-routes the dead replica's unfinished requests to the other talker and checks every payload
(intact, exactly once).  ``omni run`` does not replace a dead replica, so each kill gets a run of its own; the node
is started again between runs.

Recovery: from the kill until ``omni run`` said every request re-routed from the dead replica had finished.  A run
that neither finishes nor fails within :data:`HANG_S` of the kill hung.
"""

from __future__ import annotations

import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

from .chaos import KillPoint, ScenarioResult
from .leaks import LeakProbe
from .soak import RunOutput

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "thinker_talker_vocoder_ray_connector.yaml"
#: The connector's bound on one call to a payload owner (one on a dead node answers nothing).
CALL_TIMEOUT_S = 3.0
#: ``workload.timeout_s``: a run with no progress for this long fails.
RUN_TIMEOUT_S = 20.0
#: A run still going this long after the kill hung.
HANG_S = 180.0
WORKLOAD = {"tensor_bytes": 1 << 20, "kv_cache_bytes": 256 << 10, "replicas": {1: 2}, "timeout_s": RUN_TIMEOUT_S}
_RECOVERED = "every request re-routed from stage 1 "


def plan_node_kills(seed: int, scenario: str, requests: int, runs: int) -> list[KillPoint]:
    """One kill per run of ``requests``: after a seeded 10-70 % of them, worker node 2 or 3 (``phase``)."""
    rng = random.Random(f"{seed}/{scenario}/nodes")
    return [KillPoint(rng.randrange(requests // 10, requests * 7 // 10), f"node {rng.choice((2, 3))}", 0.0)
            for _ in range(runs)]  # fmt: skip


def ray_config(cluster: Any, requests: int) -> dict[str, Any]:
    """The example with its thinker and vocoder on host 1, a talker on each worker node, fast owner calls."""
    from omni_ray.testing import WORKER_RESOURCE

    doc = yaml.safe_load(EXAMPLE.read_text())
    doc["connectors"]["ray"]["extra"] = {"call_timeout_s": CALL_TIMEOUT_S}
    doc["hosts"] = {"h1": {"address": cluster.head.address}}
    doc["placement"] = {"stages": {0: {"host": "h1"}, 1: {"resources": {WORKER_RESOURCE: 1}}, 2: {"host": "h1"}}}
    doc["workload"] = {**doc["workload"], **WORKLOAD, "requests": requests}
    return doc


def ray_cluster() -> Any:
    from omni_ray.testing import RayTestCluster

    return RayTestCluster(3)


class RayNodeRun:
    """The scenario: ``kills`` runs of ``requests // kills`` requests, one node killed in each."""

    def __init__(self, scenario: Any, seed: int, requests: int, kills: int, window: int) -> None:
        self.scenario = scenario
        runs = max(1, kills)
        self.per_run = max(20, requests // runs)
        plan = plan_node_kills(seed, scenario.slug, self.per_run, runs)
        self.result = ScenarioResult(scenario.slug, scenario.transport, scenario.target, seed, self.per_run * runs,
                                     plan, kind=scenario.kind)  # fmt: skip
        self.result.get_bound_s = HANG_S  # longest_get_s: the longest a run went on after its kill
        self._pids: list[int] = []
        self._left: list[str] = []

    def run(self) -> ScenarioResult:
        started = time.monotonic()
        probe = LeakProbe(None)
        cluster = self.scenario.setup()
        try:
            cluster.connect_driver()
            cluster.wait_nodes(3)
            with tempfile.TemporaryDirectory(prefix="omni-raynode-") as workdir:
                for n, kill in enumerate(self.result.kills):
                    config = Path(workdir) / f"run{n}.yaml"
                    config.write_text(yaml.safe_dump(ray_config(cluster, self.per_run)))
                    self._one_run(cluster, kill, config)
                    _progress(self.scenario.slug, n + 1, len(self.result.kills))
        finally:
            cluster.close()
        leaks = probe.measure(self._pids, [], 0)
        leaks.processes += len(self._left)
        leaks.details += self._left
        self.result.leaks = leaks
        self.result.seconds = time.monotonic() - started
        self.result.notes.append(
            f"{len(self.result.kills)} runs of {self.per_run} requests, 1 MiB hidden state + 256 KiB KV cache per "
            f"edge; RayConnector `call_timeout_s: {CALL_TIMEOUT_S:g}`, `workload.timeout_s: {RUN_TIMEOUT_S:g}`")
        return self.result

    def _one_run(self, cluster: Any, kill: KillPoint, config: Path) -> None:
        """One ``omni run``: the node killed after ``kill.request`` requests finished; tally it; start the node
        again; wait for the run's actors, placement groups, owners and stage processes to be gone."""
        command = [*cluster.head.exec_prefix, sys.executable, "-m", "omni_core.cli.main", "run", str(config)]
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=cluster.env())
        output = RunOutput(process)
        node = int(kill.phase.split()[1])
        try:
            while output.done < kill.request and process.poll() is None:
                time.sleep(0.02)
            self._pids += list(cluster.stage_processes())
            killed_at = time.monotonic()
            if process.poll() is None:
                cluster.kill_node(node)
            try:
                process.wait(timeout=HANG_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            self.result.longest_get_s = max(self.result.longest_get_s, time.monotonic() - killed_at)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            output.join()
        self._tally(process.returncode, output, killed_at)
        cluster.start_node(node)
        cluster.wait_nodes(3, timeout=120)
        self._settle(cluster)

    def _tally(self, code: int, output: RunOutput, killed_at: float) -> None:
        from omni_pipeline.testing import edge_rows

        report = output.stdout.decode(errors="replace")
        errors = output.stderr_tail.decode(errors="replace")
        rows = edge_rows(report) if code == 0 else {}
        delivered = min((int(row[0]) for row in rows.values()), default=0)
        self.result.acked += self.per_run if code == 0 else 0
        self.result.delivered += delivered
        self.result.lost += self.per_run - delivered
        self.result.duplicates += errors.count("delivered twice")
        self.result.corrupt += errors.count("arrived corrupted")
        recovered = [t for t, line in output.events if line.startswith(_RECOVERED)]
        if recovered:
            self.result.recover_s.append(recovered[0] - killed_at)
        if code != 0:
            last = errors.strip().splitlines()[-1:] or ["(nothing on stderr)"]
            self.result.notes.append(f"a run exited with {code}: {last[0][:300]}")

    def _settle(self, cluster: Any, limit_s: float = 30.0) -> None:
        """Ray removes a run's actors asynchronously: whatever is still there after ``limit_s`` was left."""
        deadline = time.monotonic() + limit_s
        found = cluster.leftovers()
        while any(found.values()) and time.monotonic() < deadline:
            time.sleep(0.2)
            found = cluster.leftovers()
        self._left += [f"{len(items)} {kind}" for kind, items in found.items() if items]


def _progress(slug: str, done: int, total: int) -> None:
    print(f"  {slug}: {done}/{total} runs", file=sys.stderr, flush=True)
