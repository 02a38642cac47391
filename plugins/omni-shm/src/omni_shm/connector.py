"""``SharedMemoryConnector``: key-addressed payloads in shared memory that any process on the host can get."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import threading
import time
import weakref
from typing import Any

from omni_core import Capabilities, Delivery, OmniConnectorBase, OmniSerializer, SerializationError, validate_key

from . import names
from .reader import Claim, PayloadReader
from .sweep import sweep_orphans
from .watch import EntryWatch
from .writer import PayloadWriter

logger = logging.getLogger("omni.shm")


@dataclasses.dataclass(frozen=True)
class ShmConfig:
    """The connector's settings (the keys of ``ConnectorSpec.extra``, see ``omni_shm.hooks``)."""

    namespace: str = "omni"
    shm_dir: str = "/dev/shm"
    device: str | None = None
    readers: int = 1
    ttl_seconds: float = 600.0
    zero_copy: bool = False
    arena_bytes: int = 16 << 20
    keep_idle_bytes: int = 512 << 20
    sweep_interval_s: float = 5.0
    pin_memory: bool = True

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> ShmConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        config = cls(**{k: v for k, v in extra.items() if k in known and v is not None})
        names.validate_namespace(config.namespace)
        for field, minimum in (("readers", 1), ("arena_bytes", 4096), ("keep_idle_bytes", 0)):
            if getattr(config, field) < minimum:
                raise ValueError(f"SharedMemoryConnector {field} must be >= {minimum}, got {getattr(config, field)}")
        for field in ("ttl_seconds", "sweep_interval_s"):
            if getattr(config, field) < 0:
                raise ValueError(f"SharedMemoryConnector {field} must be >= 0, got {getattr(config, field)}")
        if not os.path.isdir(config.shm_dir):
            raise ValueError(f"SharedMemoryConnector shm_dir {config.shm_dir!r} is not a directory")
        return config


class SharedMemoryConnector(OmniConnectorBase):
    """Payloads in shared-memory slabs, published under their key so any process on the host can get them.

    ``put`` serializes straight into a reused, pre-faulted slab region (tensor bytes are copied once) and
    publishes the key with one ``symlink``; ``get`` (metadata optional) claims the payload, decodes it and
    hands the region back.  Reads are consume-once, or with ``readers: N`` a broadcast to N readers.  With
    ``zero_copy`` tensors and arrays are views into shared memory, released by :meth:`release` or when the
    returned object is dropped.
    """

    capabilities = Capabilities(raw_data=False, delivery=Delivery.CONSUME_ONCE)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.stage_id = self.config.get("stage_id", -1)
        settings = ShmConfig.from_extra(self.config)
        self.settings = settings
        if settings.readers > 1:
            self.capabilities = dataclasses.replace(self.capabilities, delivery=Delivery.BROADCAST)  # type: ignore[misc]
        device = settings.device
        to_cuda = device is not None and device.startswith("cuda")
        self._directory = os.path.normpath(settings.shm_dir)
        self._writer = PayloadWriter(
            self._directory,
            settings.namespace,
            arena_bytes=settings.arena_bytes,
            keep_idle_bytes=settings.keep_idle_bytes,
            ttl=settings.ttl_seconds,
            pin_memory=settings.pin_memory,
        )
        self._reader = PayloadReader(self._directory, settings.namespace, pin=to_cuda and settings.pin_memory)
        self._decode_device = device if device not in (None, "cpu") else None
        self._views: dict[str, weakref.finalize] = {}  # key -> release of a zero-copy read still held
        self._metrics = {
            "puts": 0, "gets": 0, "bytes_transferred": 0, "bytes_received": 0, "errors": 0, "orphans_reclaimed": 0,
        }  # fmt: skip
        self._lock = threading.Lock()
        self._next_sweep = 0.0
        self._closer = weakref.finalize(self, _close_parts, self._writer, self._reader)
        self._maintain()

    # -- contract ---------------------------------------------------------------------------
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Publish ``data`` under ``put_key``; returns ``(True, size, {"shm": {"name", "size"}, "size"})``."""
        validate_key(put_key)
        self._check_open()
        self._tick()
        try:
            payload = OmniSerializer.prepare(data)
            size = payload.nbytes
            self._writer.publish(self._entry_path(put_key), payload, self.settings.readers, self._reader.retire_entry)
        except Exception as exc:  # put reports failure as (False, 0, None), by contract
            logger.warning("SharedMemoryConnector put of %r failed: %s", put_key, exc)
            self._count("errors")
            return False, 0, None
        self._count("puts", "bytes_transferred", size)
        return True, size, {"shm": {"name": put_key, "size": size}, "size": size}

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Claim and decode the payload under ``get_key`` (or the key a ``{"shm": {"name"}}`` handle names).

        Other metadata (None, ``{}``, RDMA-style host/port) falls back to the key.  Returns None when there
        is no payload (not yet, already consumed, or corrupt: then it is counted as an error and reclaimed).
        """
        key = _key_from(get_key, metadata)
        self._check_open()
        self._tick()
        claim = self._reader.claim(self._entry_path(key))
        if claim is None:
            return None
        zero_copy = self.settings.zero_copy and self._decode_device is None
        frame = claim.exported_frame() if zero_copy else claim.frame()
        held = False
        try:
            obj = OmniSerializer.deserialize(frame, zero_copy=zero_copy, device=self._decode_device)
            if zero_copy:  # released when the last view into the frame is dropped, or by release(key)
                self._views[key] = weakref.finalize(frame, self._release_view, key, claim)
                held = True
        except SerializationError as exc:
            logger.warning("SharedMemoryConnector get of %r: corrupt payload dropped: %s", key, exc)
            self._count("errors")
            return None
        finally:
            if not held:
                self._reader.release(claim)
        self._count("gets", "bytes_received", claim.length)
        return obj, claim.length

    def get_with_deadline(
        self,
        from_stage: str,
        to_stage: str,
        get_key: str,
        metadata: dict[str, Any] | None = None,
        *,
        deadline: float,
    ) -> tuple[Any, int] | None:
        """Like ``get``, but sleeps (woken by the key's entry appearing) until ``deadline`` (monotonic)."""
        result = self.get(from_stage, to_stage, get_key, metadata)
        if result is not None or time.monotonic() >= deadline:
            return result
        key = _key_from(get_key, metadata)
        with EntryWatch(self._directory, os.path.basename(self._entry_path(key))) as watch:
            while result is None:
                result = self.get(from_stage, to_stage, get_key, metadata)
                if result is None and not watch.wait(deadline):
                    return None
        return result

    def release(self, get_key: str) -> None:
        """Hand back the zero-copy payload got under ``get_key`` now; its views must not be used after this."""
        view = self._views.pop(get_key, None)
        if view is not None:
            view()

    def cleanup(self, request_id: str) -> None:
        """Withdraw the unconsumed payload this connector published under exactly ``request_id``.

        Payloads other connectors published, and newer generations of the key, are never touched.
        """
        validate_key(request_id)
        self._writer.retire(self._entry_path(request_id))

    def reap_consumed(self) -> int:
        """Reclaim consumed, expired and abandoned regions and dead processes' leftovers now; returns how many."""
        return self._maintain()

    def health(self) -> dict[str, Any]:
        """``{"status", "puts", "gets", "bytes_transferred", "bytes_received", "errors", "orphans_reclaimed", ...}``."""
        usable = not self.closed and os.access(self._directory, os.W_OK | os.X_OK)
        with self._lock:
            metrics = dict(self._metrics)
        metrics["errors"] += self._reader.open_errors  # slabs that could not be mapped (e.g. no descriptors left)
        return {
            "status": "healthy" if usable else "unhealthy",
            **metrics,
            "expired": self._writer.expired,
            "pending": self._writer.pending,
            "shm_bytes": self._writer.shm_bytes,
            "pool_used_bytes": self._writer.used_bytes,
        }

    def pool_used_bytes(self) -> int:
        """Bytes of this connector's slab regions not reclaimed yet (its published payloads, read or not)."""
        return self._writer.used_bytes

    def close(self) -> None:
        """Sweep what dead processes left, withdraw unconsumed payloads, remove our slabs, unmap what we read."""
        with contextlib.suppress(OSError):
            self._maintain()
        self._closer()

    # -- internals ----------------------------------------------------------------------------
    def _entry_path(self, key: str) -> str:
        return f"{self._directory}/{names.key_entry_name(self.settings.namespace, key)}"

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("SharedMemoryConnector is closed")

    def _count(self, name: str, bytes_name: str | None = None, size: int = 0) -> None:
        with self._lock:
            self._metrics[name] += 1
            if bytes_name is not None:
                self._metrics[bytes_name] += size

    def _tick(self) -> None:
        if time.monotonic() >= self._next_sweep:
            self._maintain()

    def _maintain(self) -> int:
        """Reclaim, sweep and unmap; a sweep that cannot list ``shm_dir`` (no descriptors left) is an error, not
        a failure of the put or get that ran it: it is counted and tried again next time."""
        self._next_sweep = time.monotonic() + self.settings.sweep_interval_s
        reclaimed = self._writer.reclaim()
        try:
            orphans = sweep_orphans(self._directory, self._reader, self.settings.ttl_seconds)
        except OSError as exc:
            logger.warning("SharedMemoryConnector sweep of %s failed: %s", self._directory, exc)
            self._count("errors")
            orphans = 0
        self._reader.trim()
        with self._lock:
            self._metrics["orphans_reclaimed"] += orphans
        return reclaimed + orphans

    def _release_view(self, key: str, claim: Claim) -> None:
        view = self._views.get(key)
        if view is not None and not view.alive:  # this very finalizer is running: forget it
            del self._views[key]
        self._reader.release(claim)


def _close_parts(writer: PayloadWriter, reader: PayloadReader) -> None:
    writer.close()
    reader.close()


def _key_from(get_key: str, metadata: Any) -> str:
    """The key to read: ``get_key``, or the name in an ``{"shm": {"name": ...}}`` handle (maybe ``{key: meta}``)."""
    if isinstance(metadata, dict) and get_key in metadata:
        metadata = metadata[get_key]
    if isinstance(metadata, dict) and isinstance(metadata.get("shm"), dict):
        name = metadata["shm"].get("name")
        if isinstance(name, str):
            return validate_key(name)
    return validate_key(get_key)
