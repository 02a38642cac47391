"""What a TransferEngine sender does for its receivers: answer queries and write payloads on request."""

from __future__ import annotations

import logging
import time
from typing import Any

from . import wire
from .engine import engine_transfer_bound_s
from .metrics import Counters
from .outbox import Outbox

logger = logging.getLogger("omni.mooncake.te")

#: A pull must be able to start this long before the receiver stops waiting.
START_MARGIN_S = 1.0
#: A claimed read may run for the engine's bound on one transfer plus this much (its lease).
CLAIM_MARGIN_S = 2.0


def claim_lease_s(size: int) -> float:
    """How long a payload of ``size`` bytes stays in place for a receiver that claimed it: the longest its
    TransferEngine read can run, plus a margin (the receiver drops a read that took longer)."""
    return engine_transfer_bound_s(size) + CLAIM_MARGIN_S


class SenderService:
    """Side-channel handlers of one sender (they hold no reference to the connector).

    ``rpc_port`` is the sender's TransferEngine port, given to receivers that read payloads themselves;
    None when its pool is device memory (receivers then pull).
    """

    def __init__(self, engine: Any, outbox: Outbox, counters: Counters, rpc_port: int | None) -> None:
        self._engine = engine
        self._outbox = outbox
        self._counters = counters
        self._rpc_port = rpc_port

    def query(self, request: wire.Query) -> dict[str, Any]:
        entry = self._outbox.find(request.key)
        if entry is None:
            return wire.error_reply(wire.NOT_FOUND, request.key)
        layout = entry.layout.to_wire() if entry.layout is not None else None
        reply = {"ok": True, "size": entry.size, "fast": entry.layout is not None, "layout": layout}
        if self._rpc_port is not None:
            reply.update(address=entry.buffer.data_ptr, token=entry.token, rpc_port=self._rpc_port)
        return reply

    def claim(self, request: wire.Claim) -> dict[str, Any]:
        """Keep the payload in place while the claiming receiver reads it (answered on the listener)."""
        if self._rpc_port is None:
            return wire.error_reply(wire.NOT_FOUND, "this sender's payloads are pulled, not read")
        claimed = self._outbox.claim(request, claim_lease_s)
        if isinstance(claimed, str):
            return wire.error_reply(claimed, request.key)
        return {"ok": True, "lease_ms": int(claim_lease_s(claimed.size) * 1000)}

    def done(self, request: wire.Done) -> None:
        """A receiver is done reading: count it, and free the payload once every reader has it."""
        entry = self._outbox.finish_claim(request.key, request.token, request.session, request.delivered)
        if entry is not None:
            self._counters.add("bytes_transferred" if request.delivered else "failed_transfers",
                               entry.size if request.delivered else 1)  # fmt: skip

    def pull(self, request: wire.Pull, received_at: float) -> dict[str, Any]:
        """Write the payload into the receiver's memory (one TransferEngine write), then account for it."""
        claimed = self._outbox.begin_pull(request.key, request.session)
        if isinstance(claimed, str):
            return wire.error_reply(claimed, request.key)
        delivered = False
        try:
            if request.capacity < claimed.size:
                return wire.error_reply(wire.TOO_SMALL, f"{claimed.size} bytes do not fit in {request.capacity}")
            start_by = received_at + request.wait_ms / 1000 - engine_transfer_bound_s(claimed.size) - START_MARGIN_S
            if time.monotonic() > start_by:
                return wire.error_reply(wire.EXPIRED, "the receiver stops waiting before the write could finish")
            source = claimed.buffer.data_ptr
            rc = self._engine.transfer_sync_write(request.session, source, request.address, claimed.size)
            if rc != 0:
                self._counters.add("failed_transfers")
                logger.warning("TransferEngine write of %r to %s failed (%s)", request.key, request.session, rc)
                return wire.error_reply(wire.TRANSFER_FAILED, f"TransferEngine write returned {rc}")
            delivered = True
            self._counters.add("bytes_transferred", claimed.size)
            return {"ok": True}
        finally:
            self._outbox.end_pull(claimed, request.session, delivered)
