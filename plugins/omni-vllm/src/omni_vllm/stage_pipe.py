"""``StageKVPipe``: one stage's KV blocks to the next stage (thinker -> talker), in FIFO order.

A :class:`omni_core.ConnectorKVPipe` underneath (item ``n`` travels under
``f"{name}_{from_stage}-{to_stage}_{n}"``, in send order, ``None`` allowed): each item is one request's
blocks of every layer packed into a single self-checking payload (:mod:`.payload`), so one request
is one transfer on the connector's raw-data or tensor path.  The sender and the receiver handle
requests in the same order; a corrupt item raises :class:`~omni_vllm.payload.CorruptPayload` and is
consumed (the next ``recv`` gets the next item).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from omni_core import ConnectorKVPipe, OmniConnectorBase

from .payload import pack_blocks, unpack_blocks

if TYPE_CHECKING:
    import torch
    from typing_extensions import Self


class StageKVPipe:
    """Send (``send``) or receive (``recv_into``/``recv``) KV blocks on the edge ``from_stage -> to_stage``.

    ``layers`` are paged KV caches with blocks along dim 0 (vLLM's per-layer ``kv_caches``), or any
    tensors shaped that way; the receiver's must have the sender's block shape and dtype per layer.
    """

    def __init__(
        self,
        connector: OmniConnectorBase,
        from_stage: str,
        to_stage: str,
        *,
        name: str = "kv",
        recv_timeout: float | None = 30.0,
        owns_connector: bool = False,
    ) -> None:
        self._pipe = ConnectorKVPipe(
            connector, from_stage, to_stage, name=name, recv_timeout=recv_timeout, owns_connector=owns_connector
        )

    def send(self, layers: Sequence[torch.Tensor], block_ids: Sequence[int] | None) -> None:
        """Send blocks ``block_ids`` of every layer as the next item (None: an empty item, e.g. no KV)."""
        self._pipe.send_tensor(None if block_ids is None else pack_blocks(layers, block_ids))

    def recv(self, like: Sequence[torch.Tensor], num_blocks: int) -> list[torch.Tensor] | None:
        """The next item as one ``[num_blocks, ...]`` tensor per layer of ``like``; None for an empty item."""
        payload = self._pipe.recv_tensor()
        return None if payload is None else unpack_blocks(payload, like, num_blocks)

    def recv_into(self, layers: Sequence[torch.Tensor], block_ids: Sequence[int]) -> bool:
        """Copy the next item's blocks into blocks ``block_ids`` of ``layers``; False for an empty item."""
        import torch

        blocks = self.recv(layers, len(block_ids))
        if blocks is None:
            return False
        for layer, source in zip(layers, blocks, strict=True):
            layer.index_copy_(0, torch.as_tensor(block_ids, dtype=torch.long, device=layer.device),
                              source.to(layer.device))  # fmt: skip
        return True

    def close(self) -> None:
        """Close the pipe (and the connector if ``owns_connector``)."""
        self._pipe.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
