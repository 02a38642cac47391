"""The decode limits SECURITY.md lists, each enforced: past it, a clear error (or a dropped peer), never an
allocation the bytes at hand do not justify."""

from __future__ import annotations

import struct
import time

import msgpack
import pytest
import zmq

from omni_core.errors import SerializationError
from omni_core.serialization import MAGIC, DecodeLimits, OmniSerializer
from omni_yuanrong.te_control import MAX_REQUEST_BYTES, QUERY_INFO, decode_info, encode_request

LIMITS = DecodeLimits()


def _frame(meta: bytes, *, n_buffers: int = 0, meta_len: int | None = None, frame_len: int | None = None) -> bytes:
    meta_len = len(meta) if meta_len is None else meta_len
    total = 20 + 16 * n_buffers + len(meta) if frame_len is None else frame_len
    return struct.pack("<4sIIQ", MAGIC, meta_len, n_buffers, total) + meta


def _nested(depth: int) -> bytes:
    return b"\x91" * depth + b"\xc0"


SERIALIZER_CASES = {
    "max_depth": (_frame(_nested(LIMITS.max_depth + 1)), f"nesting deeper than {LIMITS.max_depth}"),
    "max_items": (_frame(b"\xdd" + struct.pack(">I", LIMITS.max_items + 1)), "exceeds max_array_len"),
    "max_items (maps)": (_frame(b"\xdf" + struct.pack(">I", LIMITS.max_items + 1)), "exceeds max_map_len"),
    "max_containers": (
        _frame(b"\xdc\x00\x02" + (b"\xdd" + struct.pack(">I", 600_000) + b"\x90" * 600_000) * 2),
        f"more than {LIMITS.max_containers} arrays/maps/tuples",
    ),
    "max_buffers": (_frame(b"\xc0", n_buffers=LIMITS.max_buffers + 1), "frame exceeds limits"),
    "max_meta_bytes": (_frame(b"\xc0", meta_len=LIMITS.max_meta_bytes + 1), "frame exceeds limits"),
    "max_frame_bytes": (_frame(b"\xc0", frame_len=LIMITS.max_frame_bytes + 1), "frame exceeds limits"),
}


@pytest.mark.parametrize("limit", list(SERIALIZER_CASES))
def test_each_serializer_limit_is_enforced(limit: str) -> None:
    data, match = SERIALIZER_CASES[limit]
    with pytest.raises(SerializationError, match=match):
        OmniSerializer.deserialize(data)


def _array_frame(ndim: int) -> bytes:
    """A frame of one float32 array of shape ``(1,) * ndim`` (its 4 bytes in the one buffer)."""
    meta = msgpack.packb(msgpack.ExtType(3, msgpack.packb(["<f4", [1] * ndim, 0])))
    offset = -(-(20 + 16 + len(meta)) // 64) * 64
    head = struct.pack("<4sIIQ", MAGIC, len(meta), 1, offset + 4) + struct.pack("<QQ", offset, 4)
    return (head + meta).ljust(offset, b"\0") + b"\0" * 4


def test_an_array_of_more_dimensions_than_max_ndim_is_refused() -> None:
    assert OmniSerializer.deserialize(_array_frame(LIMITS.max_ndim)).ndim == LIMITS.max_ndim
    with pytest.raises(SerializationError, match=f"at most {LIMITS.max_ndim} dims"):
        OmniSerializer.deserialize(_array_frame(LIMITS.max_ndim + 1))


def test_yuanrong_te_sender_drops_oversized_requests_and_keeps_serving(te_sender) -> None:
    context = zmq.Context()
    try:
        for size in (MAX_REQUEST_BYTES + 1, 1 << 20):
            big = context.socket(zmq.DEALER)
            big.setsockopt(zmq.LINGER, 0)
            big.connect(f"tcp://127.0.0.1:{te_sender.zmq_port}")
            big.send(QUERY_INFO + b"\x00" * size)
            assert not big.poll(500), "an oversized request is never answered: libzmq drops the peer"
            big.close()
        normal = context.socket(zmq.REQ)
        normal.setsockopt(zmq.LINGER, 0)
        normal.setsockopt(zmq.RCVTIMEO, 5000)
        normal.connect(f"tcp://127.0.0.1:{te_sender.zmq_port}")
        started = time.monotonic()
        normal.send(encode_request(QUERY_INFO, "unknown-key"))
        assert decode_info(normal.recv(), "unknown-key") is None, f"answered after {time.monotonic() - started} s"
        normal.close()
    finally:
        context.destroy(linger=0)
