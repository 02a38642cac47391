"""What a TransferEngine sender does for its receivers: answer queries and write payloads on request."""

from __future__ import annotations

import logging
import time
from typing import Any

from . import wire
from .engine import engine_transfer_bound_s
from .metrics import Counters
from .outbox import Outbox

logger = logging.getLogger(__name__)

#: A pull must be able to start this long before the receiver stops waiting.
START_MARGIN_S = 1.0


class SenderService:
    """Side-channel handlers of one sender (they hold no reference to the connector)."""

    def __init__(self, engine: Any, outbox: Outbox, counters: Counters) -> None:
        self._engine = engine
        self._outbox = outbox
        self._counters = counters

    def query(self, request: wire.Query) -> dict[str, Any]:
        entry = self._outbox.find(request.key)
        if entry is None:
            return wire.error_reply(wire.NOT_FOUND, request.key)
        layout = entry.layout.to_wire() if entry.layout is not None else None
        return {"ok": True, "size": entry.size, "fast": entry.layout is not None, "layout": layout}

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
