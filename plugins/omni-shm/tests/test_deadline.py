"""get_with_deadline: sleeps until the key appears (inotify) or the deadline passes."""

from __future__ import annotations

import os
import threading
import time

from children import Child
from conftest import SHM

from omni_shm import names
from omni_shm.watch import EntryWatch


def test_times_out_at_the_deadline(make_connector) -> None:
    deadline = time.monotonic() + 0.3
    assert make_connector().get_with_deadline("0", "1", "never", None, deadline=deadline) is None
    assert time.monotonic() >= deadline, "it must not give up before the deadline"


def test_past_deadline_still_reads_a_present_payload(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    _, size, _ = producer.put("0", "1", "here", 1)
    assert consumer.get_with_deadline("0", "1", "here", None, deadline=time.monotonic() - 1) == (1, size)


def test_wakes_for_a_late_producer_thread(make_connector) -> None:
    producer, consumer = make_connector(), make_connector()
    timer = threading.Timer(0.2, producer.put, args=("0", "1", "late", {"v": 1}))
    timer.start()
    try:
        result = consumer.get_with_deadline("0", "1", "late", None, deadline=time.monotonic() + 30)
    finally:
        timer.join()
    assert result is not None and result[0] == {"v": 1}


def test_wakes_for_a_late_producer_process(make_connector, namespace) -> None:
    consumer = make_connector()
    with Child({"namespace": namespace}) as writer:
        command = {"op": "put", "key": "late", "payload": {"kind": "dict", "n": 8, "value": 3}}
        timer = threading.Timer(0.2, writer.call, args=(command,))
        timer.start()
        try:
            result = consumer.get_with_deadline("0", "1", "late", None, deadline=time.monotonic() + 30)
        finally:
            timer.join()
    assert result is not None and result[0]["value"] == 3


def test_entry_watch_wakes_only_for_its_name(namespace) -> None:
    name = names.key_entry_name(namespace, "watched")
    other = os.path.join(SHM, names.key_entry_name(namespace, "other"))
    with EntryWatch(SHM, name) as watch:
        os.symlink("x", other)
        try:
            assert not watch.wait(time.monotonic() + 0.1)
            os.symlink("x", os.path.join(SHM, name))
            assert watch.wait(time.monotonic() + 30)
        finally:
            os.unlink(other)
            os.unlink(os.path.join(SHM, name))
