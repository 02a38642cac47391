"""Payloads both test processes can build from a JSON description, and their checksums."""

from __future__ import annotations

from typing import Any

import torch

from omni_core.testing import checksum, make_payload
from omni_mooncake.te_pool import ReceivedBuffer


def big_tensor(nbytes: int, seed: int) -> torch.Tensor:
    """A deterministic uint8 tensor of ``nbytes`` (a multiple of 8) that differs per seed."""
    return torch.arange(nbytes // 8, dtype=torch.int64).mul_(2654435761).add_(seed).view(torch.uint8)


def build(spec: dict[str, Any]) -> Any:
    """``{"kind": K}`` (a kit payload), ``{"tensor_bytes": N, "seed": S}`` or ``{"bytes": N, "seed": S}``."""
    if "kind" in spec:
        return make_payload(spec["kind"])
    if "bytes" in spec:
        return big_tensor(spec["bytes"], spec.get("seed", 0)).numpy().tobytes()
    return big_tensor(spec["tensor_bytes"], spec.get("seed", 0))


def unwrap(obj: Any) -> Any:
    """The payload behind what ``get`` returned (raw TransferEngine results are pool buffers)."""
    if isinstance(obj, ReceivedBuffer):
        payload = obj.payload()
        obj.release()
        return payload
    return obj


def digest(spec: dict[str, Any]) -> str:
    return checksum(build(spec))
