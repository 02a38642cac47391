"""``omni run CONFIG``: start every stage replica as a process, drive requests through the graph, verify, report.

Stages wire their edges as an inference engine's stages would; the
orchestrator routes control messages (which replica fetches which key, with
which metadata), checks every payload's digest and that each arrives exactly
once, and re-routes the unfinished work of a replica that dies.  With
``workload.forwarding: orchestrator`` it is also the sender on every edge, over
the connectors ``initialize_orchestrator_connectors`` creates: a stage hands its
output back (here: its digests, standing in for an engine's output queue; the
output itself is deterministic, so the orchestrator rebuilds it and checks them)
and the orchestrator puts it for the next stage.
"""

from __future__ import annotations

import select
import statistics
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..base import OmniConnectorBase
from ..cli.table import render_table
from ..config_loader import load_config_document, load_omni_transfer_config
from ..digest import checksum
from ..errors import ConfigError
from ..initialization import initialize_orchestrator_connectors
from .replicas import Replica, Router, RunFailed
from .stage import put_output
from .workload import Workload, kv_cache, stage_output

Edge = tuple[str, str]
__all__ = ["Run", "RunFailed", "main"]


@dataclass
class EdgeStats:
    """Per request on one edge: (bytes, put + get seconds) of its counted delivery."""

    samples: dict[str, tuple[int, float]] = field(default_factory=dict)

    @property
    def sizes(self) -> list[int]:
        return [size for size, _ in self.samples.values()]

    @property
    def latencies(self) -> list[float]:
        return [seconds for _, seconds in self.samples.values()]

    def row(self, edge: Edge) -> list[str]:
        lat = sorted(self.latencies)
        p99 = lat[min(len(lat) - 1, round(0.99 * (len(lat) - 1)))] if lat else 0.0
        rates = [size / t for size, t in zip(self.sizes, self.latencies, strict=True) if t > 0]
        return [
            f"{edge[0]} -> {edge[1]}",
            str(len(self.sizes)),
            _human(sum(self.sizes)),
            f"{statistics.median(lat) * 1e3:.2f}" if lat else "-",
            f"{p99 * 1e3:.2f}",
            f"{statistics.median(rates) / 1e9:.2f}" if rates else "-",
        ]


def _human(nbytes: float) -> str:
    for unit in ("B", "KiB", "MiB"):
        if nbytes < 1024:
            return f"{nbytes:.0f} {unit}" if unit == "B" else f"{nbytes:.1f} {unit}"
        nbytes /= 1024
    return f"{nbytes:.1f} GiB"


def _coordinator_settings(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"policy", "heartbeat_timeout"}:
        raise ConfigError(f"coordinator must be {{policy: NAME, heartbeat_timeout: SECONDS}}, got {raw!r}")
    timeout = raw.get("heartbeat_timeout", 5.0)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        raise ConfigError(f"coordinator.heartbeat_timeout must be a positive number, got {timeout!r}")
    return {"policy": str(raw.get("policy", "round-robin")), "heartbeat_timeout": float(timeout)}


class Run:
    """The orchestrator of one ``omni run``."""

    def __init__(self, config_path: str, kill_stage: int | None = None) -> None:
        self.config_path = config_path
        doc = load_config_document(config_path) or {}
        workload = doc.get("workload")
        if kill_stage is not None:
            workload = {
                **(workload or {}),
                "kill_replica": {"stage": kill_stage, "after": (workload or {}).get("requests", 8) // 3},
            }
        self.workload = Workload.from_config(workload)
        self.coordinator = _coordinator_settings(doc.get("coordinator"))
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
        self.replicas: dict[str, list[Replica]] = {}
        self.router: Router | None = None
        self.connectors: dict[Edge, OmniConnectorBase] = {}  # forwarding: orchestrator
        self.stats: dict[Edge, EdgeStats] = {e: EdgeStats() for e in self.edges}
        self.expected: dict[tuple[str, Edge], dict[str, Any]] = {}
        self.deliveries: Counter[tuple[str, Edge]] = Counter()
        self.delivered_to: dict[tuple[str, Edge], Replica] = {}
        self.producer: dict[tuple[str, Edge], Replica] = {}
        self.owner: dict[tuple[str, str], Replica] = {}
        self.outputs_sent: Counter[tuple[str, str]] = Counter()
        self.completed: set[tuple[str, str]] = set()
        self.finished: Counter[str] = Counter()
        self.handled: Counter[str] = Counter()
        self.rerouted = 0
        self.killed: Replica | None = None
        self.problems: list[str] = []

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self.workload.forwarding == "orchestrator":
            _, self.connectors = initialize_orchestrator_connectors(self.config_path)
        self.router = Router(self.replicas, self.coordinator)
        for sid in self.stage_ids:
            count = self.workload.replica_count(int(sid))
            self.replicas[sid] = [
                Replica(self.config_path, sid, r, self.router.coordinator_address) for r in range(count)
            ]
        for replica in self._all():
            message = self._next_line(replica, self.workload.timeout_s + 30)
            if message.get("op") != "ready":
                raise RunFailed(f"{replica.label} failed to start: {message.get('error', message)}")
        self.router.wait_registered(timeout=30)

    def stop(self) -> None:
        for replica in self._all():
            replica.stop()
        if self.router is not None:
            self.router.close()
        for connector in self.connectors.values():
            connector.close()

    def _all(self) -> list[Replica]:
        return [r for replicas in self.replicas.values() for r in replicas]

    def _next_line(self, replica: Replica, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while not replica.lines:
            ready, _, _ = select.select([replica.fd], [], [], max(0.0, deadline - time.monotonic()))
            if not ready or not replica.pump():
                code = replica.proc.poll()
                raise RunFailed(
                    f"{replica.label} " + ("did not answer" if code is None else f"exited with code {code}")
                )
        return replica.lines.pop(0)

    # -- routing ----------------------------------------------------------------------
    def _route(self, rid: str, stage: str) -> Replica:
        owner = self.owner.get((rid, stage))
        if owner is None or not owner.alive:
            assert self.router is not None
            owner = self.owner[(rid, stage)] = self.router.pick(stage, rid)
        return owner

    def _submit(self, rid: str) -> None:
        for sid in self.entry:
            self._route(rid, sid).send({"op": "input", "request_id": rid})

    def _resend(self, rid: str, edge: Edge) -> None:
        if self.connectors:
            self._forward(rid, edge[0], only=edge)
            return
        producer = self.producer.get((rid, edge))
        if producer is None or not producer.alive:
            assert self.router is not None
            producer = self.router.pick(edge[0], rid)
        producer.send({"op": "resend", "request_id": rid, "edge": edge})

    def _replica_died(self, dead: Replica) -> None:
        """Re-route every request the dead replica had not finished."""
        dead.alive = False
        for (rid, stage), owner in list(self.owner.items()):
            if owner is not dead or (rid, stage) in self.completed:
                continue
            del self.owner[(rid, stage)]
            self.rerouted += 1
            if stage in self.entry:
                self._route(rid, stage).send({"op": "input", "request_id": rid})
                continue
            for edge in self.in_edges[stage]:
                if self.delivered_to.get((rid, edge)) is dead:  # delivered, but its work died with it
                    self.deliveries[(rid, edge)] -= 1
                    del self.delivered_to[(rid, edge)]
                    self.stats[edge].samples.pop(rid, None)
                if (rid, edge) in self.expected:
                    self._resend(rid, edge)

    # -- the event loop -------------------------------------------------------------------
    def drive(self, progress: bool = True) -> None:
        total, submitted, shown = self.workload.requests, 0, -1
        last_progress = time.monotonic()
        while (done := sum(1 for n in self.finished.values() if n >= len(self.sinks))) < total:
            self._maybe_kill(done)
            while submitted < total and submitted - done < self.workload.in_flight:
                self._submit(f"req-{submitted:06d}")
                submitted += 1
            live = {r.fd: r for r in self._all() if r.alive}
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
            if progress and done != shown:
                _progress(done, total)
                shown = done
        if progress:
            _progress(total, total)
            sys.stderr.write("\n")

    def _maybe_kill(self, done: int) -> None:
        plan = self.workload.kill_replica
        if plan is None or self.killed is not None or done < plan["after"]:
            return
        self.killed = self.replicas[str(plan["stage"])][0]
        self.killed.kill()
        self._replica_died(self.killed)

    def _handle(self, replica: Replica, message: dict[str, Any]) -> None:
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
        self._route(rid, edge[1]).send(
            {"op": "fetch", "request_id": rid, "edge": edge, "metadata": message["metadata"]}
        )

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

    def _complete(self, rid: str, stage: str, replica: Replica) -> None:
        if (rid, stage) not in self.completed:
            self.completed.add((rid, stage))
            self.handled[replica.label.rsplit(" (", 1)[0]] += 1

    def _received(self, replica: Replica, rid: str, edge: Edge, message: dict[str, Any]) -> None:
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
        for rid in (f"req-{i:06d}" for i in range(self.workload.requests)):
            for edge in self.edges:
                if self.deliveries[(rid, edge)] != 1:
                    raise RunFailed(
                        f"edge {edge[0]}->{edge[1]}: request {rid} delivered "
                        f"{self.deliveries[(rid, edge)]} times, expected exactly once"
                    )
        if self.killed is not None and self.router is not None and self.router.hub is not None:
            self._wait_dropped(self.killed)

    def _wait_dropped(self, dead: Replica) -> None:
        assert self.router is not None and self.coordinator is not None
        limit = self.coordinator["heartbeat_timeout"] + 5.0
        deadline = time.monotonic() + limit
        while any(r.input_addr == dead.address for r in self.router.listed(dead.stage_id)):
            if time.monotonic() > deadline:
                raise RunFailed(f"the coordinator still lists killed {dead.label} after {limit:.0f} s")
            time.sleep(0.1)

    def report(self, wall: float) -> str:
        table = render_table(
            ["edge", "requests", "bytes", "put+get p50 ms", "p99 ms", "GB/s (median)"],
            [self.stats[e].row(e) for e in self.edges],
        )
        lines = [table, ""]
        if any(len(r) > 1 for r in self.replicas.values()):
            rows = [[label, str(n)] for label, n in sorted(self.handled.items())]
            lines += [render_table(["replica", "requests handled"], rows), ""]
        if self.killed is not None:
            lines.append(
                f"killed {self.killed.label}; {self.rerouted} unfinished request(s) re-routed"
                + ("; the coordinator dropped it from its list" if self.coordinator else "")
            )
        if self.connectors:
            lines.append("the orchestrator put every stage's output on its edges (workload.forwarding: orchestrator)")
        lines.append(
            f"{self.workload.requests} requests through {len(self.stage_ids)} stages in {wall:.2f} s; "
            "every payload arrived intact, exactly once."
        )
        return "\n".join(lines)


def _progress(done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} requests")
    sys.stderr.flush()


def main(config_path: str, *, progress: bool = True, kill_stage: int | None = None) -> int:
    """Run the pipeline in ``config_path``; 0 when every payload arrived intact exactly once, else 1."""
    try:
        run = Run(config_path, kill_stage)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"omni run: {exc}", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        run.start()
        run.drive(progress=progress)
        run.verify()
    except (RunFailed, ImportError, ValueError, OSError) as exc:
        print(f"\nomni run: FAILED: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        run.stop()
    print(run.report(time.monotonic() - started))
    return 0
