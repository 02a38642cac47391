"""Partitions across test hosts: the chaos driver's pipeline with its stages and servers on network namespaces
(``omni_core.testing.hosts``), and a host cut off for 1-5 s (seeded) during a put or a get instead of a kill.

A partition takes the host's link down (packets lost, nothing refused) and a timer heals it; nothing is restarted.
A read that found nothing while the network was cut is read again once it healed, for up to :data:`REREAD_S` (the
clients reconnect to their servers meanwhile): an acknowledged payload is lost only if that fails too.  Recovery
is the time from the heal until a request put after it was acknowledged and read intact (for the coordinator's
host: until a list it published after the heal names every consumer).
Each put and get is timed: the longest must stay within the connector's configured bounds (``Setup.*_bound_s``),
else a call hung.
"""

from __future__ import annotations

import random
import threading
import time
from typing import Any

from .backends import CoordinatorServer, MooncakeMasterServer, YuanrongWorker
from .chaos import PHASES, ChaosRun, KillPoint, Scenario
from .pipeline import GET_TIMEOUT_S, Setup
from .stage import StageProcess

#: How long a host stays cut off: seeded, uniformly in this range.
CUT_S = (1.0, 5.0)
#: Process start-up, a JSON line each way: what a call may take beyond its connector's bound.
SLACK_S = 1.0
_MiB = 1 << 20
#: The Mooncake Store's bound on one put or one read (``transfer_timeout_s``); the master's object leases.
STORE_TRANSFER_S = 3.0
#: The openYuanrong client's timeouts (a value of 4 MiB or more is written in two requests).
YUANRONG_TIMEOUTS = {"connect_timeout_ms": 2000, "req_timeout_ms": 2000}
YUANRONG_REQ_S = YUANRONG_TIMEOUTS["req_timeout_ms"] / 1000
#: A TransferEngine receiver gives up a pull whose sender left a probe unanswered for 1 s (probes every 1 s).
TE_SILENCE_S = 2.0
MOONCAKE_ENV = {"MC_TRANSFER_TIMEOUT": "5"}
#: How long after a heal a read that found nothing during the cut is tried again.
REREAD_S = 10.0
#: The openYuanrong worker deletes values this long after their put: a put given up during a cut may still be
#: stored once the network heals, after its retry was read and deleted.
YUANRONG_TTL_S = 30


def plan_partitions(seed: int, scenario: str, requests: int, count: int) -> list[KillPoint]:
    """``count`` cuts from ``seed``, away from both ends, each during a put or a get, for 1-5 s."""
    rng = random.Random(f"{seed}/{scenario}/partitions")
    indices = sorted(rng.sample(range(requests // 10, requests - requests // 10), count))
    return [KillPoint(i, rng.choice(PHASES[:2]), round(rng.uniform(0.0, 5.0), 2), round(rng.uniform(*CUT_S), 1))
            for i in indices]  # fmt: skip


class PartitionRun(ChaosRun):
    """One partition scenario: cuts instead of kills (see the module's docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cuts: list[list[float]] = []  # [cut at, healed at (inf while cut)] in time.monotonic()
        self._healer: threading.Timer | None = None

    def make_plan(self, seed: int, requests: int, count: int) -> list[KillPoint]:
        return plan_partitions(seed, self.scenario.slug, requests, count)

    @property
    def strikes_coordinator(self) -> bool:
        coordinator = self.setup.coordinator
        return coordinator is not None and self.setup.cut is not None and coordinator.address == self.setup.cut.address

    def _coordinator_recovered(self, marker: Any) -> bool:
        """Recovered once a list the coordinator published after the heal (``marker``: its wall time) names every
        consumer replica."""
        return bool(self.pipeline.coordinator_lists_all(None, after=marker))

    def _before_strike(self) -> None:
        self._wait_healed()  # one cut at a time; the call struck is timed from its command

    def _strike(self, kill: KillPoint, busy: StageProcess | None) -> None:
        """Cut the scenario's host off ``kill.delay_ms`` after the command, for ``kill.duration_s``."""
        time.sleep(kill.delay_ms / 1000)
        host = self.setup.cut
        cut = [time.monotonic(), float("inf")]
        host.partition()
        self._cuts.append(cut)

        def heal() -> None:
            host.heal()
            cut[1] = time.monotonic()
            with self._lock:
                self._unrecovered.append((cut[1], time.time()))

        self._healer = threading.Timer(kill.duration_s, heal)
        self._healer.start()

    def _wait_healed(self) -> None:
        if self._healer is not None:
            self._healer.join()

    def _read_again(self, answer: dict[str, Any], in_doubt: bool, started: float) -> bool:
        """A read that found nothing while the network was cut is tried again once it healed."""
        if any(start < time.monotonic() and end >= started for start, end in self._cuts):
            self._wait_healed()
            return True
        return super()._read_again(answer, in_doubt, started)

    def _reread(self, index: int, command: dict[str, Any]) -> dict[str, Any]:
        """Read again until found, for up to :data:`REREAD_S`."""
        deadline = time.monotonic() + REREAD_S
        while not (answer := super()._reread(index, command)).get("found") and time.monotonic() < deadline:
            time.sleep(0.2)
        return answer

    def _wait_for_coordinator(self, limit_s: float = 15.0) -> None:
        self._wait_healed()
        super()._wait_for_coordinator(limit_s)

    def _shutdown(self) -> None:
        self._wait_healed()
        super()._shutdown()


# -- where everything runs ------------------------------------------------------------------------------------
def _hosts() -> Any:
    from omni_core.testing.hosts import NamespaceHosts

    return NamespaceHosts(3)


def _on_hosts(build: Any) -> Any:
    """Run ``build(hosts)``; the hosts are removed if it fails (otherwise the setup's ``stop`` removes them)."""
    hosts = _hosts()
    try:
        return build(hosts)
    except BaseException:
        hosts.close()
        raise


def _mooncake_store(cut: str) -> Setup:
    """The master on host 1, the producer on host 2 and the consumer on host 3, each contributing a segment."""

    def build(hosts: Any) -> Setup:
        master = MooncakeMasterServer(host=hosts.host(1))
        extra = {"metadata_server": "P2PHANDSHAKE", "master": master.address, "segment": 96 * _MiB,
                 "localbuf": 32 * _MiB, "get_timeout_s": 0.01, "setup_timeout_s": 10,
                 "transfer_timeout_s": STORE_TRANSFER_S, "quarantine_s": 8.0}  # fmt: skip
        places = {"producer": hosts.host(2), "consumer": hosts.host(3)}
        return Setup({"name": "MooncakeStoreConnector", "extra": extra}, consume="cleanup", backend=master,
                     held=("pool_used_bytes", "quarantined_bytes"), env=MOONCAKE_ENV, hosts=hosts, places=places,
                     cut={"master": hosts.host(1), **places}[cut], put_bound_s=STORE_TRANSFER_S + SLACK_S,
                     get_bound_s=GET_TIMEOUT_S + STORE_TRANSFER_S + SLACK_S)  # fmt: skip

    return _on_hosts(build)


def _mooncake_te(cut: str) -> Setup:
    """The sender (producer) on host 1, the receiver (consumer) on host 2."""

    def build(hosts: Any) -> Setup:
        base = {"protocol": "tcp", "memory_pool_size": 64 * _MiB, "quarantine_s": 8.0}
        places = {"producer": hosts.host(1), "consumer": hosts.host(2)}
        return Setup({"name": "MooncakeTransferEngineConnector", "extra": {**base, "role": "sender", "zmq_port": 0}},
                     consumer_spec={"name": "MooncakeTransferEngineConnector", "extra": {**base, "role": "receiver"}},
                     held=("pool_used_bytes", "quarantined_bytes"), env=MOONCAKE_ENV, hosts=hosts, places=places,
                     cut=places[cut], put_bound_s=SLACK_S, get_bound_s=GET_TIMEOUT_S + TE_SILENCE_S + SLACK_S)

    return _on_hosts(build)


def _yuanrong(cut: str) -> Setup:
    """The worker (and its metastore) on host 1; the producer on host 2 and the consumer on host 3 over TCP."""

    def build(hosts: Any) -> Setup:
        worker = YuanrongWorker(shared_memory_mb=512, host=hosts.host(1))
        extra = {"host": worker.host, "port": worker.port, "get_sub_timeout_ms": 0, "ttl_seconds": YUANRONG_TTL_S,
                 **YUANRONG_TIMEOUTS}
        places = {"producer": hosts.host(2), "consumer": hosts.host(3)}
        return Setup({"name": "YuanrongConnector", "extra": extra}, consume="cleanup", backend=worker, hosts=hosts,
                     notes=[f"`ttl_seconds: {YUANRONG_TTL_S}`: a put that timed out during a cut may be stored once it "
                            "heals, after its retry was read and deleted (openyuanrong-datasystem 0.8.1 sends what it "
                            "queued); the worker deletes it at its TTL"],
                     places=places, cut={"worker": hosts.host(1), **places}[cut],
                     put_bound_s=2 * YUANRONG_REQ_S + SLACK_S, get_bound_s=GET_TIMEOUT_S + YUANRONG_REQ_S + SLACK_S)

    return _on_hosts(build)


def _coordinator() -> Setup:
    """The coordinator on host 1; the producer and two consumer replicas on host 2, over shared memory (the data
    path does not cross the cut: what is measured is the replicas' registration and the published list)."""

    def build(hosts: Any) -> Setup:
        namespace = f"relnet{random.randrange(1 << 24):06x}"
        spec = {"name": "SharedMemoryConnector", "extra": {"namespace": namespace, "sweep_interval_s": 1}}
        places = {"producer": hosts.host(2), "consumer": hosts.host(2)}
        coordinator = CoordinatorServer(heartbeat_timeout=1.0, host=hosts.host(1))
        return Setup(spec, namespace=namespace, coordinator=coordinator, consumers=2, hosts=hosts, places=places,
                     cut=hosts.host(1), put_bound_s=SLACK_S, get_bound_s=GET_TIMEOUT_S + SLACK_S)

    return _on_hosts(build)


def _scenario(slug: str, transport: str, target: str, setup: Any, doubt: str = "") -> Scenario:
    return Scenario(slug, transport, target, setup, doubt_reason=doubt, kind="partition")


def partition_scenarios(read_then_delete_doubt: str) -> list[Scenario]:
    """Every cross-host backend with each host it depends on cut off (``read_then_delete_doubt``: why a store read
    whose delete went through before the answer is not read again)."""
    doubt = read_then_delete_doubt
    return [
        _scenario("netsplit-mooncake-store-producer", "Mooncake Store", "producer's host",
                  lambda: _mooncake_store("producer"), doubt),
        _scenario("netsplit-mooncake-store-consumer", "Mooncake Store", "consumer's host",
                  lambda: _mooncake_store("consumer"), doubt),
        _scenario("netsplit-mooncake-store-master", "Mooncake Store", "Mooncake master's host",
                  lambda: _mooncake_store("master"), doubt),
        _scenario("netsplit-mooncake-te-sender", "Mooncake TransferEngine", "sender's host",
                  lambda: _mooncake_te("producer")),
        _scenario("netsplit-mooncake-te-receiver", "Mooncake TransferEngine", "receiver's host",
                  lambda: _mooncake_te("consumer")),
        _scenario("netsplit-yuanrong-producer", "openYuanrong KV", "producer's host", lambda: _yuanrong("producer"),
                  doubt),
        _scenario("netsplit-yuanrong-consumer", "openYuanrong KV", "consumer's host", lambda: _yuanrong("consumer"),
                  doubt),
        _scenario("netsplit-yuanrong-worker", "openYuanrong KV", "Yuanrong worker's host", lambda: _yuanrong("worker"),
                  doubt),
        _scenario("netsplit-coordinator", "coordinator (2 consumer replicas, shared memory)", "coordinator's host",
                  _coordinator),
    ]
