"""How payloads are laid out in the store.

*framed*: one object holding the :class:`~omni_core.OmniSerializer` frame.  A frame is never empty, so
empty payloads (which the store rejects as values) round-trip.

*direct*: a big top-level tensor, array or byte string in host memory is written straight from its own
memory, with no copy: ``<key>#data`` holds its bytes and ``<key>`` a small descriptor
(``b"OMD1"`` + msgpack ``{"layout": {kind, dtype, shape}, "nbytes": n}``), both in one batch.
"""

from __future__ import annotations

from typing import Any

import msgpack

from .raw_payload import RawLayout

DESCRIPTOR_MAGIC = b"OMD1"
DATA_SUFFIX = "#data"
#: Raw payloads at least this big use the direct layout.  Below it one copy into the local buffer costs
#: less than a second object: on loopback a 1 MiB copy is ~0.05 ms, the descriptor's share of a batched
#: put ~0.1 ms and its extra read, for a get without metadata, ~0.2 ms.
DIRECT_MIN_BYTES = 4 << 20
#: A descriptor is never longer than this.
MAX_DESCRIPTOR_BYTES = 4096


def data_key(key: str) -> str:
    """Where the bytes of a direct-layout payload stored under ``key`` live."""
    return key + DATA_SUFFIX


def encode_descriptor(layout: RawLayout) -> bytes:
    """The value stored under the key of a direct-layout payload."""
    return DESCRIPTOR_MAGIC + msgpack.packb({"layout": layout.to_wire(), "nbytes": layout.nbytes})


def decode_descriptor(value: Any) -> RawLayout | None:
    """The layout if ``value`` (a buffer) is a direct-layout descriptor, None if it is a frame.

    Raises ValueError for a malformed descriptor.
    """
    view = memoryview(value)
    if view.nbytes < len(DESCRIPTOR_MAGIC) or bytes(view[: len(DESCRIPTOR_MAGIC)]) != DESCRIPTOR_MAGIC:
        return None
    if view.nbytes > MAX_DESCRIPTOR_BYTES:
        raise ValueError(f"descriptor of {view.nbytes} bytes exceeds {MAX_DESCRIPTOR_BYTES}")
    try:
        body = msgpack.unpackb(view[len(DESCRIPTOR_MAGIC) :], max_array_len=64, max_map_len=8, max_str_len=64)
    except (ValueError, msgpack.UnpackException) as exc:
        raise ValueError(f"malformed descriptor: {exc}") from exc
    if not isinstance(body, dict) or type(body.get("nbytes")) is not int:
        raise ValueError(f"malformed descriptor {body!r:.200}")
    return RawLayout.from_wire(body.get("layout"), body["nbytes"])
