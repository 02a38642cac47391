"""How shared-memory segments are protected: 0600 slabs of this user only, no symlink followed, and a sweep
that only ever unlinks this user's entries of processes that are gone."""

from __future__ import annotations

import os
import shutil
import stat
import uuid
from collections.abc import Iterator

import numpy as np
import pytest

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.testing import require
from omni_shm import names

SHM = "/dev/shm"
NOBODY = 65534


@pytest.fixture
def namespace() -> Iterator[str]:
    namespace = f"sec{uuid.uuid4().hex[:8]}"
    yield namespace
    for name in os.listdir(SHM):  # whatever a failing test planted
        if name.startswith(f"omni-{namespace}-"):
            os.unlink(os.path.join(SHM, name))


def _connector(namespace: str) -> object:
    return OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", {"namespace": namespace}))


def _dead_owner() -> names.Owner:
    return names.Owner(names.current_owner().pidns, 2**22 + 11, 1)  # beyond pid_max: certainly not running


def _plant_copy(namespace: str, producer_key: str, entry_key: str, uid: int | None, as_symlink: bool = False) -> str:
    """Copy the slab holding ``producer_key``'s payload under a dead owner's slab name and point ``entry_key`` at it.

    The copy's region is a valid, unread payload; only its owner (``uid``) or its being a symlink differs.
    """
    location = names.parse_target(os.readlink(os.path.join(SHM, names.key_entry_name(namespace, producer_key))))
    assert location is not None
    slab = f"omni-{namespace}-{_dead_owner().tag}-s{uuid.uuid4().int % 1000}"
    copy = os.path.join(SHM, slab)
    if as_symlink:
        shutil.copyfile(os.path.join(SHM, location.slab), copy + ".real")
        os.symlink(copy + ".real", copy)
    else:
        shutil.copyfile(os.path.join(SHM, location.slab), copy)
        if uid is not None:
            os.chown(copy, uid, uid)
    os.symlink(names.target(slab, location.offset, location.generation),
               os.path.join(SHM, names.key_entry_name(namespace, entry_key)))
    return copy


def test_slabs_are_0600_regular_files_of_this_user(namespace: str) -> None:
    with _connector(namespace) as producer:
        assert producer.put("0", "1", "small", b"x")[0] and producer.put("0", "1", "big", np.zeros(1 << 21))[0]
        slabs = [n for n in os.listdir(SHM) if n.startswith(f"omni-{namespace}-") and names.parse_owned(n)]
        assert len(slabs) == 2
        for name in slabs:
            info = os.lstat(os.path.join(SHM, name))
            assert stat.S_ISREG(info.st_mode) and stat.S_IMODE(info.st_mode) == 0o600 and info.st_uid == os.geteuid()


def test_a_payload_in_another_users_file_is_never_read(namespace: str) -> None:
    require(os.geteuid() == 0, "planting a file of another user needs root")
    with _connector(namespace) as producer, _connector(namespace) as reader:
        producer.put("0", "1", "k", np.arange(100))
        _plant_copy(namespace, "k", "mine", uid=None)
        _plant_copy(namespace, "k", "theirs", uid=NOBODY)
        assert np.array_equal(reader.get("0", "1", "mine")[0], np.arange(100))  # the same copy, owned by us: read
        assert reader.get("0", "1", "theirs") is None


def test_a_symlink_planted_under_a_slab_name_is_not_followed(namespace: str) -> None:
    with _connector(namespace) as producer, _connector(namespace) as reader:
        producer.put("0", "1", "k", np.arange(100))
        copy = _plant_copy(namespace, "k", "linked", uid=None, as_symlink=True)
        before = open(copy + ".real", "rb").read()
        assert reader.get("0", "1", "linked") is None
        assert reader.health()["errors"] == 1  # refused (O_NOFOLLOW) and counted
        assert open(copy + ".real", "rb").read() == before
        os.unlink(copy + ".real")


def test_the_sweep_unlinks_only_this_users_entries_of_dead_processes(namespace: str) -> None:
    require(os.geteuid() == 0, "planting a file of another user needs root")
    dead = _dead_owner().tag
    theirs, ours = (os.path.join(SHM, f"omni-{namespace}-{dead}-s{n}") for n in (1, 2))
    with _connector(namespace) as live:
        live.put("0", "1", "alive", b"payload")
        live_entries = {n for n in os.listdir(SHM) if n.startswith(f"omni-{namespace}-")}
        for path, uid in ((theirs, NOBODY), (ours, os.geteuid())):
            with open(path, "wb") as out:
                out.write(b"\0" * 4096)
            os.chown(path, uid, uid)
        with _connector(namespace) as sweeper:  # sweeps at start-up
            assert sweeper.health()["orphans_reclaimed"] == 1
            assert os.path.exists(theirs) and not os.path.exists(ours)
            assert live_entries <= set(os.listdir(SHM))
            assert sweeper.get("0", "1", "alive")[0] == b"payload"
    os.unlink(theirs)
