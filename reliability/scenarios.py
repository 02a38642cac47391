"""The chaos scenarios: each transport with each component it depends on killed, one scenario per target."""

from __future__ import annotations

import uuid

from .backends import CoordinatorServer, YuanrongWorker
from .chaos import Scenario
from .pipeline import Setup

#: Short client timeouts, so a dead server shows up in seconds rather than the libraries' 60 s.
_CLIENT_TIMEOUTS = {"connect_timeout_ms": 2000, "req_timeout_ms": 2000}

SHM_PRODUCER_LOSS = (
    "a payload lives in its producer's slab; a dead producer's slabs are swept (and its unread payloads "
    "withdrawn) by the next connector that starts or sweeps, here the restarted producer"
)
CONSUME_ONCE_DOUBT = (
    "reads are consume-once: the killed reader had already claimed the payload (its key entry is removed by the "
    "claim), and a claim is never handed to another reader, so a read is at most once, never twice"
)
READ_THEN_DELETE_DOUBT = (
    "reads do not consume, so the consumer deletes a payload once it has read it (as a stage does); a reader "
    "killed after that delete but before it answered had the payload, and it is not read twice"
)
YUANRONG_WORKER_LOSS = (
    "values live only in the worker's shared memory (the local worker keeps no spill or replica): a worker "
    "restart starts empty, so every acknowledged payload not yet read is gone"
)


def _shm() -> Setup:
    namespace = f"rel{uuid.uuid4().hex[:8]}"
    spec = {"name": "SharedMemoryConnector", "extra": {"namespace": namespace, "sweep_interval_s": 1}}
    return Setup(spec, namespace=namespace)


def _yuanrong() -> Setup:
    worker = YuanrongWorker(shared_memory_mb=512)
    extra = {"host": worker.host, "port": worker.port, "get_sub_timeout_ms": 0, **_CLIENT_TIMEOUTS}
    return Setup({"name": "YuanrongConnector", "extra": extra}, consume="cleanup", backend=worker)


def _coordinated_shm() -> Setup:
    setup = _shm()
    setup.coordinator = CoordinatorServer(heartbeat_timeout=1.0)
    setup.consumers = 2
    return setup


SCENARIOS: list[Scenario] = [
    Scenario("shm-producer", "shared memory", "producer", _shm, SHM_PRODUCER_LOSS),
    Scenario("shm-consumer", "shared memory", "consumer", _shm, doubt_reason=CONSUME_ONCE_DOUBT),
    Scenario("yuanrong-producer", "openYuanrong KV", "producer", _yuanrong),
    Scenario("yuanrong-consumer", "openYuanrong KV", "consumer", _yuanrong, doubt_reason=READ_THEN_DELETE_DOUBT),
    Scenario("yuanrong-worker", "openYuanrong KV", YuanrongWorker.name, _yuanrong, YUANRONG_WORKER_LOSS),
    Scenario("coordinator", "coordinator (2 consumer replicas, shared memory)", CoordinatorServer.name,
             _coordinated_shm),
]
