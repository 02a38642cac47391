"""Zero-copy reads: views into shared memory, released explicitly or when the last view is dropped."""

from __future__ import annotations

import gc
import os

import numpy as np
import torch
from conftest import SHM

from omni_shm import names


def frame_bytes(namespace: str, key: str, producer) -> tuple[str, int]:
    """Slab path and frame offset of the payload published under ``key`` (read before it is consumed)."""
    location = names.parse_target(os.readlink(os.path.join(SHM, names.key_entry_name(namespace, key))))
    return os.path.join(SHM, location.slab), location.offset + 64


def test_views_alias_shared_memory(make_connector, namespace) -> None:
    producer, reader = make_connector(), make_connector(zero_copy=True)
    producer.put("0", "1", "alias", torch.zeros(16, dtype=torch.int32))
    path, frame = frame_bytes(namespace, "alias", producer)
    tensor, _ = reader.get("0", "1", "alias")
    tensor[:] = 7
    fd = os.open(path, os.O_RDONLY)
    try:
        assert bytes(torch.full((16,), 7, dtype=torch.int32).numpy().tobytes()) in os.pread(fd, 4096, frame)
    finally:
        os.close(fd)


def test_copies_are_independent(make_connector, namespace) -> None:
    producer, reader = make_connector(), make_connector()
    producer.put("0", "1", "copy", torch.zeros(16, dtype=torch.int32))
    tensor, _ = reader.get("0", "1", "copy")
    producer.reap_consumed()
    assert producer.health()["pending"] == 0, "a copied payload frees its region at once"
    producer.put("0", "1", "next", torch.ones(16, dtype=torch.int32))  # may reuse the region
    assert int(tensor.sum()) == 0


def test_region_is_held_until_the_last_view_is_dropped(make_connector) -> None:
    producer, reader = make_connector(), make_connector(zero_copy=True)
    payload = {"a": torch.arange(10), "b": np.arange(5, dtype=np.float64), "meta": "x"}
    producer.put("0", "1", "views", payload)
    received, _ = reader.get("0", "1", "views")
    assert torch.equal(received["a"], payload["a"]) and np.array_equal(received["b"], payload["b"])
    a, b = received["a"], received["b"]
    del received
    producer.reap_consumed()
    assert producer.health()["pending"] == 1
    del a
    gc.collect()
    producer.reap_consumed()
    assert producer.health()["pending"] == 1, "the ndarray still views the region"
    del b
    producer.reap_consumed()
    assert producer.health()["pending"] == 0


def test_explicit_release(make_connector) -> None:
    producer, reader = make_connector(), make_connector(zero_copy=True)
    producer.put("0", "1", "explicit", torch.arange(100))
    tensor, _ = reader.get("0", "1", "explicit")
    reader.release("explicit")
    producer.reap_consumed()
    assert producer.health()["pending"] == 0
    reader.release("explicit")  # a second release, and the view's later collection, are no-ops
    del tensor
    gc.collect()
    assert reader.health()["errors"] == 0


def test_payload_without_views_is_released_at_once(make_connector) -> None:
    producer, reader = make_connector(), make_connector(zero_copy=True)
    producer.put("0", "1", "plain", {"no": "tensors"})
    assert reader.get("0", "1", "plain")[0] == {"no": "tensors"}
    producer.reap_consumed()
    assert producer.health()["pending"] == 0
