"""Content-addressed keys: each KV block is named by a chained hash of the tokens up to its end.

Block ``i``'s digest is ``blake2b(digest of block i-1 + tokens of block i)``; the chain starts at a
root that covers the engine's KV layout (model, dtypes, block size, heads) and anything else that
changes the KV of the same tokens (LoRA, multimodal inputs, cache salt).  Two engines with the same
model and layout give a prompt the same keys, so a decode engine finds what a prefill engine saved
with no proxy between them (vLLM's per-process block hashes are seeded randomly, so they cannot be
shared).  One save is named after its last block: ``<namespace>-<digest>``; layer ``L`` of it
lives under ``<name>-<L>`` and its manifest under ``<name>-m``.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Iterable, Sequence

DIGEST_BYTES = 16


class BlockKeys:
    """Key names of one engine layout (``fingerprint``) under ``namespace``."""

    def __init__(self, namespace: str, fingerprint: Iterable[object], block_size: int) -> None:
        if block_size <= 0:
            raise ValueError(f"block_size must be > 0, got {block_size}")
        self.namespace = namespace
        self.block_size = block_size
        self._root = _digest(b"omni-kv/1", repr(tuple(fingerprint)).encode())

    def chain(self, token_ids: Sequence[int], num_blocks: int, salt: Iterable[str] = ()) -> list[str]:
        """Hex digests of the first ``num_blocks`` whole blocks of ``token_ids`` (each covers its prefix)."""
        if num_blocks * self.block_size > len(token_ids):
            raise ValueError(f"{num_blocks} blocks need {num_blocks * self.block_size} tokens, got {len(token_ids)}")
        parent = _digest(self._root, "\x00".join(salt).encode())
        digests = []
        size = self.block_size
        for index in range(num_blocks):
            parent = _digest(parent, array("q", token_ids[index * size : (index + 1) * size]).tobytes())
            digests.append(parent.hex())
        return digests

    def save_name(self, digest: str) -> str:
        """The name of a save ending at the block with ``digest``."""
        return f"{self.namespace}-{digest}"


def layer_key(name: str, layer: int) -> str:
    """The key of layer ``layer``'s payload in save ``name``."""
    return f"{name}-{layer}"


def manifest_key(name: str) -> str:
    """The key of save ``name``'s manifest (written last: its presence means the save is complete)."""
    return f"{name}-m"


def _digest(*parts: bytes) -> bytes:
    h = hashlib.blake2b(digest_size=DIGEST_BYTES)
    for part in parts:
        h.update(len(part).to_bytes(8, "little"))
        h.update(part)
    return h.digest()
