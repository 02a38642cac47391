"""The chaos scenarios: each transport with each component it depends on killed, one scenario per target; then
each cross-host transport with each host it depends on cut off (``reliability.netsplit``); then a Ray node killed
during ``omni run --launcher ray`` (``reliability.raynode``)."""

from __future__ import annotations

import uuid

from .backends import CoordinatorServer, MooncakeMasterServer, YuanrongWorker
from .chaos import Scenario
from .netsplit import partition_scenarios
from .pipeline import Setup
from .raynode import ray_cluster

#: Short client timeouts, so a dead server shows up in seconds rather than the libraries' 60 s.
_CLIENT_TIMEOUTS = {"connect_timeout_ms": 2000, "req_timeout_ms": 2000}
_MiB = 1 << 20

CONSUME_ONCE_DOUBT = (
    "reads are consume-once: the killed reader had already taken the payload (shared memory: its claim removes the "
    "key entry; TransferEngine: the sender frees it once pulled), and a consume-once payload is never handed to a "
    "second reader, so a read happens at most once"
)
READ_THEN_DELETE_DOUBT = (
    "reads do not consume, so the consumer deletes a payload once it has read it (as a stage does); a reader "
    "killed after that delete but before it answered had the payload, and it is not read twice"
)
MOONCAKE_STORE_PEER_LOSS = (
    "every client contributes a segment of the pool and the master places each object (one replica, the "
    "default `replica_num: 1`) in any live segment: objects that landed in the killed process's segment die "
    "with it. With `replica_num: 2` nothing is lost (the rows below)"
)
MOONCAKE_MASTER_LOSS = (
    "the master keeps every object's metadata in memory only: a restarted master knows no key (the clients "
    "re-mount their segments, but what was in them is unreachable). Mooncake's high-availability options "
    "(below) need etcd"
)
MOONCAKE_TE_SENDER_LOSS = (
    "a payload waits in its sender's registered pool until a receiver pulls it; a dead sender's pool, and every "
    "payload in it, is gone"
)
MOONCAKE_TIMEOUT_NOTE = (
    "MC_TRANSFER_TIMEOUT=5 in the stages: the engine's bound on one transfer, and so how long memory a failed "
    "transfer may still write stays quarantined (about 15 s here, 40 s by default)"
)
MOONCAKE_ENV = {"MC_TRANSFER_TIMEOUT": "5"}
YUANRONG_WORKER_LOSS = (
    "values live only in the worker's shared memory (the connector's default `write_mode: evict`; this worker "
    "also runs the cluster's metastore): a worker restart starts empty, so every acknowledged payload not yet "
    "read is gone. With a second-level cache and `write_mode: write_through` nothing is lost (the next row)"
)
YUANRONG_L2_TTL_S = 30
YUANRONG_L2_NOTE = (
    f"the stages use `write_mode: write_through` and `ttl_seconds: {YUANRONG_L2_TTL_S}`; the killed worker has a "
    "second-level cache on disk (`--l2_cache_type=distributed_disk`) and joins the metastore of a second worker that "
    "is not killed. The L2 cache keeps values after their delete, and a restarted worker serves them again until "
    "their TTL: openyuanrong-datasystem 0.8.1, see the omni-yuanrong README"
)
MOONCAKE_REPLICA_NOTE = (
    "replica_num 2 (each object in the producer's and the consumer's segment); reads wait up to 15 s: one that "
    "picks the dead client's replica fails until the master drops that client (`--client_ttl`, 10 s) and is "
    "tried again"
)


def _shm() -> Setup:
    namespace = f"rel{uuid.uuid4().hex[:8]}"
    spec = {"name": "SharedMemoryConnector", "extra": {"namespace": namespace, "sweep_interval_s": 1}}
    return Setup(spec, namespace=namespace)


def _yuanrong(l2_cache: bool = False) -> Setup:
    worker = YuanrongWorker(shared_memory_mb=512, l2_cache=l2_cache)
    extra = {"host": worker.host, "port": worker.port, "get_sub_timeout_ms": 0, **_CLIENT_TIMEOUTS}
    if l2_cache:
        extra.update(write_mode="write_through", ttl_seconds=YUANRONG_L2_TTL_S)
    return Setup({"name": "YuanrongConnector", "extra": extra}, consume="cleanup", backend=worker,
                 notes=[YUANRONG_L2_NOTE] if l2_cache else [])


def _mooncake_store(replica_num: int = 1) -> Setup:
    master = MooncakeMasterServer()
    extra = {"host": "127.0.0.1", "metadata_server": "P2PHANDSHAKE", "master": master.address, "segment": 96 * _MiB,
             "localbuf": 32 * _MiB, "get_timeout_s": 0.01, "setup_timeout_s": 10, "replica_num": replica_num}
    setup = Setup({"name": "MooncakeStoreConnector", "extra": extra}, consume="cleanup", backend=master,
                  held=("pool_used_bytes", "quarantined_bytes"), env=MOONCAKE_ENV, notes=[MOONCAKE_TIMEOUT_NOTE])
    if replica_num > 1:
        setup.get_timeout_s = 15.0
        setup.notes.append(MOONCAKE_REPLICA_NOTE)
    return setup


def _replicated_mooncake_store() -> Setup:
    return _mooncake_store(replica_num=2)


def _mooncake_te() -> Setup:
    base = {"host": "127.0.0.1", "protocol": "tcp", "memory_pool_size": 32 * _MiB}
    return Setup({"name": "MooncakeTransferEngineConnector", "extra": {**base, "role": "sender", "zmq_port": 0}},
                 consumer_spec={"name": "MooncakeTransferEngineConnector", "extra": {**base, "role": "receiver"}},
                 held=("pool_used_bytes", "quarantined_bytes"), env=MOONCAKE_ENV, notes=[MOONCAKE_TIMEOUT_NOTE])


def _coordinated_shm() -> Setup:
    setup = _shm()
    setup.coordinator = CoordinatorServer(heartbeat_timeout=1.0)
    setup.consumers = 2
    return setup


SCENARIOS: list[Scenario] = [
    Scenario("shm-producer", "shared memory", "producer", _shm),
    Scenario("shm-consumer", "shared memory", "consumer", _shm, doubt_reason=CONSUME_ONCE_DOUBT),
    Scenario("yuanrong-producer", "openYuanrong KV", "producer", _yuanrong),
    Scenario("yuanrong-consumer", "openYuanrong KV", "consumer", _yuanrong, doubt_reason=READ_THEN_DELETE_DOUBT),
    Scenario("yuanrong-worker", "openYuanrong KV", YuanrongWorker.name, _yuanrong, YUANRONG_WORKER_LOSS),
    Scenario("yuanrong-worker-l2", "openYuanrong KV, L2 cache write-through", YuanrongWorker.name,
             lambda: _yuanrong(l2_cache=True)),
    Scenario("mooncake-store-producer", "Mooncake Store", "producer", _mooncake_store, MOONCAKE_STORE_PEER_LOSS,
             READ_THEN_DELETE_DOUBT),
    Scenario("mooncake-store-consumer", "Mooncake Store", "consumer", _mooncake_store, MOONCAKE_STORE_PEER_LOSS,
             READ_THEN_DELETE_DOUBT),
    Scenario("mooncake-store-replicated-producer", "Mooncake Store, replica_num 2", "producer",
             _replicated_mooncake_store, doubt_reason=READ_THEN_DELETE_DOUBT),
    Scenario("mooncake-store-replicated-consumer", "Mooncake Store, replica_num 2", "consumer",
             _replicated_mooncake_store, doubt_reason=READ_THEN_DELETE_DOUBT),
    Scenario("mooncake-store-master", "Mooncake Store", MooncakeMasterServer.name, _mooncake_store,
             MOONCAKE_MASTER_LOSS, READ_THEN_DELETE_DOUBT),
    Scenario("mooncake-te-producer", "Mooncake TransferEngine", "producer", _mooncake_te, MOONCAKE_TE_SENDER_LOSS),
    Scenario("mooncake-te-consumer", "Mooncake TransferEngine", "consumer", _mooncake_te,
             doubt_reason=CONSUME_ONCE_DOUBT),
    Scenario("coordinator", "coordinator (2 consumer replicas, shared memory)", CoordinatorServer.name,
             _coordinated_shm),
    *partition_scenarios(READ_THEN_DELETE_DOUBT),
    Scenario("ray-node", "omni run --launcher ray (RayConnector, a talker replica per worker node)",
             "a worker node (its raylet)", ray_cluster, kind="ray-node"),
]
