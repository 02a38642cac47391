"""The side channel's message codec: upstream's wire format, bounded decoding, hostile input refused."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omni_yuanrong.te_control import (
    CLEANUP_KEY,
    INFO_NOT_FOUND,
    MAX_REQUEST_BYTES,
    QUERY_INFO,
    ControlProtocolError,
    decode_info,
    decode_request,
    encode_error,
    encode_info,
    encode_request,
)


@pytest.mark.parametrize("kind", [QUERY_INFO, CLEANUP_KEY])
def test_requests_use_upstreams_wire_format(kind: bytes) -> None:
    frame = encode_request(kind, "req1@0_1")
    assert frame == kind + msgpack.packb({"request_id": "req1@0_1"})
    assert decode_request(frame) == (kind, "req1@0_1")


@pytest.mark.parametrize(
    ("frame", "match"),
    [
        (b"delete_all" + msgpack.packb({"request_id": "k"}), "unknown request type"),
        (QUERY_INFO + b"\xc1", "undecodable"),
        (QUERY_INFO + msgpack.packb(["k"]), "must be a msgpack map"),
        (QUERY_INFO + msgpack.packb({"id": "k"}), "request_id"),
        (QUERY_INFO + msgpack.packb({"request_id": "a/b"}), "request_id"),
        (QUERY_INFO + msgpack.packb({"request_id": 7}), "request_id"),
        (QUERY_INFO + b"\x91" * 2000 + b"\xc0", "undecodable"),  # deep nesting
        (QUERY_INFO + b"\xdd\xff\xff\xff\xff", "undecodable"),  # an array claiming 4 G items
        (QUERY_INFO + msgpack.packb({"request_id": "k", "x": "y" * 2000}), "undecodable"),  # long string
        (QUERY_INFO + b"\x00" * MAX_REQUEST_BYTES, "exceeds"),
    ],
)
def test_malformed_requests_are_refused(frame: bytes, match: str) -> None:
    with pytest.raises(ControlProtocolError, match=match):
        decode_request(frame)


@given(st.binary(max_size=256))
def test_arbitrary_bytes_only_ever_raise_protocol_errors(frame: bytes) -> None:
    for candidate in (frame, QUERY_INFO + frame, CLEANUP_KEY + frame):
        try:
            decode_request(candidate)
        except ControlProtocolError:
            pass


def good_info(**changes: object) -> dict[str, object]:
    info = {"request_id": "k", "rpc_port": 4000, "src_addrs": [4096, 8192], "lengths": [10, 20], "is_fast_path": False}
    return {**info, "data_size": 30, **changes}


def test_info_roundtrips_and_not_found_is_none() -> None:
    assert decode_info(encode_info(good_info()), "k") == good_info()
    assert decode_info(encode_info({k: v for k, v in good_info().items() if k != "data_size"}), "k") == good_info()
    assert decode_info(INFO_NOT_FOUND, "k") is None


@pytest.mark.parametrize(
    "changes",
    [
        {"request_id": "other"},
        {"lengths": [10]},
        {"src_addrs": []},
        {"src_addrs": [-1, 8192]},
        {"rpc_port": 70000},
        {"lengths": [10, "20"]},
        {"data_size": 31},
        {"is_fast_path": 1},
    ],
)
def test_inconsistent_info_is_refused(changes: dict[str, object]) -> None:
    with pytest.raises(ControlProtocolError):
        decode_info(encode_info(good_info(**changes)), "k")


def test_an_error_reply_to_a_query_is_reported() -> None:
    with pytest.raises(ControlProtocolError, match="refused"):
        decode_info(encode_error("nope"), "k")
