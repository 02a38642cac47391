"""The connector contract: ``OmniConnectorBase``."""

from __future__ import annotations

import functools
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Any, ClassVar

from .capabilities import Capabilities
from .metrics import timed_call

#: Longest key any connector must accept (longer keys are rejected up front).
MAX_KEY_LENGTH = 200


def validate_key(key: object, *, max_length: int = MAX_KEY_LENGTH, forbidden: str = "\x00/") -> str:
    """Return ``key`` if it is a usable connector key, else raise ValueError naming it."""
    if not isinstance(key, str):
        raise ValueError(f"connector key must be a str, got {type(key).__name__}: {key!r}")
    if not key:
        raise ValueError("connector key must not be empty")
    if len(key) > max_length:
        raise ValueError(f"connector key {key[:40]!r}... is {len(key)} characters long (max {max_length})")
    if any(c in key for c in forbidden):  # per forbidden character, not per key character: keys are hot
        bad = sorted({c for c in key if c in forbidden})
        raise ValueError(f"connector key {key!r} contains forbidden character(s) {bad!r}")
    return key


def resolve_payload(obj: Any) -> Any:
    """The payload a ``get`` returned; raw-buffer handles (``payload()``, ``release()``) are materialized, released."""
    payload = getattr(obj, "payload", None)
    if callable(payload) and callable(getattr(obj, "release", None)):
        try:
            return payload()
        finally:
            obj.release()
    return obj


class OmniConnectorBase(ABC):
    """Base class for all OmniConnectors.

    Stage ids are strings at this API.  ``put`` returns ``(ok, size, metadata)``
    and reports failures as ``(False, 0, None)``; ``get`` returns ``(obj, size)``
    or ``None`` when the payload is not (yet) available.  Connectors are context
    managers and ``close()`` is idempotent (enforced for every subclass).
    """

    supports_raw_data: ClassVar[bool] = False
    capabilities: ClassVar[Capabilities] = Capabilities()
    _omni_closed: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        own = cls.__dict__
        if "capabilities" in own:
            cls.supports_raw_data = cls.capabilities.raw_data
        elif "supports_raw_data" in own:
            cls.capabilities = replace(cls.capabilities, raw_data=bool(cls.supports_raw_data))
        if "close" in own and not getattr(own["close"], "_omni_idempotent", False):
            cls.close = _idempotent_close(own["close"])  # type: ignore[method-assign]
        for name, kind in (("put", "put"), ("get", "get"), ("get_with_deadline", "get")):
            if name in own and not getattr(own[name], "_omni_timed", False):
                setattr(cls, name, timed_call(own[name], kind))  # counted and timed while metrics record

    # -- contract ---------------------------------------------------------
    @abstractmethod
    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        """Store ``data`` under ``put_key`` for the edge; return ``(ok, serialized_size, metadata)``."""

    @abstractmethod
    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        """Return ``(obj, serialized_size)`` for ``get_key``, or ``None`` if not available."""

    @abstractmethod
    def cleanup(self, request_id: str) -> None:
        """Release resources held for ``request_id``."""

    @abstractmethod
    def health(self) -> dict[str, Any]:
        """Return ``{"status": "healthy"|"unhealthy", ...counters}``."""

    @abstractmethod
    def close(self) -> None:
        """Release every resource held by this connector (idempotent)."""

    # -- optional hooks -----------------------------------------------------
    def get_with_deadline(
        self,
        from_stage: str,
        to_stage: str,
        get_key: str,
        metadata: dict[str, Any] | None = None,
        *,
        deadline: float,
    ) -> tuple[Any, int] | None:
        """Poll ``get`` until it succeeds or ``time.monotonic()`` passes ``deadline``."""
        delay = 0.0005
        while True:
            result = self.get(from_stage, to_stage, get_key, metadata)
            if result is not None:
                return result
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(delay, remaining))
            delay = min(delay * 2, 0.01)

    def abandon_get(self, get_key: str) -> None:  # noqa: B027 - optional hook, no-op by default
        """Forget a pending discovery for ``get_key`` (never cancels an active read)."""

    def reap_consumed(self) -> int:
        """Producer-side sweep of payloads consumed elsewhere; returns how many were reaped."""
        return 0

    def pool_used_bytes(self) -> int | None:
        """Bytes of this connector's buffer pool in use now, or None if it has no pool.

        Metrics read it at every scrape (``omni_connector_pool_used_bytes``): it must be cheap, never a network call.
        """
        return None

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._omni_closed

    # -- helpers ------------------------------------------------------------
    @staticmethod
    def serialize_obj(obj: Any) -> bytes:
        """Serialize a Python object to bytes using the central serializer."""
        from .serialization import OmniSerializer

        return OmniSerializer.serialize(obj)

    @staticmethod
    def deserialize_obj(data: bytes) -> Any:
        """Deserialize bytes produced by :meth:`serialize_obj`."""
        from .serialization import OmniSerializer

        return OmniSerializer.deserialize(data)

    @staticmethod
    def _make_key(key: str, from_stage: str, to_stage: str, separator: str = "@") -> str:
        return f"{key}{separator}{from_stage}_{to_stage}"

    def __enter__(self) -> OmniConnectorBase:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _idempotent_close(close: Any) -> Any:
    @functools.wraps(close)
    def wrapper(self: OmniConnectorBase) -> None:
        if self._omni_closed:
            return
        try:
            close(self)
        finally:
            self._omni_closed = True

    wrapper._omni_idempotent = True  # type: ignore[attr-defined]
    return wrapper
