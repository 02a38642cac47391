"""Resource limits: /dev/shm nearly full, a pool exhausted, a low descriptor limit, and peers that send garbage
or nothing to every socket we bind.  Each leaves the process healthy and the error counted."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator

import numpy as np
import pytest
import zmq
from secutil import close_all, garbage_peers, mooncake_te, silent_peers

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.testing import require

ZMTP_GREETING_THEN_GARBAGE = b"\xff" + b"\0" * 8 + b"\x7f" + os.urandom(54)
UNVERSIONED_GARBAGE = b"\x05" + os.urandom(63)


def eventually(check: Callable[[], bool], limit: float, what: str) -> None:
    deadline = time.monotonic() + limit
    while not check():
        assert time.monotonic() < deadline, f"not within {limit} s: {what}"
        time.sleep(0.05)


# -- /dev/shm nearly full ----------------------------------------------------------------------------


@pytest.fixture
def small_tmpfs() -> Iterator[str]:
    """A 4 MiB tmpfs with 3 MiB already taken: shared memory that is nearly full, for real."""
    require(os.geteuid() == 0, "mounting a tmpfs needs root")
    directory = tempfile.mkdtemp(prefix="omni-security-shm-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", directory], check=True)
    try:
        with open(os.path.join(directory, "filler"), "wb") as filler:
            os.posix_fallocate(filler.fileno(), 0, 3 << 20)
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)
        os.rmdir(directory)


def test_nearly_full_shared_memory_refuses_what_does_not_fit_and_recovers(small_tmpfs: str) -> None:
    spec = ConnectorSpec("SharedMemoryConnector", {"namespace": "full", "shm_dir": small_tmpfs,
                                                   "arena_bytes": 256 << 10, "keep_idle_bytes": 0})
    with OmniConnectorFactory.create_connector(spec) as producer, OmniConnectorFactory.create_connector(spec) as reader:
        assert producer.put("0", "1", "too-big", np.zeros(2 << 20, dtype=np.uint8)) == (False, 0, None)
        assert producer.health()["errors"] == 1 and producer.health()["status"] == "healthy"
        assert producer.put("0", "1", "fits", np.arange(1000))[0]
        assert np.array_equal(reader.get("0", "1", "fits")[0], np.arange(1000))
        os.unlink(os.path.join(small_tmpfs, "filler"))
        assert producer.put("0", "1", "now-fits", np.ones(2 << 20, dtype=np.uint8))[0]
        assert reader.get("0", "1", "now-fits")[0].sum() == 2 << 20
        assert producer.health()["errors"] == 1
    assert os.listdir(small_tmpfs) == []


# -- pools exhausted -----------------------------------------------------------------------------------


def test_a_full_yuanrong_worker_refuses_a_put_it_cannot_hold_and_stays_healthy(yuanrong_worker) -> None:
    """Past its memory the worker evicts older values (its evictable write mode); a value larger than all of
    it is refused, counted, and the connector keeps working."""
    extra = {"host": yuanrong_worker.host, "port": yuanrong_worker.port, "get_sub_timeout_ms": 0}
    with OmniConnectorFactory.create_connector(ConnectorSpec("YuanrongConnector", extra)) as connector:
        assert connector.put("0", "1", "huge", np.zeros(200 << 20, dtype=np.uint8)) == (False, 0, None)
        health = connector.health()
        assert health["errors"] == 1 and health["status"] == "healthy" and "Out of memory" in health["last_error"]
        assert connector.put("0", "1", "small", b"still works")[0]
        assert connector.get("0", "1", "small")[0] == b"still works"


def test_a_full_transfer_engine_pool_refuses_the_put_and_stays_healthy(te_sender) -> None:
    import torch

    assert te_sender.put("0", "1", "half", torch.zeros(768 << 10, dtype=torch.uint8))[0]
    assert te_sender.put("0", "1", "more", torch.zeros(512 << 10, dtype=torch.uint8)) == (False, 0, None)
    health = te_sender.health()
    assert health["errors"] == 1 and health["status"] == "healthy"
    te_sender.cleanup("half")
    assert te_sender.put("0", "1", "more", torch.zeros(512 << 10, dtype=torch.uint8))[0]


# -- a low descriptor limit ----------------------------------------------------------------------------

#: Run in the child after its set-up: leave it only ``spare`` more descriptors than it has open.
_LIMIT_FDS = """
import os, resource
def limit_fds(spare):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (len(os.listdir("/proc/self/fd")) + spare, hard))
    return lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
"""

_SHM_UNDER_FD_LIMIT = _LIMIT_FDS + r"""
import json, sys
import numpy as np
from omni_core import ConnectorSpec, OmniConnectorFactory
spec = ConnectorSpec("SharedMemoryConnector", {"namespace": sys.argv[1], "arena_bytes": 65536, "keep_idle_bytes": 0})
producer, reader = OmniConnectorFactory.create_connector(spec), OmniConnectorFactory.create_connector(spec)
lift = limit_fds(6)
puts = [producer.put("0", "1", f"k{i}", np.full(100_000, i, dtype=np.uint8))[0] for i in range(12)]
gets = [reader.get("0", "1", f"k{i}") is not None for i in range(12) if puts[i]]
under = {"puts": puts, "gets": gets, "producer": producer.health(), "reader": reader.health()}
lift()
later = [int(reader.get("0", "1", f"k{i}")[0][0]) for i in range(12) if puts[i]]
again = producer.put("0", "1", "again", np.zeros(100_000, dtype=np.uint8))[0]
producer.close(); reader.close()
print(json.dumps({**under, "later": later, "again": again, "status": reader.health()["status"]}))
"""


def test_shared_memory_under_a_low_descriptor_limit_counts_failures_and_loses_nothing() -> None:
    namespace = f"fd{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-c", _SHM_UNDER_FD_LIMIT, namespace], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    acked = [i for i, ok in enumerate(result["puts"]) if ok]
    assert 0 < len(acked) < 12 and result["producer"]["errors"] >= 12 - len(acked), result
    assert result["producer"]["status"] == result["reader"]["status"] == "healthy"
    assert result["reader"]["errors"] == result["gets"].count(False) > 0, "every slab it could not map is counted"
    assert result["later"] == acked, "once descriptors are free, every acknowledged payload is read intact"
    assert result["again"]
    assert not [n for n in os.listdir("/dev/shm") if namespace in n]


_COORDINATOR_UNDER_FD_LIMIT = _LIMIT_FDS + r"""
import json, sys
from omni_coordinator import OmniCoordinator
coordinator = OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=5.0)
limit_fds(8)
print(json.dumps({"router": coordinator.router_zmq_addr}), flush=True)
for line in sys.stdin:
    listed = [r.input_addr for r in coordinator.get_active_replicas().replicas]
    print(json.dumps({**coordinator.stats(), "listed": listed}), flush=True)
coordinator.close()
"""


def test_a_coordinator_out_of_descriptors_keeps_serving_its_peers_and_counts_failed_accepts() -> None:
    from omni_coordinator import OmniCoordClientForStage

    proc = subprocess.Popen([sys.executable, "-c", _COORDINATOR_UNDER_FD_LIMIT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None

    def stats() -> dict:
        proc.stdin.write("\n")
        proc.stdin.flush()
        return json.loads(proc.stdout.readline())

    router = json.loads(proc.stdout.readline())["router"]
    port = int(router.rsplit(":", 1)[1])
    first = OmniCoordClientForStage(router, "tcp://first:1", "tcp://first:2", 0, heartbeat_interval=0.1)
    flood, late = [], None
    try:
        eventually(lambda: stats()["listed"] == ["tcp://first:1"], 10.0, "the first replica registered")
        flood = silent_peers(port, 30)
        eventually(lambda: stats()["accept_failures"] > 0, 10.0, "failed accepts counted")
        seen = stats()["events"]
        eventually(lambda: stats()["events"] > seen + 3, 10.0, "the first replica still heard while out of fds")
        close_all(flood)
        late = OmniCoordClientForStage(router, "tcp://late:1", "tcp://late:2", 0, heartbeat_interval=0.1)
        eventually(lambda: "tcp://late:1" in stats()["listed"], 10.0, "a new replica registers once fds are free")
    finally:
        close_all(flood)
        for client in (first, late):
            if client is not None:
                client.close()
        proc.stdin.close()
        proc.wait(15)
        proc.stdout.close()
    assert proc.returncode == 0


# -- garbage and silence on every socket we bind ------------------------------------------------------------


@pytest.mark.parametrize(
    "where", ["coordinator ROUTER", "coordinator PUB", "Yuanrong TE side channel", "Mooncake TE side channel"]
)
def test_garbage_and_silent_peers_are_dropped_counted_and_harmless(where: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from omni_coordinator import OmniCoordClientForHub, OmniCoordClientForStage, OmniCoordinator, coordinator
    from omni_yuanrong import te_control

    monkeypatch.setattr(coordinator, "HANDSHAKE_TIMEOUT_MS", 300)
    monkeypatch.setattr(te_control, "HANDSHAKE_TIMEOUT_MS", 300)
    if where.startswith("Mooncake"):
        from omni_mooncake import side_channel

        monkeypatch.setattr(side_channel, "HANDSHAKE_TIMEOUT_MS", 300)
    closers: list[Callable[[], object]] = []
    peers = []
    try:
        if where.startswith("coordinator"):
            server = OmniCoordinator("tcp://127.0.0.1:0", "tcp://127.0.0.1:0", heartbeat_timeout=5.0)
            closers.append(server.close)
            address = server.router_zmq_addr if where.endswith("ROUTER") else server.pub_zmq_addr
            counters = server.stats
        elif where.startswith("Mooncake"):
            sender = mooncake_te("sender", zmq_port=0)
            closers.append(sender.close)
            address = f"tcp://127.0.0.1:{sender.zmq_port}"

            def counters() -> dict:
                health = sender.health()
                assert health["status"] == "healthy"
                return {"refused_peers": health["refused_peers"], "malformed": health["malformed_messages"]}

        else:
            from omni_yuanrong.te_connector import YuanrongTransferEngineConnector
            from omni_yuanrong.te_engine import real_engine

            config = {"role": "sender", "host": "127.0.0.1", "memory_pool_device": "cpu", "memory_pool_size": 1 << 20,
                      "device_name": "npu:0"}
            sender = YuanrongTransferEngineConnector(config, engine_factory=real_engine)
            closers.append(sender.close)
            address = f"tcp://127.0.0.1:{sender.zmq_port}"

            def counters() -> dict:
                health = sender.health()
                assert health["status"] == "healthy"
                return {"refused_peers": health["control_refused_peers"], "malformed": health["control_errors"]}

        port = int(address.rsplit(":", 1)[1])
        peers += silent_peers(port, 5) + garbage_peers(port, 5, ZMTP_GREETING_THEN_GARBAGE)
        peers += garbage_peers(port, 5, UNVERSIONED_GARBAGE)  # libzmq waits for more of these: held, not counted
        if not where.endswith("PUB"):
            _send_garbage_frames(address)
        eventually(lambda: counters()["refused_peers"] >= 10, 10.0, "silent and garbage peers dropped and counted")
        if not where.endswith("PUB"):
            eventually(lambda: counters()["malformed"] >= 2, 10.0, "well-framed garbage counted as malformed")
        if where.startswith("coordinator"):
            hub = OmniCoordClientForHub(server.pub_zmq_addr)
            closers.append(hub.close)
            stage = OmniCoordClientForStage(server.router_zmq_addr, "tcp://ok:1", "tcp://ok:2", 0)
            closers.append(stage.close)
            eventually(lambda: [r.input_addr for r in hub.get_replica_list().replicas] == ["tcp://ok:1"], 10.0,
                       "a real stage and hub are served meanwhile")
        elif where.startswith("Mooncake"):
            import torch

            ok, _, metadata = sender.put("0", "1", "k", torch.arange(1000))
            with mooncake_te("receiver") as receiver:
                buffer, _ = receiver.get("0", "1", "k", metadata)
                assert ok and torch.equal(buffer.payload(), torch.arange(1000)), "a real receiver is served meanwhile"
                buffer.release()
        else:
            from omni_yuanrong.te_control import QUERY_INFO, decode_info, encode_request, request

            context = zmq.Context()
            closers.append(lambda: context.destroy(linger=0))
            reply = request(context, f"127.0.0.1:{port}", encode_request(QUERY_INFO, "nothing"), 5000)
            assert decode_info(reply, "nothing") is None
    finally:
        close_all(peers)
        for close in reversed(closers):
            close()


def _send_garbage_frames(address: str) -> None:
    """A peer that speaks ZMTP properly but sends nonsense in it: two frames of garbage."""
    context = zmq.Context()
    try:
        dealer = context.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 1000)
        dealer.connect(address)
        dealer.send(b"\x00not json, not msgpack\xff")
        dealer.send_multipart([b"two", b"frames"])
        dealer.close()
    finally:
        context.term()

