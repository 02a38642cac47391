"""A stable digest of a payload's structure and bytes (used to verify delivery)."""

from __future__ import annotations

import ctypes
import hashlib
import math
from typing import Any


def host_bytes(tensor: Any) -> memoryview:
    """A read-only byte view of a contiguous CPU tensor (no numpy needed); keep ``tensor`` alive while using it."""
    nbytes = tensor.numel() * tensor.element_size()
    return memoryview((ctypes.c_char * nbytes).from_address(tensor.data_ptr())).cast("B").toreadonly()


def checksum(obj: Any) -> str:
    """sha256 over types, shapes and bytes: equal payloads give equal digests, tuples differ from lists."""
    digest = hashlib.sha256()
    _feed(digest, obj)
    return digest.hexdigest()


def _feed(digest: Any, obj: Any) -> None:
    kind = type(obj)
    module = kind.__module__
    if module.startswith("torch") and kind.__name__ == "Tensor":
        data = obj.detach().cpu().contiguous()
        digest.update(f"T{data.dtype}{tuple(data.shape)}".encode())
        if data.numel():
            digest.update(host_bytes(data))
    elif module.startswith("numpy") and kind.__name__ == "ndarray":
        digest.update(f"A{obj.dtype.str}{obj.shape}".encode())
        digest.update(obj.tobytes())
    elif isinstance(obj, dict):
        digest.update(f"D{len(obj)}".encode())
        for key in obj:
            _feed(digest, key)
            _feed(digest, obj[key])
    elif isinstance(obj, (list, tuple)):
        digest.update(f"{kind.__name__}{len(obj)}".encode())
        for item in obj:
            _feed(digest, item)
    elif isinstance(obj, float) and math.isnan(obj):
        digest.update(b"fnan")
    else:
        digest.update(f"{kind.__name__}:{obj!r}".encode())
