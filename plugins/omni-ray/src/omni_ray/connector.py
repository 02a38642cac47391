"""``RayConnector``: payloads in Ray's object store, owned by a per-node actor, readable from any node."""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
import uuid
from typing import Any

import ray
from ray.exceptions import GetTimeoutError, RayActorError, RayError

from omni_core import (
    Capabilities,
    ConfigError,
    Delivery,
    OmniConnectorBase,
    OmniSerializer,
    SerializationError,
    validate_key,
)

from . import session
from .owner import OwnerDirectory, OwnerExiting
from .staging import StagingArea

logger = logging.getLogger("omni.ray")
#: The Ray namespace of the payload owners when the config names none (the ray launcher sets one per run).
NAMESPACE_ENV = "OMNI_RAY_NAMESPACE"
DEFAULT_NAMESPACE = "omni"


@dataclasses.dataclass(frozen=True)
class RaySettings:
    """The connector's settings (the keys of ``ConnectorSpec.extra``, see ``omni_ray.hooks``)."""

    address: str | None = None
    namespace: str | None = None
    readers: int = 1
    ttl_seconds: float = 600.0
    zero_copy: bool = False
    device: str | None = None
    call_timeout_s: float = 30.0
    owner_idle_s: float = 60.0
    staging_bytes: int = 64 << 20

    @classmethod
    def from_extra(cls, extra: dict[str, Any]) -> RaySettings:
        known = {f.name for f in dataclasses.fields(cls)}
        settings = cls(**{k: v for k, v in extra.items() if k in known and v is not None})
        if settings.namespace == "":
            raise ConfigError("RayConnector key 'namespace' must not be empty")
        if settings.readers < 1:
            raise ConfigError(f"RayConnector key 'readers' must be >= 1, got {settings.readers}")
        for field in ("ttl_seconds", "call_timeout_s", "owner_idle_s"):
            if getattr(settings, field) <= 0:
                raise ConfigError(f"RayConnector key {field!r} must be > 0, got {getattr(settings, field)}")
        if settings.staging_bytes < 0:
            raise ConfigError(f"RayConnector key 'staging_bytes' must be >= 0, got {settings.staging_bytes}")
        return settings


class RayConnector(OmniConnectorBase):
    """Payloads as objects in Ray's object store, handed over by key between any nodes of a Ray cluster.

    ``put`` serializes with ``OmniSerializer`` (tensor bytes copied once into one frame; nothing is
    pickled) and hands the frame to this node's payload owner, which stores it as its own object, so the
    payload outlives the putting process until it is read.  ``get`` claims the key from the owner the
    metadata names (without metadata: this node's owner, then every other) and fetches the object from
    whichever node holds it; with ``zero_copy`` tensors and arrays are read-only views into the object
    store.  Reads are consume-once, or with ``readers: N`` a broadcast to N readers; ``cleanup`` frees a
    payload this connector put and nobody has read yet.
    """

    capabilities = Capabilities(delivery=Delivery.CONSUME_ONCE, cross_host=True)

    def __init__(self, config: dict[str, Any] | None = None) -> None:
        self.config = dict(config or {})
        self.stage_id = self.config.get("stage_id", -1)
        self.settings = settings = RaySettings.from_extra(self.config)
        if settings.readers > 1:
            self.capabilities = dataclasses.replace(self.capabilities, delivery=Delivery.BROADCAST)  # type: ignore[misc]
        self._shared_session = session.attach(settings.address, settings.call_timeout_s)
        context = ray.get_runtime_context()
        self.node_id: str = context.get_node_id()
        self.node_ip: str = ray.util.get_node_ip_address()
        self.connector_id = uuid.uuid4().hex
        self.namespace = settings.namespace or os.environ.get(NAMESPACE_ENV) or DEFAULT_NAMESPACE
        self._owners = OwnerDirectory(self.namespace, self.node_id, settings.owner_idle_s)
        self._owners.local()  # started now, so the first put does not wait for it
        self._staging = StagingArea(settings.staging_bytes)
        self._metrics = {"puts": 0, "gets": 0, "bytes_transferred": 0, "bytes_received": 0, "errors": 0}
        self._lock = threading.Lock()

    # -- contract ---------------------------------------------------------------------------
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Store ``data`` under ``put_key``; ``(True, size, {"ray": {"owner", "node_ip"}, "size"})``."""
        validate_key(put_key)
        self._check_open()
        settings = self.settings
        try:
            payload = OmniSerializer.prepare(data)
            with self._staging.frame(payload.nbytes) as frame:
                payload.write_into(frame)
                self._owners.call_local(
                    "hold", put_key, frame, self.connector_id, settings.readers, settings.ttl_seconds,
                    timeout=settings.call_timeout_s,
                )  # fmt: skip
        except Exception as exc:  # put reports failure as (False, 0, None), by contract
            logger.warning("RayConnector put of %r failed: %s", put_key, exc)
            self._count("errors")
            return False, 0, None
        size = payload.nbytes
        self._count("puts", "bytes_transferred", size)
        return True, size, {"ray": {"owner": self._owners.local_name, "node_ip": self.node_ip}, "size": size}

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Claim and decode the payload under ``get_key``; None if there is none (yet) for this reader."""
        validate_key(get_key)
        self._check_open()
        ref = self._claim(get_key, _owner_from(metadata))
        if ref is None:
            return None
        try:
            frame = ray.get(ref, timeout=self.settings.call_timeout_s)
            obj = OmniSerializer.deserialize(frame, zero_copy=self.settings.zero_copy, device=self.settings.device)
        except (RayError, SerializationError) as exc:  # the object was lost (its node died) or is corrupt
            logger.warning("RayConnector get of %r failed after it was claimed: %s", get_key, exc)
            self._count("errors")
            return None
        size = len(memoryview(frame))
        self._count("gets", "bytes_received", size)
        return obj, size

    def cleanup(self, request_id: str) -> None:
        """Free the unread payload this connector put under exactly ``request_id`` (others' are never touched)."""
        validate_key(request_id)
        if self.closed:
            return
        try:
            self._owners.call_local("drop", request_id, self.connector_id, timeout=self.settings.call_timeout_s)
        except (RayError, OwnerExiting) as exc:
            logger.warning("RayConnector cleanup of %r failed: %s", request_id, exc)
            self._count("errors")

    def health(self) -> dict[str, Any]:
        """``{"status", "puts", "gets", "bytes_transferred", "bytes_received", "errors", "node_id", "node_ip",
        "owner"}``; ``owner`` is this node's owner's ``stats()`` (None when it is not running)."""
        with self._lock:
            metrics = dict(self._metrics)
        usable = not self.closed and ray.is_initialized()
        owner = None
        if usable:
            handle = self._owners.find(self._owners.local_name)
            try:
                owner = None if handle is None else ray.get(handle.stats.remote(), timeout=self.settings.call_timeout_s)
            except (RayActorError, GetTimeoutError):
                self._owners.forget(self._owners.local_name)
        return {
            "status": "healthy" if usable else "unhealthy",
            **metrics,
            "node_id": self.node_id,
            "node_ip": self.node_ip,
            "owner": owner,
        }

    def close(self) -> None:
        """Disconnect from Ray if this was the last connector using the connection it made; payloads stay."""
        session.detach(self._shared_session)

    # -- internals ------------------------------------------------------------------------
    def _claim(self, key: str, owner: str | None) -> Any | None:
        """The reference to ``key`` taken from its owner (or from the first owner holding it), or None."""
        names = [owner] if owner else self._owners.names()
        for name in names:
            handle = self._owners.find(name)
            if handle is None:
                continue
            try:
                taken = ray.get(handle.take.remote(key, self.connector_id), timeout=self.settings.call_timeout_s)
            except (RayActorError, OwnerExiting):
                self._owners.forget(name)
                continue
            except GetTimeoutError:
                logger.warning("RayConnector get of %r: owner %s did not answer", key, name)
                self._count("errors")
                continue
            if taken is not None:
                return taken[0]
        return None

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("RayConnector is closed")

    def _count(self, counter: str, bytes_counter: str | None = None, nbytes: int = 0) -> None:
        with self._lock:
            self._metrics[counter] += 1
            if bytes_counter:
                self._metrics[bytes_counter] += nbytes


def _owner_from(metadata: dict[str, Any] | None) -> str | None:
    """The owner name a ``put``'s metadata carries; None for other metadata (then every owner is asked)."""
    handle = metadata.get("ray") if isinstance(metadata, dict) else None
    owner = handle.get("owner") if isinstance(handle, dict) else None
    return owner if isinstance(owner, str) and owner else None
