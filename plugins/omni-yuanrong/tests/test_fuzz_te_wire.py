"""Fuzzing the TransferEngine side channel's decoders with msgpack that is well formed but wrong.

A sender decodes requests from anyone who can reach its port; a receiver decodes a sender's description of
a payload and then reads memory at the addresses it names.  Every message decodes to checked fields or is
refused with ControlProtocolError; a refusal quotes a bounded part of the message (the reliability campaign
found 600 bytes of a reply echoed as up to 2,400 characters).
"""

from __future__ import annotations

from typing import Any

import msgpack
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_yuanrong.te_control import (
    ACK_ERROR,
    CLEANUP_KEY,
    QUERY_INFO,
    REQUEST_TYPES,
    ControlProtocolError,
    decode_info,
    decode_request,
)
from omni_yuanrong.te_payload import check_raw_fields

_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.floats() | st.text(max_size=10)
    | st.binary(max_size=10) | st.sampled_from(["tensor", "bytes", "float32", "bfloat16", "Tensor", "req"]),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=10,
)
_INFO_FIELDS = ["request_id", "rpc_port", "src_addrs", "lengths", "data_size", "is_fast_path", "kind", "dtype",
                "shape"]
_maps = st.dictionaries(st.sampled_from(_INFO_FIELDS) | st.text(max_size=4), _values, max_size=10)


def _pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from([*REQUEST_TYPES, b"query", b""]), _maps | _values)
def test_requests_decode_to_a_known_kind_and_a_valid_key_or_are_refused(kind: bytes, body: Any) -> None:
    try:
        decoded_kind, request_id = decode_request(kind + _pack(body))
    except ControlProtocolError as exc:
        assert 0 < len(str(exc)) < 1000
        return
    assert decoded_kind in (QUERY_INFO, CLEANUP_KEY)
    assert isinstance(request_id, str) and 0 < len(request_id) <= 1024 and "/" not in request_id


@settings(max_examples=400, deadline=None)
@given(_maps, st.booleans())
def test_infos_decode_to_consistent_fields_or_are_refused(info: dict[str, Any], fill_id: bool) -> None:
    if fill_id:
        info = {**info, "request_id": "req"}
    try:
        decoded = decode_info(_pack(info), "req")
        fields = check_raw_fields(decoded) if decoded is not None and decoded.get("is_fast_path") else None
    except ControlProtocolError as exc:
        assert 0 < len(str(exc)) < 1000
        return
    assert decoded is not None
    addrs, lengths = decoded["src_addrs"], decoded["lengths"]
    assert len(addrs) == len(lengths) > 0 and all(type(n) is int and n > 0 for n in [*addrs, *lengths])
    assert decoded["data_size"] == sum(lengths) and 0 < decoded["rpc_port"] <= 65535
    if fields is not None and fields["kind"] == "tensor":
        count = 1
        for dim in fields["shape"]:
            count *= dim
        assert count * fields["dtype"].itemsize == decoded["data_size"]


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=0, max_size=4096))
def test_an_error_reply_is_quoted_in_bounded_form(rest: bytes) -> None:
    try:
        decode_info(ACK_ERROR + rest, "req")
    except ControlProtocolError as exc:
        assert len(str(exc)) < 1000
