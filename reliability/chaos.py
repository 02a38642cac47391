"""The chaos driver: push requests through a two-stage pipeline and SIGKILL one component at seeded points.

Each request is put by the producer and read by a consumer, with up to ``window`` requests put ahead of
their reads (as a pipeline keeps several requests in flight).  A kill point names a request, a phase --
``put`` (while the producer puts it), ``get`` (while a consumer reads it) or ``idle`` (right after its
put) -- and a delay after the command was sent; the killed component is restarted at once, as a supervisor
would.  Every payload is checked byte for byte by the consumer; after each delivery one more read must find
nothing (a duplicate otherwise).
"""

from __future__ import annotations

import random
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_core.remote import ChildGone

from .leaks import LeakProbe, Leaks, shm_bytes
from .pipeline import Pipeline, Setup
from .stage import StageProcess

PHASES = ("put", "get", "idle")
#: Puts refused in a row (backend down) before a request is given up.
MAX_PUT_ATTEMPTS = 20
#: How long the stages get, after the last request, to release memory quarantined after failed transfers.
SETTLE_S = 45.0
_SIZES = (4096, 16384, 65536, 262144)
_LARGE = 5 << 20  # above the Yuanrong connector's 4 MiB switch to its zero-copy write path


@dataclass(frozen=True)
class KillPoint:
    """Where the chaos strikes: during ``phase`` of request ``request``, ``delay_ms`` after the command (for a
    partition: for ``duration_s``)."""

    request: int
    phase: str
    delay_ms: float
    duration_s: float = 0.0


def plan_kills(seed: int, scenario: str, requests: int, kills: int) -> list[KillPoint]:
    """``kills`` points from ``seed`` (the same seed always gives the same points), away from both ends."""
    rng = random.Random(f"{seed}/{scenario}")
    indices = sorted(rng.sample(range(requests // 10, requests - requests // 10), kills))
    return [KillPoint(i, rng.choice(PHASES), round(rng.uniform(0.0, 5.0), 2)) for i in indices]


@dataclass(frozen=True)
class Scenario:
    """A transport, the component that gets killed, and how to set up what it runs on."""

    slug: str
    transport: str
    target: str  # "producer", "consumer", or the name of a server (setup.backend / setup.coordinator)
    setup: Callable[[], Any]  # a Setup (a Ray cluster for "ray-node")
    loss_reason: str = ""  # why this backend cannot promise acknowledged payloads survive this kill, if so
    doubt_reason: str = ""  # why a payload whose reader was killed mid-read is not read again, if so
    kind: str = "kill"  # "kill": SIGKILL and restart the target; "partition": cut the target host off a while;
    # "ray-node": kill a Ray node during omni run (reliability.raynode)


@dataclass
class ScenarioResult:
    """The figures of one scenario (see RELIABILITY.md for what each column means)."""

    slug: str
    transport: str
    target: str
    seed: int
    requests: int
    kills: list[KillPoint]
    acked: int = 0
    refused: int = 0
    delivered: int = 0
    lost: int = 0
    lost_in_doubt: int = 0
    duplicates: int = 0
    corrupt: int = 0
    recover_s: list[float] = field(default_factory=list)
    leaks: Leaks = field(default_factory=Leaks)
    seconds: float = 0.0
    loss_reason: str = ""
    doubt_reason: str = ""
    notes: list[str] = field(default_factory=list)
    lost_keys: list[str] = field(default_factory=list)  # results.json only
    kind: str = "kill"
    longest_put_s: float = 0.0  # the longest put and get calls (a partition scenario's bounds: setup.*_bound_s)
    longest_get_s: float = 0.0
    put_bound_s: float | None = None
    get_bound_s: float | None = None


class ChaosRun:
    """One scenario: the pipeline, the kill plan, and the running tally."""

    def __init__(self, scenario: Scenario, seed: int, requests: int, kills: int, window: int) -> None:
        self.scenario = scenario
        self.window = window
        self.plan = {(k.phase, k.request): k for k in self.make_plan(seed, requests, kills)}
        rng = random.Random(f"{seed}/{scenario.slug}/sizes")
        self.sizes = [_LARGE if rng.random() < 0.01 else rng.choice(_SIZES) for _ in range(requests)]
        self.result = ScenarioResult(scenario.slug, scenario.transport, scenario.target, seed, requests,
                                     sorted(self.plan.values(), key=lambda k: k.request),
                                     loss_reason=scenario.loss_reason, doubt_reason=scenario.doubt_reason,
                                     kind=scenario.kind)  # fmt: skip
        self.setup: Setup = scenario.setup()
        self.result.put_bound_s, self.result.get_bound_s = self.setup.put_bound_s, self.setup.get_bound_s
        self._lock = threading.Lock()  # _unrecovered: partitions heal on a timer thread
        self.probe = LeakProbe(self.setup.namespace)
        self.pipeline = Pipeline(self.setup)
        self._unrecovered: list[tuple[float, Any]] = []  # (kill time, coordinator epoch then)
        self._keys: list[tuple[str, int]] = []
        self._put_times: dict[int, tuple[float, float]] = {}  # request -> (put sent, put acknowledged)

    def make_plan(self, seed: int, requests: int, count: int) -> list[KillPoint]:
        return plan_kills(seed, self.scenario.slug, requests, count)

    # -- the run ----------------------------------------------------------------------------
    def run(self) -> ScenarioResult:
        started = time.monotonic()
        pending: deque[tuple[int, str, Any]] = deque()
        try:
            for i, size in enumerate(self.sizes):
                key = f"{self.scenario.slug}-{self.result.seed}-{i:05d}"
                self._keys.append((key, size))
                acked, metadata = self._put(i, key, size)
                if ("idle", i) in self.plan:
                    self._strike(self.plan["idle", i], None)
                if acked:
                    pending.append((i, key, metadata))
                while len(pending) >= self.window or (pending and i == len(self.sizes) - 1):
                    self._get(*pending.popleft())
                self._check_coordinator_recovery()
                _progress(self.scenario.slug, i + 1, len(self.sizes))
            self._wait_for_coordinator()
            self.result.leaks = self._leaks()
        finally:
            self._shutdown()
        self.result.seconds = time.monotonic() - started
        self.result.notes += self.setup.notes
        return self.result

    def _put(self, i: int, key: str, size: int) -> tuple[bool, Any]:
        """Put request ``i`` until acknowledged; ``(True, metadata)``, or ``(False, None)`` if refused every time."""
        kill = self.plan.get(("put", i))
        if kill is not None:
            self._before_strike()
        for _ in range(MAX_PUT_ATTEMPTS):
            producer = self.pipeline.producer
            sent = time.monotonic()
            try:
                producer.send({"op": "put", "key": key, "size": size})
                if kill is not None:
                    self._strike(kill, producer)
                    kill = None
                answer = producer.read()
            except ChildGone:  # the producer died mid-put: withdraw whatever it may have published, put again
                self.pipeline.producer.call({"op": "cleanup", "key": key})
                continue
            self.result.longest_put_s = max(self.result.longest_put_s, time.monotonic() - sent)
            if answer.get("ok"):
                self.result.acked += 1
                self._put_times[i] = (sent, time.monotonic())
                return True, answer["metadata"]
            self.result.refused += 1
            time.sleep(0.2)
        self.result.notes.append(f"request {i} was refused {MAX_PUT_ATTEMPTS} times and given up")
        return False, None

    def _get(self, i: int, key: str, metadata: Any) -> None:
        """Read request ``i`` and tally the outcome; a consumer killed mid-read leaves the payload in doubt."""
        size = self.sizes[i]
        kill = self.plan.get(("get", i))
        if kill is not None:
            self._before_strike()
        index = self.pipeline.pick_consumer()
        consumer = self.pipeline.consumers[index]
        command = {"op": "get", "key": key, "size": size, "metadata": metadata, "timeout": self.setup.get_timeout_s}
        in_doubt = False
        started = time.monotonic()
        try:
            consumer.send(command)
            if kill is not None:
                self._strike(kill, consumer)
            answer = consumer.read()
        except ChildGone:
            in_doubt = True
            answer = {"found": False}
        if not in_doubt:
            self.result.longest_get_s = max(self.result.longest_get_s, time.monotonic() - started)
        if not answer.get("found") and self._read_again(answer, in_doubt, started):  # now that all is back up
            answer = self._reread(index, command)
        if not answer.get("found"):
            if in_doubt:
                self.result.lost_in_doubt += 1
            else:
                self.result.lost += 1
            self.result.lost_keys.append(key)
            return
        if not answer.get("intact"):
            self.result.corrupt += 1
            return
        self.result.delivered += 1
        self._recovered_by_delivery(i, time.monotonic() - started)
        if self.pipeline.consumers[index].call({"op": "probe", "key": key, "metadata": metadata}).get("found"):
            self.result.duplicates += 1

    def _read_again(self, answer: dict[str, Any], in_doubt: bool, started: float) -> bool:
        """Whether a read that found nothing is tried once more: its reader was killed, or it failed."""
        return in_doubt or bool(answer.get("error"))

    def _reread(self, index: int, command: dict[str, Any]) -> dict[str, Any]:
        """The read tried again (by consumer ``index``)."""
        return self.pipeline.consumers[index].call(command)

    # -- the chaos ----------------------------------------------------------------------------
    def _before_strike(self) -> None:
        """Called before the command a strike is planned in is sent."""

    def _strike(self, kill: KillPoint, busy: StageProcess | None) -> None:
        """Wait the kill point's delay, SIGKILL the scenario's target, restart it."""
        time.sleep(kill.delay_ms / 1000)
        epoch = self.pipeline.hub.get_replica_list().epoch if self.pipeline.hub is not None else None
        killed_at = time.monotonic()
        target = self.scenario.target
        if target == "producer":
            self.pipeline.restart_producer()
        elif target == "consumer":
            consumers = self.pipeline.consumers
            victim = consumers.index(busy) if busy in consumers else kill.request % len(consumers)
            self.pipeline.restart_consumer(victim)
        else:
            server = next(s for s in self.setup.servers if s.name == target)
            server.kill()
            server.restart()
        with self._lock:
            self._unrecovered.append((killed_at, epoch))

    def _recovered_by_delivery(self, i: int, read_s: float) -> None:
        """Request ``i``, put after a kill and now read intact, ends that kill's recovery: the time from the kill
        to its acknowledgement plus its read (waiting out reads of payloads lost in the kill is not counted)."""
        if self.strikes_coordinator:
            return
        sent, acked = self._put_times[i]
        with self._lock:
            recovered = [(killed_at, epoch) for killed_at, epoch in self._unrecovered if killed_at <= sent]
            self._unrecovered = [k for k in self._unrecovered if k not in recovered]
        self.result.recover_s += [acked - killed_at + read_s for killed_at, _ in recovered]

    @property
    def strikes_coordinator(self) -> bool:
        """Whether the chaos hits the coordinator (recovery is then its list, not a delivery)."""
        return self.setup.coordinator is not None and self.scenario.target == self.setup.coordinator.name

    def _coordinator_recovered(self, marker: Any) -> bool:
        """A killed coordinator has recovered once its successor (another epoch than ``marker``) lists every
        consumer replica again."""
        return bool(self.pipeline.coordinator_lists_all(marker))

    def _check_coordinator_recovery(self) -> None:
        if not self.strikes_coordinator:
            return
        with self._lock:
            still = []
            for struck_at, marker in self._unrecovered:
                if self._coordinator_recovered(marker):
                    self.result.recover_s.append(time.monotonic() - struck_at)
                else:
                    still.append((struck_at, marker))
            self._unrecovered = still

    def _wait_for_coordinator(self, limit_s: float = 15.0) -> None:
        deadline = time.monotonic() + limit_s
        while self._unrecovered and time.monotonic() < deadline:
            time.sleep(0.05)
            self._check_coordinator_recovery()
        if self._unrecovered and self.strikes_coordinator:
            self.result.notes.append(f"{len(self._unrecovered)} coordinator strike(s) not recovered within {limit_s} s")

    # -- afterwards --------------------------------------------------------------------------
    def _leaks(self) -> Leaks:
        """Close everything, then count what is left; payloads still readable, and bytes the stages report
        holding (``setup.held``), count as pool bytes."""
        readable, held = self._left_after_settling()
        pids = list(self.pipeline.pids) + [s.pid for s in self.setup.servers]
        ports = [p for s in self.setup.servers for p in s.ports]
        self._shutdown()
        slabs = shm_bytes(self.setup.namespace) if self.setup.namespace is not None else 0
        leaks = self.probe.measure(pids, ports, sum(size for _, size in readable) + sum(held.values()) + slabs)
        if readable:
            leaks.details.append(f"{len(readable)} payload(s) still readable: {', '.join(k for k, _ in readable[:5])}")
        leaks.details += [f"{name} = {n}" for name, n in held.items() if n]
        if slabs:
            leaks.details.append(f"{slabs} bytes of slabs left in /dev/shm")
        return leaks

    def _held(self) -> dict[str, int]:
        consumers = {f"consumer {i}": c for i, c in enumerate(self.pipeline.consumers)}
        stages = {"producer": self.pipeline.producer, **consumers}
        return {f"{name}: {field}": int(health.get(field) or 0)
                for name, stage in stages.items() for health in [stage.call({"op": "health"})]
                for field in self.setup.held}

    def _readable(self, keys: list[tuple[str, int]]) -> list[tuple[str, int]]:
        reader = self.pipeline.consumers[0]
        return [(key, size) for key, size in keys if reader.call({"op": "probe", "key": key}).get("found")]

    def _left_after_settling(self) -> tuple[list[tuple[str, int]], dict[str, int]]:
        """Payloads still readable and bytes the stages hold, once quarantined memory (and values a backend keeps
        until their TTL) had SETTLE_S to be released; the time it took is noted."""
        started = time.monotonic()
        readable, held = self._readable(self._keys), self._held()
        while (readable or any(held.values())) and time.monotonic() - started < SETTLE_S:
            time.sleep(0.5)
            readable, held = self._readable(readable), self._held()
        if time.monotonic() - started >= 1.0:
            state = "still held" if readable or any(held.values()) else "released"
            self.result.notes.append(f"pool bytes {state} {time.monotonic() - started:.0f} s after the last request")
        return readable, held

    def _shutdown(self) -> None:
        if self.pipeline is not None:
            self.pipeline.close()
            self.pipeline = None  # type: ignore[assignment]
            self.setup.stop()


def _progress(slug: str, done: int, total: int) -> None:
    if done % max(1, total // 10) == 0 or done == total:
        print(f"  {slug}: {done}/{total} requests", file=sys.stderr, flush=True)
