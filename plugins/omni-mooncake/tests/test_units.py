"""Backend-free pieces: side-channel decoding, the sender's outbox, raw layouts, dependency errors."""

from __future__ import annotations

import importlib
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from omni_core import BufferAllocator, ManagedBuffer
from omni_mooncake import dependencies, wire
from omni_mooncake.outbox import OutboundEntry, Outbox
from omni_mooncake.raw_payload import RawLayout, layout_of, rebuild
from omni_mooncake.store_values import decode_descriptor, encode_descriptor


# -- side channel ---------------------------------------------------------------------------------
def test_requests_round_trip() -> None:
    pull = wire.Pull("k@0_1", "10.0.0.2:15001", 140_000_000, 4096, 35_000)
    assert wire.decode_request(wire.encode_request(pull)) == pull
    assert wire.decode_request(wire.encode_request(wire.Query("k@0_1"))) == wire.Query("k@0_1")
    claim = wire.Claim("k@0_1", 2**62 + 5, "10.0.0.2:15001", 140_000_000, 4096)
    assert wire.decode_request(wire.encode_request(claim)) == claim
    done = wire.Done("k@0_1", 7, "10.0.0.2:15001", delivered=True)
    assert wire.decode_request(wire.encode_request(done)) == done


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\xc1",
        msgpack.packb("query"),
        msgpack.packb({"op": "query"}),
        msgpack.packb({"op": "query", "key": "k", "extra": 1}),
        msgpack.packb({"op": "query", "key": ""}),
        msgpack.packb({"op": "query", "key": b"bytes-key"}),
        msgpack.packb({"op": "pull", "key": "k", "session": "h:99999", "address": 1, "capacity": 1, "wait_ms": 1}),
        msgpack.packb({"op": "pull", "key": "k", "session": "h:1", "address": 1.5, "capacity": 1, "wait_ms": 1}),
        msgpack.packb({"op": "pull", "key": "k", "session": "h:1", "address": True, "capacity": 1, "wait_ms": 1}),
        msgpack.packb({"op": "drop_tables", "key": "k"}),
        msgpack.packb({"op": "claim", "key": "k", "token": -1, "session": "h:1", "address": 1, "size": 1}),
        msgpack.packb({"op": "claim", "key": "k", "token": 1, "session": "h:1", "address": 1}),
        msgpack.packb({"op": "done", "key": "k", "token": 1, "session": "h:1", "delivered": 1}),
        msgpack.packb({"op": "done", "key": "k", "token": 1, "session": "nohost", "delivered": True}),
        msgpack.packb({1: "int key"}),
        msgpack.packb({"op": "query", "key": ["x"] * 100}),
        msgpack.packb({"op": "query", "key": "k" * (wire.MAX_KEY_CHARS + 1)}),
        b"\x80" + b"\xdd\xff\xff\xff\xff",  # a map announcing 4 billion items
        b"x" * (wire.MAX_MESSAGE_BYTES + 1),
    ],
)
def test_malformed_requests_raise_malformed_message(frame: bytes) -> None:
    with pytest.raises(wire.MalformedMessage):
        wire.decode_request(frame)


def test_replies_need_a_boolean_ok() -> None:
    assert wire.decode_reply(wire.encode_reply({"ok": True, "size": 3}))["size"] == 3
    with pytest.raises(wire.MalformedMessage):
        wire.decode_reply(msgpack.packb({"ok": "yes"}))


# -- outbox ----------------------------------------------------------------------------------------
@pytest.fixture
def pool() -> tuple[BufferAllocator, torch.Tensor]:
    return BufferAllocator(1 << 20), torch.zeros(1 << 20, dtype=torch.uint8)


def entry(pool: tuple[BufferAllocator, torch.Tensor], key: str, created: float = 0.0) -> OutboundEntry:
    allocator, tensor = pool
    buffer = ManagedBuffer(allocator, allocator.alloc(4096), 4096, tensor)
    return OutboundEntry(key, key.split("@")[0], buffer, owned=True, size=4096, layout=None, created=created)


def test_outbox_never_frees_a_buffer_being_pulled(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    reclaimed: list[int] = []
    outbox = Outbox(readers=1, ttl_s=10, on_reclaim=reclaimed.append)
    busy = entry(pool, "busy@0_1")
    outbox.add(busy)
    outbox.add(entry(pool, "idle@0_1"))
    claimed = outbox.begin_pull("busy@0_1", "receiver-a")
    assert claimed is busy
    assert outbox.reclaim_expired(now=1e9) == 1  # only the idle one
    assert not busy.buffer.released and outbox.stats() == {"outbox_entries": 1, "in_flight": 1}
    outbox.end_pull(busy, "receiver-a", delivered=False)  # failed: kept for a retry until the TTL
    assert not busy.buffer.released
    assert outbox.reclaim_expired(now=1e9) == 1 and busy.buffer.released
    assert reclaimed == [1, 1] and pool[0].used_bytes == 0


def test_outbox_counts_distinct_readers(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    outbox = Outbox(readers=2, ttl_s=0, on_reclaim=lambda n: None)
    item = entry(pool, "k@0_1")
    outbox.add(item)
    assert outbox.begin_pull("k@0_1", "a") is item
    assert outbox.begin_pull("k@0_1", "a") == wire.IN_PROGRESS
    outbox.end_pull(item, "a", delivered=True)
    assert outbox.begin_pull("k@0_1", "a") == wire.ALREADY_DELIVERED
    assert outbox.begin_pull("k@0_1", "b") is item
    outbox.end_pull(item, "b", delivered=True)
    assert item.buffer.released and outbox.begin_pull("k@0_1", "c") == wire.NOT_FOUND


def test_retiring_during_a_pull_frees_when_the_pull_ends(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    outbox = Outbox(readers=1, ttl_s=0, on_reclaim=lambda n: None)
    first = entry(pool, "k@0_1")
    outbox.add(first)
    assert outbox.begin_pull("k@0_1", "a") is first
    outbox.add(entry(pool, "k@0_1"))  # a new put of the key retires the old entry mid-pull
    assert not first.buffer.released
    outbox.end_pull(first, "a", delivered=True)
    assert first.buffer.released
    assert outbox.discard(lambda e: True) == 1 and pool[0].used_bytes == 0


def claim_of(item: OutboundEntry, receiver: str, **changes: Any) -> wire.Claim:
    fields = {"key": item.key, "token": item.token, "session": receiver, "address": item.buffer.data_ptr,
              "size": item.size, **changes}  # fmt: skip
    return wire.Claim(**fields)


def test_a_claim_must_name_the_payload_exactly(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    outbox = Outbox(readers=1, ttl_s=0, on_reclaim=lambda n: None)
    item = entry(pool, "k@0_1")
    outbox.add(item)
    for wrong in ({"token": item.token ^ 1}, {"address": item.buffer.data_ptr + 64}, {"size": 1}, {"key": "x@0_1"}):
        assert outbox.claim(claim_of(item, "h:1", **wrong), lambda n: 10.0) == wire.NOT_FOUND, wrong
    leases: list[int] = []
    assert outbox.claim(claim_of(item, "h:1"), lambda n: leases.append(n) or 10.0) is item
    assert leases == [item.size] and outbox.stats()["in_flight"] == 1
    assert outbox.claim(claim_of(item, "h:2"), lambda n: 10.0) == wire.IN_PROGRESS  # one reader: taken
    assert outbox.finish_claim(item.key, item.token, "h:1", delivered=True) is item
    assert item.buffer.released and outbox.claims_end is None
    assert outbox.finish_claim(item.key, item.token, "h:1", delivered=True) is None  # only once


def test_a_failed_read_may_be_retried_and_a_lapsed_claim_leaves_the_payload(
    pool: tuple[BufferAllocator, torch.Tensor],
) -> None:
    """A receiver cut off before it said ``done`` may not have the payload: it stays for the next read."""
    lapsed: list[int] = []
    outbox = Outbox(readers=1, ttl_s=0, on_reclaim=lambda n: None, on_lapsed_claims=lapsed.append)
    item = entry(pool, "k@0_1")
    outbox.add(item)
    assert outbox.claim(claim_of(item, "h:1"), lambda n: 10.0) is item
    outbox.finish_claim(item.key, item.token, "h:1", delivered=False)
    assert not item.buffer.released, "a read that failed leaves the payload for a retry"
    assert outbox.claim(claim_of(item, "h:1"), lambda n: 0.0) is item
    end = outbox.claims_end
    assert end is not None and outbox.lapse_claims(now=end) == 1 and lapsed == [1]
    assert not item.buffer.released and outbox.claims_end is None
    assert outbox.claim(claim_of(item, "h:2"), lambda n: 10.0) is item  # read again
    assert outbox.finish_claim(item.key, item.token, "h:2", delivered=True) is item and item.buffer.released


def test_claims_and_pulls_share_the_readers(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    outbox = Outbox(readers=2, ttl_s=0, on_reclaim=lambda n: None)
    item = entry(pool, "k@0_1")
    outbox.add(item)
    assert outbox.begin_pull(item.key, "a") is item
    assert outbox.claim(claim_of(item, "b"), lambda n: 10.0) is item
    assert outbox.begin_pull(item.key, "c") == wire.IN_PROGRESS  # both readers are served or being served
    outbox.end_pull(item, "a", delivered=True)
    outbox.finish_claim(item.key, item.token, "b", delivered=True)
    assert item.buffer.released


def test_retiring_during_a_claim_frees_when_the_claim_ends(pool: tuple[BufferAllocator, torch.Tensor]) -> None:
    outbox = Outbox(readers=1, ttl_s=0, on_reclaim=lambda n: None)
    item = entry(pool, "k@0_1")
    outbox.add(item)
    assert outbox.claim(claim_of(item, "a"), lambda n: 10.0) is item
    assert outbox.discard(lambda e: True) == 1 and not item.buffer.released  # cleanup while being read
    outbox.finish_claim(item.key, item.token, "a", delivered=False)
    assert item.buffer.released and pool[0].used_bytes == 0


# -- raw layouts -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "value",
    [torch.arange(12, dtype=torch.bfloat16).view(3, 4), torch.tensor(2.5), np.arange(6, dtype="<i2").reshape(2, 3),
     b"raw bytes", torch.ones(2, 3).t()],
)  # fmt: skip
def test_raw_layouts_rebuild_the_same_payload(value: Any) -> None:
    layout = layout_of(value, arrays=True)
    assert layout is not None
    flat = torch.from_numpy(np.frombuffer(bytearray(_bytes_of(value)), dtype=np.uint8))
    again = RawLayout.from_wire(layout.to_wire(), layout.nbytes)
    rebuilt = rebuild(again, flat, copy=True)
    assert type(rebuilt) is type(value)
    if isinstance(value, torch.Tensor):
        assert rebuilt.dtype == value.dtype and torch.equal(rebuilt, value)
    elif isinstance(value, np.ndarray):
        assert rebuilt.dtype == value.dtype and np.array_equal(rebuilt, value)
    else:
        assert rebuilt == value


def _bytes_of(value: Any) -> bytes:
    if isinstance(value, torch.Tensor):
        return value.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()
    return value.tobytes() if isinstance(value, np.ndarray) else bytes(value)


def test_empty_and_object_payloads_are_not_raw() -> None:
    assert layout_of(b"", arrays=True) is None
    assert layout_of(torch.empty(0, 3), arrays=True) is None
    assert layout_of({"a": 1}, arrays=True) is None
    assert layout_of(np.array(["text"]), arrays=True) is None


@pytest.mark.parametrize(
    "wire_layout",
    [
        {"kind": "tensor", "dtype": "float32", "shape": [3]},  # 12 bytes, not 16
        {"kind": "tensor", "dtype": "qint8", "shape": [16]},
        {"kind": "tensor", "dtype": "__class__", "shape": [16]},
        {"kind": "ndarray", "dtype": "O", "shape": [2]},
        {"kind": "pickle", "dtype": "uint8", "shape": [16]},
        {"kind": "bytes", "dtype": "uint8", "shape": [-16]},
        {"kind": "bytes", "dtype": "uint8"},
        {"kind": "ndarray", "dtype": "<f5", "shape": [4]},  # well-formed, but numpy has no such type
        {"kind": "ndarray", "dtype": "<b4", "shape": [4]},
        {"kind": "ndarray", "dtype": "|i4", "shape": [4]},  # not how numpy spells int32
        {"kind": "tensor", "dtype": "onnx", "shape": [16]},  # a torch attribute, not a dtype
        {"kind": ["tensor"], "dtype": "uint8", "shape": [16]},
        {"kind": "tensor", "dtype": "uint8" * 100, "shape": [16]},
    ],
)
def test_bad_layouts_are_rejected(wire_layout: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        RawLayout.from_wire(wire_layout, 16)


def test_store_descriptors() -> None:
    layout = RawLayout("tensor", "float16", (4, 2), 16)
    assert decode_descriptor(encode_descriptor(layout)) == layout
    assert decode_descriptor(b"OMS1 a serializer frame") is None
    with pytest.raises(ValueError):
        decode_descriptor(b"OMD1\xc1")


def _descriptor(nbytes: Any, layout: Any) -> bytes:
    return b"OMD1" + msgpack.packb({"nbytes": nbytes, "layout": layout})


@pytest.mark.parametrize("dtype", ["<f5", "<b4", "<f6", "<i16", "<c4", ">u3"])
def test_descriptors_with_unknown_numpy_dtypes_raise_value_error(dtype: str) -> None:
    with pytest.raises(ValueError, match="unsupported numpy dtype"):
        decode_descriptor(_descriptor(16, {"kind": "ndarray", "dtype": dtype, "shape": [4]}))


_wire_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=6) | st.dictionaries(st.text(max_size=8), inner, max_size=6),
    max_leaves=20,
)
_dtypes = st.from_regex(r"[<>|=][biufcO?][0-9]{1,2}", fullmatch=True) | st.sampled_from(
    ["float32", "bfloat16", "uint8", "qint8", "onnx", "__class__", "<f4", "|u1"]
)
_layouts = st.fixed_dictionaries(
    {
        "kind": st.sampled_from(["tensor", "ndarray", "bytes"]) | _wire_values,
        "dtype": _dtypes | _wire_values,
        "shape": st.lists(st.integers(-4, 2**40), max_size=4) | _wire_values,
    }
)


@given(nbytes=st.integers(-1, 2**45) | _wire_values, layout=_layouts | _wire_values)
def test_fuzzed_descriptors_only_raise_value_error(nbytes: Any, layout: Any) -> None:
    try:
        decoded = decode_descriptor(_descriptor(nbytes, layout))
    except ValueError as exc:
        assert len(str(exc)) < 600
        return
    assert isinstance(decoded, RawLayout) and decoded.nbytes == nbytes


@given(body=st.binary(max_size=200))
def test_fuzzed_descriptor_bodies_only_raise_value_error(body: bytes) -> None:
    try:
        decode_descriptor(b"OMD1" + body)
    except ValueError:
        pass


# -- dependencies ----------------------------------------------------------------------------------------
def _import_failing(monkeypatch: pytest.MonkeyPatch, error: ImportError) -> None:
    """Make every import of ``mooncake`` (through importlib, as the connectors do) raise ``error``."""
    real_import_module = importlib.import_module

    def fake_import_module(name: str, package: str | None = None) -> Any:
        if name == "mooncake" or name.startswith("mooncake."):
            raise error
        return real_import_module(name, package)

    monkeypatch.setattr(importlib, "import_module", fake_import_module)


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (ModuleNotFoundError("No module named 'mooncake'", name="mooncake"), "not installed"),
        (ImportError("libcudart.so.12: cannot open shared object file"), "failed to load"),
    ],
)
def test_missing_or_broken_wheel_names_the_extra(monkeypatch: pytest.MonkeyPatch, error: ImportError, why: str) -> None:
    _import_failing(monkeypatch, error)
    for load in (dependencies.import_store, dependencies.import_engine):
        with pytest.raises(ImportError, match=why) as caught:
            load()
        assert "omni-mooncake[cpu]" in str(caught.value) and "omni-mooncake[cuda]" in str(caught.value)
        assert caught.value.__cause__ is error


def test_connectors_raise_the_hint_through_the_factory(monkeypatch: pytest.MonkeyPatch) -> None:
    from omni_core import ConnectorSpec, OmniConnectorFactory

    _import_failing(monkeypatch, ImportError("libcuda.so.1: cannot open shared object file"))
    for spec in (
        ConnectorSpec("MooncakeTransferEngineConnector", {"role": "receiver", "host": "127.0.0.1", "protocol": "tcp"}),
        ConnectorSpec("MooncakeStoreConnector", {"metadata_server": "P2PHANDSHAKE"}),
    ):
        with pytest.raises(ImportError, match=r"omni-mooncake\[cpu\]"):
            OmniConnectorFactory.create_connector(spec)
