"""``omni run CONFIG``: start every stage replica, drive requests through the graph, verify, report.

A launcher plugin (``local`` unless the config or ``--launcher`` names another) starts each replica where the
config's placement says, and the orchestrator drives it through the handle it gets back, by JSON lines, never
by anything local to one launcher.  Stages wire their edges as an inference engine's stages would; the
orchestrator routes control messages (which replica fetches which key, with which metadata), checks every
payload's digest and that each arrives exactly once, and re-routes the unfinished work of a replica that dies.
With ``workload.forwarding: orchestrator`` it is also the sender on every edge, over the connectors
``initialize_orchestrator_connectors`` creates: a stage hands its output back (here: its digests, standing in
for an engine's output queue; the output itself is deterministic, so the orchestrator rebuilds it and checks
them) and the orchestrator puts it for the next stage.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

from omni_core import (
    ChildGone,
    ConfigError,
    Launcher,
    OmniConnectorBase,
    ProgressReporter,
    ReplicaHandle,
    checksum,
    get_plugin_registry,
    import_target,
    initialize_orchestrator_connectors,
    load_config_document,
    load_omni_transfer_config,
    load_placement,
    merge_metrics,
    print_error,
    print_table,
    start_metrics_server,
)

from .report import Edge, EdgeStats
from .router import CoordinatorSettings, Router, RunFailed, address_of
from .stage import PUSH_METRICS_ENV, put_output
from .workload import Workload, kv_cache, stage_output

__all__ = ["Run", "RunFailed", "main"]

#: Variables of this process every replica gets too (a host's ``exec`` prefix such as ssh, or Ray, does not pass
#: the environment on).
FORWARDED_ENV = ("OMNI_LOG_LEVEL",)
#: Exit code of a run stopped by Ctrl-C or SIGTERM (128 + SIGINT, as shells report it).
INTERRUPTED = 130


class Run:
    """The orchestrator of one ``omni run``."""

    def __init__(self, config_path: str, kill_stage: int | None = None, launcher: str | None = None) -> None:
        """Load and check everything (config, placement, launcher, coordinator) before anything starts."""
        self.config_path = os.path.abspath(config_path)
        self.push_metrics = False  #: replicas send their connector metrics (``omni run --metrics-port``)
        doc = load_config_document(config_path) or {}
        workload = doc.get("workload")
        if kill_stage is not None:
            workload = {
                **(workload or {}),
                "kill_replica": {"stage": kill_stage, "after": (workload or {}).get("requests", 8) // 3},
            }
        self.workload = Workload.from_config(workload)
        self.placement = load_placement(config_path)
        self.launcher_name = launcher or self.placement.launcher
        self.launcher_registration, self.launcher_plugin = get_plugin_registry().select("launcher", self.launcher_name)
        self.placement.require(self.launcher_name, self.launcher_registration.placement_keys)
        self.coordinator = CoordinatorSettings.from_config(doc.get("coordinator"))
        transfer = load_omni_transfer_config(config_path)
        if transfer is None or not transfer.connectors:
            raise ConfigError(f"{config_path}: no edges to drive (define stages and connectors)")
        self.edges: list[Edge] = sorted(transfer.connectors)
        self.stage_ids = sorted({s for edge in self.edges for s in edge}, key=int)
        self.in_edges = {s: [e for e in self.edges if e[1] == s] for s in self.stage_ids}
        self.out_edges = {s: [e for e in self.edges if e[0] == s] for s in self.stage_ids}
        self.entry = [s for s in self.stage_ids if not self.in_edges[s]]
        self.sinks = [s for s in self.stage_ids if not self.out_edges[s]]
        if not self.entry or not self.sinks:
            raise ConfigError(f"{config_path}: the stage graph has a cycle (no entry or no final stage)")
        unknown = sorted(set(self.workload.replicas) - {int(s) for s in self.stage_ids})
        if unknown or (self.workload.kill_replica and str(self.workload.kill_replica["stage"]) not in self.stage_ids):
            raise ConfigError(f"workload names stage(s) not in the graph: {unknown or [self.workload.kill_replica]}")
        self.replicas: dict[str, list[ReplicaHandle]] = {}
        self.dead: set[ReplicaHandle] = set()
        self.launcher: Launcher | None = None
        self.router: Router | None = None
        self.connectors: dict[Edge, OmniConnectorBase] = {}  # forwarding: orchestrator
        self.stats: dict[Edge, EdgeStats] = {e: EdgeStats() for e in self.edges}
        self.expected: dict[tuple[str, Edge], dict[str, Any]] = {}
        self.deliveries: Counter[tuple[str, Edge]] = Counter()
        self.delivered_to: dict[tuple[str, Edge], ReplicaHandle] = {}
        self.producer: dict[tuple[str, Edge], ReplicaHandle] = {}
        self.owner: dict[tuple[str, str], ReplicaHandle] = {}
        self.outputs_sent: Counter[tuple[str, str]] = Counter()
        self.completed: set[tuple[str, str]] = set()
        self.finished: Counter[str] = Counter()
        self.retired = bytearray(self.workload.requests)  # 1 once request i finished everywhere (its state dropped)
        self.done = 0
        self.handled: Counter[tuple[str, int]] = Counter()
        self.rerouted = 0
        self.recovering: dict[str, tuple[float, set[str]]] = {}  # dead replica -> (died at, its re-routed requests)
        self.killed: ReplicaHandle | None = None
        self.problems: list[str] = []

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        """Start the launcher, the coordinator (if any) and every replica; wait until each is ready."""
        launcher_class = import_target(self.launcher_registration.target)
        if not (isinstance(launcher_class, type) and issubclass(launcher_class, Launcher)):
            raise RunFailed(f"launcher {self.launcher_name!r} from {self.launcher_plugin.label}: "
                            f"{self.launcher_registration.target} is not an omni_core.Launcher subclass")
        counts = {sid: self.workload.replica_count(int(sid)) for sid in self.stage_ids}
        self.launcher = launcher_class(self.placement, counts)
        if self.workload.forwarding == "orchestrator":
            _, self.connectors = initialize_orchestrator_connectors(self.config_path)
        self.router = Router(self.replicas, self.coordinator, host=self.launcher.orchestrator_host)
        forwarded = {k: os.environ[k] for k in FORWARDED_ENV if k in os.environ}
        for sid, count in counts.items():
            self.replicas[sid] = []
            for r in range(count):
                argv = [sys.executable, "-m", "omni_pipeline.stage", self.config_path, sid,
                        *self.router.replica_options(address_of(sid, r))]
                try:
                    env = {"OMNI_REPLICA_ID": str(r), **forwarded,
                           **({PUSH_METRICS_ENV: "1"} if self.push_metrics else {})}
                    replica = self.launcher.start_replica(sid, r, argv, env)
                except OSError as exc:  # e.g. a host's exec prefix that is not installed
                    raise RunFailed(f"stage {sid} replica {r}: the {self.launcher_name!r} launcher could not start "
                                    f"it: {exc}") from exc
                self.replicas[sid].append(replica)
        for replica in self._all():
            try:
                replica.wait_ready(self.workload.timeout_s + 30)
            except (RuntimeError, TimeoutError) as exc:
                raise RunFailed(str(exc)) from exc
        self.router.wait_registered(timeout=30)

    def stop(self) -> None:
        """Close every replica (all asked first, then each awaited), then whatever the launcher still holds."""
        for replica in self._all():
            replica.request_close()
        for replica in self._all():
            replica.close()
        if self.launcher is not None:
            self.launcher.close()
        if self.router is not None:
            self.router.close()
        for connector in self.connectors.values():
            connector.close()

    def _all(self) -> list[ReplicaHandle]:
        return [r for replicas in self.replicas.values() for r in replicas]

    @staticmethod
    def _tell(replica: ReplicaHandle, message: dict[str, Any]) -> None:
        """Send ``message``; a replica that is gone is noticed when its output ends, and its work re-routed then."""
        with contextlib.suppress(ChildGone):
            replica.send(message)

    # -- routing ----------------------------------------------------------------------
    def _route(self, rid: str, stage: str) -> ReplicaHandle:
        owner = self.owner.get((rid, stage))
        if owner is None or not owner.alive:
            assert self.router is not None
            owner = self.owner[(rid, stage)] = self.router.pick(stage, rid)
        return owner

    def _submit(self, rid: str) -> None:
        for sid in self.entry:
            self._tell(self._route(rid, sid), {"op": "input", "request_id": rid})

    def _resend(self, rid: str, edge: Edge) -> None:
        if self.connectors:
            self._forward(rid, edge[0], only=edge)
            return
        producer = self.producer.get((rid, edge))
        if producer is None or not producer.alive:
            assert self.router is not None
            producer = self.router.pick(edge[0], rid)
        self._tell(producer, {"op": "resend", "request_id": rid, "edge": edge})

    def _replica_died(self, dead: ReplicaHandle) -> None:
        """Re-route every request the dead replica had not finished (it is stopped for good first)."""
        dead.kill()  # a replica whose output ended is gone: make sure of it, and let its leftovers be reclaimed
        self.dead.add(dead)
        rerouted: set[str] = set()
        for (rid, stage), owner in list(self.owner.items()):
            if owner is not dead or (rid, stage) in self.completed:
                continue
            del self.owner[(rid, stage)]
            self.rerouted += 1
            rerouted.add(rid)
            if stage in self.entry:
                self._tell(self._route(rid, stage), {"op": "input", "request_id": rid})
                continue
            for edge in self.in_edges[stage]:
                if self.delivered_to.get((rid, edge)) is dead:  # delivered, but its work died with it
                    self.deliveries[(rid, edge)] -= 1
                    del self.delivered_to[(rid, edge)]
                    self.stats[edge].samples.pop(rid, None)
                if (rid, edge) in self.expected:
                    self._resend(rid, edge)
        self._say(f"{dead.label} is gone; {len(rerouted)} unfinished request(s) re-routed")
        self.recovering[dead.label] = (time.monotonic(), rerouted)
        self._check_recovered()

    def _check_recovered(self, rid: str | None = None) -> None:
        """Say when every request re-routed from a dead replica has finished (``rid`` just did)."""
        for label, (died, rids) in list(self.recovering.items()):
            rids.discard(rid or "")
            if not rids:
                del self.recovering[label]
                self._say(f"every request re-routed from {label} finished {time.monotonic() - died:.2f} s after it "
                          "was found gone")

    def _say(self, line: str) -> None:
        """An event of the run on stderr, on its own line (a progress bar on a terminal stays below it)."""
        sys.stderr.write(f"omni run: {line}\n")

    # -- the event loop -------------------------------------------------------------------
    def drive(self, progress: bool = True) -> None:
        total, submitted = self.workload.requests, 0
        last_progress = time.monotonic()
        with ProgressReporter(total, "requests", enabled=progress, label="omni run") as shown:
            while (done := self.done) < total:
                shown.update(done)
                self._maybe_kill(done)
                while submitted < total and submitted - done < self.workload.in_flight:
                    self._submit(_request_id(submitted))
                    submitted += 1
                live = {r.fileno(): r for r in self._all() if r not in self.dead}
                ready, _, _ = select.select(list(live), [], [], 1.0)
                for fd in ready:
                    replica = live[fd]
                    if not replica.pump():
                        self._replica_died(replica)
                    while replica.lines:
                        self._handle(replica, replica.lines.pop(0))
                    last_progress = time.monotonic()
                if time.monotonic() - last_progress > self.workload.timeout_s:
                    raise RunFailed(f"no progress for {self.workload.timeout_s:.0f} s (workload.timeout_s)")
                if self.problems:
                    raise RunFailed("; ".join(self.problems))
            shown.update(total)

    def _maybe_kill(self, done: int) -> None:
        plan = self.workload.kill_replica
        if plan is None or self.killed is not None or done < plan["after"]:
            return
        self.killed = self.replicas[str(plan["stage"])][0]
        self._replica_died(self.killed)  # SIGKILLs it (for the local launcher) and re-routes its work

    def _handle(self, replica: ReplicaHandle, message: dict[str, Any]) -> None:
        op, rid = message.get("op"), message.get("request_id", "")
        edge: Edge = tuple(message.get("edge") or ("", ""))
        if op == "sent":
            self.producer[(rid, edge)] = replica
            self.outputs_sent[(rid, edge[0])] += 1
            if self.outputs_sent[(rid, edge[0])] >= len(self.out_edges[edge[0]]):
                self._complete(rid, edge[0], replica)
            self._sent(rid, edge, message)
        elif op == "output":
            self._complete(rid, replica.stage_id, replica)
            self._forward(rid, replica.stage_id, reported=message)
        elif op == "received":
            self._received(replica, rid, edge, message)
        elif op == "done":
            self._complete(rid, replica.stage_id, replica)
            self.finished[rid] += 1
            if self.finished[rid] >= len(self.sinks):
                self._retire(rid)
        elif op == "metrics":
            merge_metrics(replica.label, message.get("figures"))
        elif op == "lost" and (rid, edge) in self.producer and not self.producer[(rid, edge)].alive:
            self._resend(rid, edge)  # its producer died before this consumer read it
            self.rerouted += 1
        elif op in ("lost", "put_failed", "error"):
            verb = {"lost": "was lost", "put_failed": "could not be put"}.get(op, f"failed: {message.get('error')}")
            self.problems.append(f"edge {edge[0]}->{edge[1]} ({replica.label}): request {rid} {verb}")
        else:
            self.problems.append(f"{replica.label}: unexpected message {message}")

    def _sent(self, rid: str, edge: Edge, message: dict[str, Any]) -> None:
        """``message`` reports a put on ``edge``: expect its digests, and have a consumer fetch it."""
        self.expected[(rid, edge)] = message
        fetch = {"op": "fetch", "request_id": rid, "edge": edge, "metadata": message["metadata"]}
        self._tell(self._route(rid, edge[1]), fetch)

    def _forward(self, rid: str, stage: str, reported: dict[str, Any] | None = None, only: Edge | None = None) -> None:
        """Put ``stage``'s output for ``rid`` on its outgoing edges (or ``only``) over the orchestrator's connectors."""
        payload = stage_output(rid, int(stage), self.workload)
        kv = kv_cache(rid, int(stage), self.workload) if self.workload.kv_cache_bytes else None
        digests = (checksum(payload), checksum(kv) if kv is not None else None)
        if reported is not None and digests != (reported["checksum"], reported["kv_checksum"]):
            self.problems.append(f"stage {stage}: request {rid}'s output differs from the digests it reported")
            return
        for edge in [only] if only else self.out_edges[stage]:
            message = put_output(self.connectors[edge], edge, rid, payload, kv, digests, self.workload.timeout_s, only)
            if message["op"] != "sent":
                self.problems.append(f"edge {edge[0]}->{edge[1]} (orchestrator): request {rid} could not be put")
                return
            self._sent(rid, edge, message)

    def _complete(self, rid: str, stage: str, replica: ReplicaHandle) -> None:
        if (rid, stage) not in self.completed:
            self.completed.add((rid, stage))
            self.handled[(replica.stage_id, replica.replica_id)] += 1

    def _retire(self, rid: str) -> None:
        """``rid`` finished at every final stage: check each edge delivered it once, keep its figures, drop the rest
        of its state (a long run's memory stays flat); a delivery arriving later is a duplicate."""
        for edge in self.edges:
            count = self.deliveries.pop((rid, edge), 0)
            if count != 1:
                self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} delivered {count} times, "
                                     "expected exactly once")
            self.stats[edge].settle(rid)
            for table in (self.expected, self.delivered_to, self.producer):
                table.pop((rid, edge), None)
        for stage in self.stage_ids:
            self.owner.pop((rid, stage), None)
            self.outputs_sent.pop((rid, stage), None)
            self.completed.discard((rid, stage))
        del self.finished[rid]
        self.retired[_index(rid)] = 1
        self.done += 1
        if self.recovering:
            self._check_recovered(rid)

    def _received(self, replica: ReplicaHandle, rid: str, edge: Edge, message: dict[str, Any]) -> None:
        if self.retired[_index(rid)]:
            self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} delivered twice (after it finished)")
            return
        sent = self.expected.get((rid, edge))
        self.deliveries[(rid, edge)] += 1
        self.delivered_to[(rid, edge)] = replica
        if sent is None or (sent["checksum"], sent["kv_checksum"]) != (message["checksum"], message["kv_checksum"]):
            self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} arrived corrupted")
        elif self.deliveries[(rid, edge)] > 1:
            self.problems.append(f"edge {edge[0]}->{edge[1]}: request {rid} delivered twice")
        else:
            self.stats[edge].samples[rid] = (message["size"], sent["put_s"] + message["get_s"])

    # -- results ------------------------------------------------------------------------------
    def verify(self) -> None:
        for rid in (_request_id(i) for i in range(self.workload.requests) if not self.retired[i]):
            for edge in self.edges:
                if self.deliveries[(rid, edge)] != 1:
                    raise RunFailed(
                        f"edge {edge[0]}->{edge[1]}: request {rid} delivered "
                        f"{self.deliveries[(rid, edge)]} times, expected exactly once"
                    )
        if self.killed is not None and self.router is not None and self.router.hub is not None:
            self._wait_dropped(self.killed)

    def _wait_dropped(self, dead: ReplicaHandle) -> None:
        assert self.router is not None and self.coordinator is not None
        limit = self.coordinator.heartbeat_timeout + 5.0
        deadline = time.monotonic() + limit
        address = address_of(dead.stage_id, dead.replica_id)
        while any(r.input_addr == address for r in self.router.listed(dead.stage_id)):
            if time.monotonic() > deadline:
                raise RunFailed(f"the coordinator still lists killed {dead.label} after {limit:.0f} s")
            time.sleep(0.1)

    def results(self, wall: float) -> dict[str, Any]:
        """What ``omni run --json`` prints after a run in which every payload arrived (keys: see the CLI docs)."""
        return {
            "ok": True,
            "config": self.config_path,
            "launcher": self.launcher_name,
            "requests": self.workload.requests,
            "stages": len(self.stage_ids),
            "wall_s": wall,
            "forwarding": self.workload.forwarding,
            "edges": [self.stats[e].figures(e) for e in self.edges],
            "replicas": [{"stage": r.stage_id, "replica": r.replica_id, "host": r.node,
                          "requests_handled": self.handled[(r.stage_id, r.replica_id)]} for r in self._all()],
            "killed": self.killed.label if self.killed is not None else None,
            "rerouted": self.rerouted,
        }

    def report(self, wall: float) -> None:
        """Print the per-edge table, the replica table and what happened."""
        print_table(["edge", "requests", "bytes", "put+get p50 ms", "p99 ms", "GB/s (median)"],
                    [self.stats[e].row(e) for e in self.edges])
        rows = [[f"stage {r.stage_id} replica {r.replica_id}", r.node, str(self.handled[(r.stage_id, r.replica_id)])]
                for r in self._all()]
        print()
        print_table(["replica", f"host ({self.launcher_name} launcher)", "requests handled"], rows)
        print()
        if self.killed is not None:
            print(f"killed {self.killed.label}; {self.rerouted} unfinished request(s) re-routed"
                  + ("; the coordinator dropped it from its list" if self.coordinator else ""))
        if self.connectors:
            print("the orchestrator put every stage's output on its edges (workload.forwarding: orchestrator)")
        print(f"{self.workload.requests} requests through {len(self.stage_ids)} stages in {wall:.2f} s; "
              "every payload arrived intact, exactly once.")


def _request_id(index: int) -> str:
    return f"req-{index:06d}"


def _index(request_id: str) -> int:
    return int(request_id.removeprefix("req-"))


def main(config_path: str, *, progress: bool = True, kill_stage: int | None = None, launcher: str | None = None,
         json_output: bool = False, metrics: tuple[str, int] | None = None) -> int:
    """Run the pipeline in ``config_path``: 0 when every payload arrived intact exactly once, 1 if not, 130 when
    stopped by Ctrl-C or SIGTERM.  Every replica is removed on the way out, whichever way that is.  With
    ``json_output`` the results (or the failure) are one JSON document on stdout instead of the tables; with
    ``metrics`` (address, port) the connector metrics of this process and every replica are served there."""
    try:
        run = Run(config_path, kill_stage, launcher)
        server = _serve_metrics(run, *metrics) if metrics is not None else None
    except (ConfigError, FileNotFoundError, ImportError, OSError) as exc:
        print_error("omni run", exc)
        return _failure(str(exc), 1, json_output)
    started = time.monotonic()
    code, error = 0, ""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        run.start()
        run.drive(progress=progress)
        run.verify()
    except KeyboardInterrupt:
        code, error = INTERRUPTED, "interrupted; stopping every stage replica"
        print_error("omni run", error)
    except (RunFailed, ImportError, ValueError, OSError) as exc:
        code, error = 1, f"FAILED: {type(exc).__name__}: {exc}"
        print_error("omni run", error)
    finally:
        with _signals_held():
            run.stop()
        signal.signal(signal.SIGTERM, previous)
        if server is not None:
            server.shutdown()
            server.server_close()
    if code:
        return _failure(error, code, json_output)
    if json_output:
        print(json.dumps(run.results(time.monotonic() - started), indent=2))
    else:
        run.report(time.monotonic() - started)
    return code


def _serve_metrics(run: Run, address: str, port: int) -> Any:
    """Serve the run's metrics at ``address:port`` (replicas push theirs with their messages); the server."""
    server = start_metrics_server(port, address)
    run.push_metrics = True
    host, bound = server.server_address[:2]
    sys.stderr.write(f"omni run: metrics at http://{host}:{bound}/metrics\n")
    return server


def _failure(error: str, code: int, json_output: bool) -> int:
    """``code``, after printing the failure's JSON document (``ok`` false, ``error``, ``exit_code``) if asked."""
    if json_output:
        print(json.dumps({"ok": False, "error": error, "exit_code": code}))
    return code


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ignore Ctrl-C and SIGTERM while the replicas are being stopped (that takes a bounded time)."""
    saved = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
