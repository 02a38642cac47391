"""Deterministic payloads: any process rebuilds the exact payload of a key, so a consumer checks it is intact."""

from __future__ import annotations

import hashlib
from typing import Any

from omni_core.digest import checksum


def make(key: str, nbytes: int) -> dict[str, Any]:
    """A request-shaped payload for ``key``: ids, a tuple, params and an ``nbytes`` uint8 array from the key."""
    import numpy as np

    seed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little")
    rng = np.random.default_rng(seed)
    return {
        "request_id": key,
        "tokens": [int(t) for t in rng.integers(0, 50_000, 16)],
        "shape": (nbytes,),
        "sampling_params": {"temperature": 0.7, "max_tokens": 64},
        "hidden": rng.integers(0, 256, nbytes, dtype=np.uint8),
    }


def digest(key: str, nbytes: int) -> str:
    """The checksum the payload of ``key`` must have when it arrives."""
    return checksum(make(key, nbytes))
