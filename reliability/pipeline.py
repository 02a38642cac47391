"""A two-stage pipeline in processes: one producer and N consumer replicas, each a stage child with its own
connector, and, with a coordinator, replicas registered there and routed by a hub's published list."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from .backends import Backend, CoordinatorServer
from .stage import StageProcess

#: How long a consumer waits for a payload before it is declared not there (unless the scenario's setup says).
GET_TIMEOUT_S = 2.0


@dataclass
class Setup:
    """What a scenario runs on: the connector every stage builds, and the servers behind it."""

    spec: dict[str, Any]
    consume: str = "none"  # "cleanup" for connectors whose reads do not consume
    consumer_spec: dict[str, Any] | None = None  # when consumers need another config (e.g. a receiver role)
    held: tuple[str, ...] = ()  # health() fields counting bytes a stage still holds (pool used, quarantined)
    env: dict[str, str] = field(default_factory=dict)  # extra environment of the stage processes
    namespace: str | None = None  # the shared-memory namespace, to tell our /dev/shm entries apart
    backend: Backend | None = None
    coordinator: CoordinatorServer | None = None
    consumers: int = 1
    notes: list[str] = field(default_factory=list)
    get_timeout_s: float = GET_TIMEOUT_S  # how long a consumer waits for a payload before it is declared not there
    # partitions across test hosts: the hosts, where the producer and the consumers run, the host cut off, and the
    # longest a put and a get may take by the connector's configured bounds (a call past it hung)
    hosts: Any = None
    places: dict[str, Any] = field(default_factory=dict)  # "producer" / "consumer" -> TestHost
    cut: Any = None
    put_bound_s: float | None = None
    get_bound_s: float | None = None

    def stop(self) -> None:
        for server in (self.coordinator, self.backend):
            if server is not None:
                server.stop()
        if self.hosts is not None:
            self.hosts.close()

    @property
    def servers(self) -> list[Backend]:
        return [s for s in (self.backend, self.coordinator) if s is not None]


class Pipeline:
    """The producer and consumer processes of one scenario; restarts any of them after a kill."""

    def __init__(self, setup: Setup) -> None:
        self.setup = setup
        self.pids: list[int] = []
        self.hub: Any = None
        if setup.coordinator is not None:
            from omni_coordinator import OmniCoordClientForHub

            self.hub = OmniCoordClientForHub(setup.coordinator.pub)
        self.producer = self._start(0, 0)
        self.consumers = [self._start(1, i) for i in range(setup.consumers)]
        self._turn = itertools.count()

    def _start(self, stage: int, replica: int) -> StageProcess:
        spec = self.setup.consumer_spec if stage == 1 and self.setup.consumer_spec else self.setup.spec
        config: dict[str, Any] = {"spec": spec, "consume": self.setup.consume}
        if self.setup.coordinator is not None:
            config["coordinator"] = {"router": self.setup.coordinator.router, "stage_id": stage,
                                     "address": f"stage-{stage}/replica-{replica}"}
        place = self.setup.places.get("consumer" if stage == 1 else "producer")
        process = StageProcess(config, env=self.setup.env, prefix=place.exec_prefix if place is not None else [])
        self.pids.append(process.pid)
        return process

    def restart_producer(self) -> None:
        self.producer.kill()
        self.producer = self._start(0, 0)

    def restart_consumer(self, index: int) -> None:
        self.consumers[index].kill()
        self.consumers[index] = self._start(1, index)

    def pick_consumer(self) -> int:
        """The consumer for the next read: round robin over the coordinator's list (or over all, without one)."""
        if self.hub is None:
            return next(self._turn) % len(self.consumers)
        listed = sorted(r.input_addr for r in self.hub.get_replicas_for_stage(1).replicas)
        if not listed:  # a restarted coordinator has not heard from the replicas yet: any live one will do
            return next(self._turn) % len(self.consumers)
        return int(listed[next(self._turn) % len(listed)].rsplit("-", 1)[1])

    def coordinator_lists_all(self, epoch_before: int | None, after: float = 0.0) -> bool:
        """True once a coordinator run other than ``epoch_before`` (or, with ``after``, a list the coordinator
        published after that ``time.time()``) lists every consumer replica."""
        current = self.hub.get_replicas_for_stage(1)
        fresh = current.timestamp > after if after else current.epoch != epoch_before
        return fresh and len(current.replicas) == len(self.consumers)

    def close(self) -> None:
        for process in [self.producer, *self.consumers]:
            process.close()
        if self.hub is not None:
            self.hub.close()
