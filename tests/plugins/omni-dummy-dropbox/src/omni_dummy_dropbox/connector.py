"""DropboxConnector: each payload is a file; the reader that renames it first consumes it."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from omni_core import OmniConnectorBase, validate_key


class DropboxConnector(OmniConnectorBase):
    """Consume-once payload files in a shared directory (works across processes on one host)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.root = Path(config.get("root", "/tmp/omni-dropbox"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._mine: set[str] = set()
        self.counters = {"puts": 0, "gets": 0, "errors": 0, "bytes_transferred": 0}

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        path = self._path(put_key)
        if self.closed:
            return False, 0, None
        try:
            blob = self.serialize_obj(data)
            tmp = self.root / f".tmp-{uuid.uuid4().hex}"
            tmp.write_bytes(blob)
            os.rename(tmp, path)
        except OSError:
            self.counters["errors"] += 1
            return False, 0, None
        self._mine.add(put_key)
        self.counters["puts"] += 1
        self.counters["bytes_transferred"] += len(blob)
        return True, len(blob), {"file": path.name, "size": len(blob)}

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        claimed = self.root / f".claimed-{uuid.uuid4().hex}"
        try:
            os.rename(self._path(get_key), claimed)
        except FileNotFoundError:
            return None
        try:
            blob = claimed.read_bytes()
        finally:
            claimed.unlink()
        self.counters["gets"] += 1
        return self.deserialize_obj(blob), len(blob)

    def cleanup(self, request_id: str) -> None:
        self._path(request_id).unlink(missing_ok=True)
        self._mine.discard(request_id)

    def health(self) -> dict[str, Any]:
        return {"status": "unhealthy" if self.closed else "healthy", **self.counters}

    def close(self) -> None:
        for key in list(self._mine):
            self.cleanup(key)
