"""KV blocks as one self-checking byte tensor: the blocks of each layer, back to back, then a trailer.

Trailer (16 bytes, little-endian): magic ``b"OKV1"``, u32 CRC-32 of the body, u64 body length.
The payload is a flat ``uint8`` tensor, so connectors move it on their raw-data or tensor path
(one buffer, never element by element).  CRC-32 catches truncation and accidental corruption at
about 6 GB/s on one core here (sha256 runs at 1.8 GB/s); it is not a defence against a writer that
forges payloads on purpose: who may write to the transport is the transport's business.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

MAGIC = b"OKV1"
TRAILER = struct.Struct("<4sIQ")


class CorruptPayload(ValueError):
    """A payload whose size, trailer or checksum does not match what was expected."""


def block_bytes(layer: torch.Tensor) -> int:
    """Bytes of one block of ``layer`` (blocks along dim 0)."""
    return layer[0].numel() * layer.element_size()


def pack_blocks(layers: Sequence[torch.Tensor], block_ids: Sequence[int]) -> torch.Tensor:
    """Blocks ``block_ids`` (dim 0) of every layer, copied once into a new payload with its trailer."""
    import torch

    if not layers or not block_ids:
        raise ValueError("pack_blocks needs at least one layer and one block")
    sizes = [len(block_ids) * block_bytes(layer) for layer in layers]
    body = sum(sizes)
    out = torch.empty(body + TRAILER.size, dtype=torch.uint8)
    offset = 0
    for layer, size in zip(layers, sizes, strict=True):
        index = torch.as_tensor(block_ids, dtype=torch.long, device=layer.device)
        view = out[offset : offset + size].view(layer.dtype).view(len(block_ids), *layer.shape[1:])
        if layer.device.type == "cpu":
            torch.index_select(layer, 0, index, out=view)
        else:
            view.copy_(layer.index_select(0, index))
        offset += size
    crc = zlib.crc32(out[:body].numpy().data)
    out[body:] = torch.frombuffer(bytearray(TRAILER.pack(MAGIC, crc, body)), dtype=torch.uint8)
    return out


def unpack_blocks(payload: torch.Tensor, like: Sequence[torch.Tensor], num_blocks: int) -> list[torch.Tensor]:
    """Views of ``num_blocks`` blocks per layer (shaped and typed like ``like``) in a checked payload.

    CorruptPayload says what does not match: the payload's type or size, the trailer, or the checksum.
    """
    import torch

    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8 or payload.dim() != 1:
        raise CorruptPayload(f"expected a flat uint8 tensor, got {_describe(payload)}")
    sizes = [num_blocks * block_bytes(layer) for layer in like]
    body = sum(sizes)
    if payload.numel() != body + TRAILER.size:
        raise CorruptPayload(f"payload has {payload.numel()} bytes, expected {body + TRAILER.size}")
    payload = payload.cpu()
    magic, crc, length = TRAILER.unpack(payload[body:].numpy().tobytes())
    if magic != MAGIC or length != body:
        raise CorruptPayload(f"bad trailer (magic {magic!r}, length {length}, expected {body})")
    if zlib.crc32(payload[:body].numpy().data) != crc:
        raise CorruptPayload("checksum mismatch")
    views = []
    offset = 0
    for layer, size in zip(like, sizes, strict=True):
        views.append(payload[offset : offset + size].view(layer.dtype).view(num_blocks, *layer.shape[1:]))
        offset += size
    return views


def _describe(obj: object) -> str:
    shape = getattr(obj, "shape", None)
    dtype = getattr(obj, "dtype", None)
    return f"{type(obj).__name__}" + (f" {dtype} {tuple(shape)}" if shape is not None else "")
