"""Structure-aware fuzzing of the serializer's decoder: frames whose msgpack is well formed but hostile.

The byte-level fuzzing lives in ``test_serialization.py``; here hypothesis builds frames from typed parts
(ext types with wrong fields, buffer tables that lie, containers by the million) so the decoder's checks
past msgpack's own are reached.  Every frame must decode or raise SerializationError; the reliability
campaign (``python -m reliability``) runs the same decoder through 100,000-input fuzzers.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni_core.errors import SerializationError
from omni_core.serialization import MAGIC, DecodeLimits, OmniSerde, OmniSerializer

S = OmniSerializer


def frame(meta: bytes, table: Sequence[tuple[int, int]] = (), data: bytes = b"") -> bytes:
    """A frame with any meta, any buffer table (offsets as given), ``data`` after the meta."""
    body = meta + data
    head = struct.pack("<4sIIQ", MAGIC, len(meta), len(table), 20 + 16 * len(table) + len(body))
    head += b"".join(struct.pack("<QQ", off, length) for off, length in table)
    return head + body


def decode_or_reject(data: bytes) -> Any:
    for zero_copy in (False, True):
        try:
            S.deserialize(bytearray(data), zero_copy=zero_copy)
        except SerializationError as exc:
            assert str(exc), "a rejection must say why"


_dtype_names = st.sampled_from(
    ["float32", "bfloat16", "float8_e4m3fn", "bool", "uint1", "int4", "complex32", "qint8", "Tensor", "", "float32 "]
)
_np_dtypes = st.sampled_from(["<f4", "|b1", "<M8[s]", "<M8[999999999999Y]", "<U9999999", "|S0", "|O8", "<V8", "f4"])
_any_leaf = st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(max_size=8) | st.binary(max_size=8)
_shapes = st.lists(st.integers(-2, 2**40) | st.text(max_size=2) | st.none(), max_size=40) | _any_leaf
_ext_fields = st.one_of(
    st.tuples(_dtype_names, _shapes, st.integers(-1, 3) | _any_leaf).map(list),
    st.tuples(_np_dtypes, _shapes, st.integers(-1, 3)).map(list),
    st.tuples(_np_dtypes, st.binary(max_size=16)).map(list),
    st.lists(_any_leaf, max_size=4),
    _any_leaf,
)
_exts = st.just(msgpack.ExtType(1, b"")) | st.builds(
    lambda code, fields: msgpack.ExtType(code, msgpack.packb(fields)), st.integers(0, 6), _ext_fields
)
_map_keys = _any_leaf | _exts  # tuples and tensors as keys are refused by the decoder
_trees = st.recursive(
    _any_leaf | _exts,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_map_keys, children, max_size=3),
    max_leaves=12,
)
_tables = st.lists(st.tuples(st.integers(0, 2**64 - 1) | st.sampled_from([0, 64, 128]), st.integers(0, 64)), max_size=4)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tree=_trees, table=_tables, data=st.binary(max_size=256))
def test_well_formed_msgpack_with_lying_parts_decodes_or_is_rejected(tree: Any, table: list, data: bytes) -> None:
    decode_or_reject(frame(msgpack.packb(tree), table, data))


@settings(max_examples=200, deadline=None)
@given(meta_len=st.integers(0, 2**32 - 1), buffers=st.integers(0, 2**32 - 1), frame_len=st.integers(0, 2**64 - 1))
def test_headers_claiming_more_than_was_sent_are_refused(meta_len: int, buffers: int, frame_len: int) -> None:
    """Lengths are checked against the bytes at hand before anything is allocated for them."""
    data = struct.pack("<4sIIQ", MAGIC, meta_len, buffers, frame_len) + b"\xc0" * 64
    if frame_len > len(data) or 20 + 16 * buffers + meta_len > len(data):
        with pytest.raises(SerializationError):
            S.deserialize(data)
    else:
        decode_or_reject(data)


def test_a_million_empty_containers_is_the_limit() -> None:
    """4 MB of msgpack would otherwise decode to 4 million dicts (~300 MB): refused past max_containers."""
    one_million = b"\xdd" + struct.pack(">I", 1_000_000) + b"\x80" * 1_000_000
    with pytest.raises(SerializationError, match="more than 1048576 arrays/maps/tuples in one frame"):
        S.deserialize(frame(b"\x94" + one_million * 4))


def test_max_containers_counts_lists_maps_and_tuples() -> None:
    limited = OmniSerde(DecodeLimits(max_containers=3))
    assert limited.deserialize(S.serialize([{}, ()])) == [{}, ()]
    with pytest.raises(SerializationError, match="more than 3 arrays/maps/tuples"):
        limited.deserialize(S.serialize([{}, (), []]))
