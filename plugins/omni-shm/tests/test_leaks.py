"""Nothing leaks: crashed readers and writers, failed puts and reads, reused keys, races, close."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import tempfile
import threading

import pytest
import torch
from children import Child
from conftest import SHM

from omni_core.testing import eventually
from omni_shm import names


def entries_of(namespace: str, directory: str = SHM) -> set[str]:
    return {n for n in os.listdir(directory) if n.startswith(f"omni-{namespace}-")}


def owned_by(pid: int, namespace: str) -> set[str]:
    return {n for n in entries_of(namespace) if (p := names.parse_owned(n)) and p[0].pid == pid}


def test_consumer_killed_while_holding_a_payload(make_connector, namespace) -> None:
    producer = make_connector()
    assert producer.put("0", "1", "held", torch.ones(1 << 16))[0]
    with Child({"namespace": namespace, "zero_copy": True}) as reader:
        answer = reader.call({"op": "get", "key": "held", "hold": True})
        assert answer["found"] and answer["uniform"]
        producer.reap_consumed()
        assert producer.health()["pending"] == 1, "a payload being read must not be reclaimed"
        reader.kill()
    assert producer.reap_consumed() >= 1
    assert producer.health()["pending"] == 0


def test_a_killed_producers_unread_payloads_stay_readable_until_read(make_connector, namespace) -> None:
    """A producer SIGKILLed right after its puts: its slabs are adopted, a consumer in another process reads every
    payload intact, and the next sweep removes the slabs: nothing is left."""
    payloads = [{"kind": "tensor", "n": 1 << 20, "value": 1}, {"kind": "dict", "n": 10, "value": 2}]
    with Child({"namespace": namespace}) as writer:
        for i, payload in enumerate(payloads):
            assert writer.call({"op": "put", "key": f"orphan-{i}", "payload": payload})["ok"]
        assert len(owned_by(writer.pid, namespace)) == 2  # an arena and a slab of its own for the 4 MiB tensor
        writer.kill()
    sweeper = make_connector(sweep_interval_s=0)
    assert sweeper.get("0", "1", "some-other-key") is None  # any put/get runs the (due) sweep
    assert len(entries_of(namespace)) == 4 and sweeper.health()["orphans_reclaimed"] == 0
    with Child({"namespace": namespace}) as reader:
        for i, payload in enumerate(payloads):
            answer = reader.call({"op": "get", "key": f"orphan-{i}", "timeout": 2})
            assert answer["found"] and answer["uniform"] and answer["value"] == payload["value"], answer
            assert answer["kind"] == payload["kind"] and answer["n"] == payload["n"]
    assert sweeper.get("0", "1", "some-other-key") is None  # (the reader's own sweeps may have come first)
    assert not entries_of(namespace)


def test_a_killed_producers_unread_payloads_go_at_their_ttl(make_connector, namespace) -> None:
    with Child({"namespace": namespace}) as writer:
        assert writer.call({"op": "put", "key": "orphan", "payload": {"kind": "dict", "n": 10, "value": 1}})["ok"]
        writer.kill()
    survivor = make_connector(sweep_interval_s=0, ttl_seconds=0.2)
    # each get sweeps: once the payload is past its ttl it is withdrawn and its slab removed
    eventually(lambda: survivor.get("0", "1", "some-other-key") is None and not entries_of(namespace), 10,
               "the dead producer's payload gone after its ttl")
    assert survivor.health()["orphans_reclaimed"] == 2
    assert survivor.get("0", "1", "orphan") is None


def test_live_producer_is_never_swept(make_connector, namespace) -> None:
    with Child({"namespace": namespace}) as writer:
        assert writer.call({"op": "put", "key": "alive", "payload": {"kind": "dict", "n": 10, "value": 7}})["ok"]
        before = entries_of(namespace)
        other = make_connector(sweep_interval_s=0)
        other.reap_consumed()
        assert entries_of(namespace) == before
        assert other.health()["orphans_reclaimed"] == 0
        assert other.get("0", "1", "alive")[0]["value"] == 7


def test_recycled_pid_does_not_keep_an_owner_alive(make_connector, namespace) -> None:
    """Names carry the owner's start time: this pid with another start time is a dead owner."""
    me = names.current_owner()
    impostor = names.Owner(me.pidns, me.pid, me.start + 1)
    slab = f"omni-{namespace}-{impostor.tag}-s0"
    mine = names.slab_name(namespace)
    entry = os.path.join(SHM, names.key_entry_name(namespace, "recycled"))
    for name in (slab, mine):
        with open(os.path.join(SHM, name), "wb") as f:
            f.write(bytes(4096))
    os.symlink(names.Location(slab, 0, 1).target(), entry)
    try:
        make_connector(ttl_seconds=0)  # its payload is not adopted: past its ttl
        assert not os.path.lexists(os.path.join(SHM, slab)) and not os.path.lexists(entry)
        assert os.path.exists(os.path.join(SHM, mine)), "a live owner's slab must stay"
    finally:
        os.unlink(os.path.join(SHM, mine))


def test_other_users_entries_are_never_touched(make_connector, namespace) -> None:
    dead = names.Owner(names.current_owner().pidns, 2**22 + 7, 1)  # beyond pid_max: certainly not running
    path = os.path.join(SHM, f"omni-{namespace}-{dead.tag}-s0")
    open(path, "wb").close()
    os.chown(path, 65534, 65534)
    try:
        make_connector()
        assert os.path.exists(path)
    finally:
        os.unlink(path)


@pytest.fixture
def tiny_tmpfs() -> str:
    """A 1 MiB tmpfs, to fill up for real."""
    directory = tempfile.mkdtemp(prefix="omni-shm-enospc-")
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", directory], check=True)
    try:
        yield directory
    finally:
        subprocess.run(["umount", directory], check=True)
        os.rmdir(directory)


def test_full_shm_fails_the_put_cleanly(make_connector, tiny_tmpfs) -> None:
    connector = make_connector(shm_dir=tiny_tmpfs, arena_bytes=64 << 10)
    assert connector.put("0", "1", "too-big", torch.zeros(1 << 20)) == (False, 0, None)
    assert connector.health()["errors"] == 1
    assert os.listdir(tiny_tmpfs) == [], "a failed put leaves nothing behind"
    ok, _, _ = connector.put("0", "1", "fits", torch.arange(100))
    assert ok
    assert torch.equal(connector.get("0", "1", "fits")[0], torch.arange(100))
    connector.close()
    assert os.listdir(tiny_tmpfs) == []


def test_corrupt_payload_is_dropped_and_reclaimed(make_connector, namespace) -> None:
    producer, consumer = make_connector(), make_connector()
    assert producer.put("0", "1", "corrupt", {"a": list(range(100))})[0]
    entry = os.path.join(SHM, names.key_entry_name(namespace, "corrupt"))
    location = names.parse_target(os.readlink(entry))
    fd = os.open(os.path.join(SHM, location.slab), os.O_RDWR)
    try:
        os.pwrite(fd, b"XXXX", location.offset + 64)  # the frame's magic
    finally:
        os.close(fd)
    assert consumer.get("0", "1", "corrupt") is None
    assert consumer.health()["errors"] == 1
    assert not os.path.lexists(entry)
    assert producer.reap_consumed() == 1
    assert producer.health()["pending"] == 0


def test_cleanup_never_removes_a_newer_generation(make_connector) -> None:
    first, second, consumer = make_connector(), make_connector(), make_connector()
    first.put("0", "1", "reused", "generation 1")
    assert consumer.get("0", "1", "reused")[0] == "generation 1"
    second.put("0", "1", "reused", "generation 2")
    first.cleanup("reused")
    assert consumer.get("0", "1", "reused")[0] == "generation 2"


def test_put_replaces_an_unconsumed_payload(make_connector) -> None:
    producer, other, consumer = make_connector(), make_connector(), make_connector()
    producer.put("0", "1", "k", "old")
    producer.put("0", "1", "k", "newer")
    other.put("0", "1", "k", "newest")
    assert consumer.get("0", "1", "k")[0] == "newest"
    assert consumer.get("0", "1", "k") is None
    producer.reap_consumed()
    other.reap_consumed()
    assert producer.health()["pending"] == other.health()["pending"] == 0


def test_two_producer_processes_racing_on_one_key(make_connector, namespace) -> None:
    consumer = make_connector()
    payload = {"kind": "dict", "n": 4096, "value": 0}
    with Child({"namespace": namespace}) as a, Child({"namespace": namespace}) as b:
        for child in (a, b):
            child.send({"op": "put_many", "key": "contested", "payload": payload, "count": 200})
        values = []
        done = threading.Event()
        answers = []

        def wait_for_producers() -> None:
            answers.extend(child.read() for child in (a, b))
            done.set()

        waiter = threading.Thread(target=wait_for_producers)
        waiter.start()
        while True:
            # read before the get: a miss while a put replaces the entry (it is briefly absent) is not the end
            finished = done.is_set()
            result = consumer.get("0", "1", "contested")
            if result is not None:
                obj = result[0]
                assert obj["blob"] == bytes([obj["value"] % 256]) * 4096, "a torn payload"
                values.append(obj["value"])
            elif finished:
                break
        waiter.join()
        assert [answer["ok"] for answer in answers] == [True, True]
        assert values[-1] == 199, "the last payload published is the last one read"
    assert not entries_of(namespace)


def test_threads_racing_on_one_key(make_connector) -> None:
    producers, consumer = [make_connector() for _ in range(3)], make_connector()
    errors: list[BaseException] = []

    def put_many(producer) -> None:
        try:
            for i in range(100):
                assert producer.put("0", "1", "contested", torch.full((256,), float(i)))[0]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=put_many, args=(p,)) for p in producers]
    for thread in threads:
        thread.start()
    values: list[float] = []
    while True:
        finished = not any(thread.is_alive() for thread in threads)
        result = consumer.get("0", "1", "contested")
        if result is not None:
            assert bool((result[0] == result[0][0]).all()), "a torn payload"
            values.append(float(result[0][0]))
        elif finished:
            break
    for thread in threads:
        thread.join()
    assert not errors, errors[0]
    assert values[-1] == 99, "the last payload published is the last one read"
    for producer in producers:
        producer.reap_consumed()
    assert sum(p.health()["pending"] for p in producers) == 0


def test_slabs_are_private_to_their_user(make_connector, namespace) -> None:
    producer = make_connector()
    producer.put("0", "1", "small", b"x")
    producer.put("0", "1", "big", torch.zeros(1 << 21))
    slabs = [n for n in entries_of(namespace) if names.parse_owned(n)]
    assert len(slabs) == 2
    for name in slabs:
        assert stat.S_IMODE(os.stat(os.path.join(SHM, name)).st_mode) == 0o600


def test_unconsumed_payloads_of_a_closed_connector_are_gone(make_connector, namespace) -> None:
    with Child({"namespace": namespace}) as writer:
        assert writer.call({"op": "put", "key": "left", "payload": {"kind": "tensor", "n": 1000, "value": 3}})["ok"]
    assert not entries_of(namespace)
    assert make_connector().get("0", "1", "left") is None


def test_reader_closed_while_views_are_held(make_connector) -> None:
    producer, reader = make_connector(), make_connector(zero_copy=True)
    producer.put("0", "1", "view", torch.arange(1000, dtype=torch.float64))
    tensor, _ = reader.get("0", "1", "view")
    reader.close()
    assert float(tensor.sum()) == sum(range(1000))
    producer.reap_consumed()
    assert producer.health()["pending"] == 1
    del tensor
    producer.reap_consumed()
    assert producer.health()["pending"] == 0


def test_exit_without_close_removes_everything(namespace) -> None:
    code = (
        "from omni_shm.connector import SharedMemoryConnector as C\n"
        f"c = C({{'namespace': {namespace!r}}})\n"
        "c.put('0', '1', 'k', b'bye')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
    assert not entries_of(namespace)
