"""Tests for omni_core.kv_pipe: ConnectorKVPipe over an in-memory connector."""

from __future__ import annotations

import re
import threading
import time
from typing import Any

import pytest
import torch

from omni_core.base import OmniConnectorBase, validate_key
from omni_core.kv_pipe import ConnectorKVPipe, KVPipeBase


class InMemoryConnector(OmniConnectorBase):
    """Dict-backed, consume-once connector that stores objects as-is (no serializer)."""

    def __init__(self, fail_puts: int = 0) -> None:
        self._store: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.fail_puts = fail_puts
        self.put_keys: list[str] = []
        self.abandoned: list[str] = []

    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        validate_key(put_key, forbidden="\x00/.: ")
        if self.fail_puts:
            self.fail_puts -= 1
            return False, 0, None
        size = data.nbytes if isinstance(data, torch.Tensor) else 0
        with self._lock:
            self._store[self._make_key(put_key, from_stage, to_stage)] = (data, size)
        self.put_keys.append(put_key)
        return True, size, None

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        with self._lock:
            return self._store.pop(self._make_key(get_key, from_stage, to_stage), None)

    def abandon_get(self, get_key: str) -> None:
        self.abandoned.append(get_key)

    def cleanup(self, request_id: str) -> None:
        pass

    def health(self) -> dict[str, Any]:
        return {"status": "healthy", "stored": len(self._store)}

    def close(self) -> None:
        self._store.clear()


@pytest.fixture
def connector() -> InMemoryConnector:
    return InMemoryConnector()


def _mixed_items(n: int) -> list[torch.Tensor | None]:
    dtypes = [torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.int8, torch.bool, torch.uint8]
    items: list[torch.Tensor | None] = []
    for i in range(n):
        if i == n // 2:
            items.append(None)
            continue
        shape = [(), (i % 5 + 1,), (2, i % 3 + 1), (0, 4)][i % 4]
        items.append(
            (torch.arange(i, i + max(1, torch.Size(shape).numel())) % 7)[: torch.Size(shape).numel()]
            .reshape(shape)
            .to(dtypes[i % len(dtypes)])
        )
    return items


def test_is_a_kv_pipe(connector):
    assert isinstance(ConnectorKVPipe(connector, "0", "1"), KVPipeBase)


def test_fifo_order_mixed_dtypes_shapes_and_none(connector):
    sender = ConnectorKVPipe(connector, "0", "1")
    receiver = ConnectorKVPipe(connector, "0", "1", recv_timeout=5.0)
    items = _mixed_items(100)
    for item in items:
        sender.send_tensor(item)
    for expected in items:
        got = receiver.recv_tensor()
        if expected is None:
            assert got is None
        else:
            assert got.dtype == expected.dtype and got.shape == expected.shape
            assert torch.equal(got, expected)
    assert connector.put_keys == [f"kvpipe_0-1_{i}" for i in range(100)]
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", key) for key in connector.put_keys)


def test_fifo_across_threads(connector):
    items = _mixed_items(100)
    sender = ConnectorKVPipe(connector, "a", "b")
    receiver = ConnectorKVPipe(connector, "a", "b", recv_timeout=10.0)
    received: list[torch.Tensor | None] = []
    thread = threading.Thread(target=lambda: received.extend(receiver.recv_tensor() for _ in items))
    thread.start()
    for item in items:
        sender.send_tensor(item)
    thread.join(10)
    assert [None if t is None else t.tolist() for t in received] == [None if t is None else t.tolist() for t in items]


def test_recv_blocks_until_sender_sends(connector):
    receiver = ConnectorKVPipe(connector, "0", "1", recv_timeout=None)
    sender = ConnectorKVPipe(connector, "0", "1")
    result: list[torch.Tensor | None] = []
    thread = threading.Thread(target=lambda: result.append(receiver.recv_tensor()))
    thread.start()
    time.sleep(0.05)
    assert thread.is_alive() and not result
    sender.send_tensor(torch.ones(3))
    thread.join(5)
    assert not thread.is_alive()
    assert torch.equal(result[0], torch.ones(3))


def test_timeout_names_key_and_keeps_item_next(connector):
    pipe = ConnectorKVPipe(connector, "0", "1", name="kv", recv_timeout=0.05)
    start = time.monotonic()
    with pytest.raises(TimeoutError, match=r"'kv_0-1_0'.*0\.05"):
        pipe.recv_tensor()
    assert time.monotonic() - start >= 0.05
    assert connector.abandoned == ["kv_0-1_0"]
    pipe.send_tensor(torch.zeros(2))
    assert torch.equal(pipe.recv_tensor(), torch.zeros(2))


def test_zero_timeout_polls_once(connector):
    pipe = ConnectorKVPipe(connector, "0", "1", recv_timeout=0)
    with pytest.raises(TimeoutError):
        pipe.recv_tensor()
    pipe.send_tensor(None)
    assert pipe.recv_tensor() is None


@pytest.mark.parametrize("name", ["", "a.b", "a/b", "a:b", "a b", "kv\x00", 7])
def test_bad_name_rejected(connector, name):
    with pytest.raises(ValueError, match="name"):
        ConnectorKVPipe(connector, "0", "1", name=name)


@pytest.mark.parametrize("stages", [("0", "1/2"), ("st.0", "1"), ("", "1")])
def test_bad_stage_rejected(connector, stages):
    with pytest.raises(ValueError, match="stage"):
        ConnectorKVPipe(connector, *stages)


def test_too_long_name_rejected(connector):
    with pytest.raises(ValueError, match="long"):
        ConnectorKVPipe(connector, "0", "1", name="k" * 190)


@pytest.mark.parametrize("kwargs", [{"recv_timeout": -1.0}, {"poll_interval": 0.0}])
def test_bad_timing_rejected(connector, kwargs):
    with pytest.raises(ValueError):
        ConnectorKVPipe(connector, "0", "1", **kwargs)


def test_failed_put_raises_and_does_not_consume_sequence():
    connector = InMemoryConnector(fail_puts=1)
    pipe = ConnectorKVPipe(connector, "0", "1", recv_timeout=1.0)
    with pytest.raises(RuntimeError, match="kvpipe_0-1_0"):
        pipe.send_tensor(torch.ones(1))
    pipe.send_tensor(torch.full((1,), 2.0))
    assert connector.put_keys == ["kvpipe_0-1_0"]
    assert pipe.recv_tensor().item() == 2.0


def test_send_rejects_non_tensor(connector):
    with pytest.raises(TypeError):
        ConnectorKVPipe(connector, "0", "1").send_tensor([1, 2, 3])


def test_close_is_idempotent_and_keeps_connector(connector):
    pipe = ConnectorKVPipe(connector, "0", "1")
    pipe.close()
    pipe.close()
    assert pipe.closed and not connector.closed
    with pytest.raises(RuntimeError, match="closed"):
        pipe.send_tensor(None)
    with pytest.raises(RuntimeError, match="closed"):
        pipe.recv_tensor()


def test_owning_pipe_closes_connector(connector):
    with ConnectorKVPipe(connector, "0", "1", owns_connector=True) as pipe:
        pipe.send_tensor(None)
    assert connector.closed


def test_close_wakes_waiting_receiver(connector):
    pipe = ConnectorKVPipe(connector, "0", "1", recv_timeout=None, poll_interval=0.01)
    errors: list[BaseException] = []

    def receive() -> None:
        try:
            pipe.recv_tensor()
        except RuntimeError as exc:
            errors.append(exc)

    thread = threading.Thread(target=receive)
    thread.start()
    time.sleep(0.05)
    pipe.close()
    thread.join(2)
    assert not thread.is_alive()
    assert len(errors) == 1 and "closed" in str(errors[0])


def test_two_pipes_on_one_connector_do_not_interfere(connector):
    a = ConnectorKVPipe(connector, "0", "1", name="keys", recv_timeout=1.0)
    b = ConnectorKVPipe(connector, "0", "1", name="values", recv_timeout=1.0)
    for i in range(5):
        a.send_tensor(torch.tensor([i]))
        b.send_tensor(torch.tensor([100 + i]))
    assert [b.recv_tensor().item() for _ in range(5)] == [100, 101, 102, 103, 104]
    assert [a.recv_tensor().item() for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(TimeoutError):
        ConnectorKVPipe(connector, "0", "1", name="keys", recv_timeout=0.01).recv_tensor()
