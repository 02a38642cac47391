"""FIFO tensor pipes: vLLM's ``KVPipeBase`` and ``ConnectorKVPipe`` over any connector.

Importing this module does not import torch.
"""

from __future__ import annotations

import re
import threading
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

from .base import resolve_payload, validate_key

if TYPE_CHECKING:
    import torch
    from typing_extensions import Self

    from .base import OmniConnectorBase

#: Characters allowed in pipe names and stage ids: safe in POSIX shm names and Yuanrong keys.
_SAFE_PART = re.compile(r"[A-Za-z0-9_-]+")
#: Sequence numbers up to this many digits always fit in a key.
_MAX_SEQ_DIGITS = 20


class KVPipeBase(ABC):
    """Interface for sending and receiving tensors, or None, in FIFO order (vLLM's seed API)."""

    @abstractmethod
    def send_tensor(self, tensor: torch.Tensor | None) -> None:
        """Send a tensor, or None, via the pipe."""
        raise NotImplementedError

    @abstractmethod
    def recv_tensor(self) -> torch.Tensor | None:
        """Receive a tensor (can be None) from the pipe."""
        raise NotImplementedError

    @abstractmethod
    def close(self) -> None:
        """Close the pipe and release its resources."""
        raise NotImplementedError


def _check_part(what: str, value: object) -> str:
    if not isinstance(value, str) or not _SAFE_PART.fullmatch(value):
        raise ValueError(f"ConnectorKVPipe {what} {value!r} must be a non-empty string of [A-Za-z0-9_-] only")
    return value


class ConnectorKVPipe(KVPipeBase):
    """A FIFO pipe over any ``OmniConnectorBase``: every connector doubles as a KV pipe.

    Item ``n`` travels under key ``f"{name}_{from_stage}-{to_stage}_{n}"``.
    Build one end in the sender and one in the receiver with the same
    ``(name, from_stage, to_stage)``; distinct names on one edge never share a key.
    The receiver looks keys up with ``connector.get(..., metadata=None)``, so the
    connector must be key-addressed (put metadata is not carried to the receiver).
    Each end supports one sender thread and one receiver thread.

    recv_timeout: seconds ``recv_tensor`` waits before TimeoutError; None waits forever.
    poll_interval: longest single ``connector.get_with_deadline`` wait before the
    pipe re-checks ``close()`` and its deadline.
    owns_connector: ``close()`` also closes the connector.
    """

    def __init__(
        self,
        connector: OmniConnectorBase,
        from_stage: str,
        to_stage: str,
        *,
        name: str = "kvpipe",
        recv_timeout: float | None = 30.0,
        poll_interval: float = 0.0005,
        owns_connector: bool = False,
    ) -> None:
        self._name = _check_part("name", name)
        self._from = _check_part("from_stage", from_stage)
        self._to = _check_part("to_stage", to_stage)
        self._prefix = f"{name}_{from_stage}-{to_stage}_"
        validate_key(self._prefix + "9" * _MAX_SEQ_DIGITS)
        if recv_timeout is not None and not recv_timeout >= 0:
            raise ValueError(f"recv_timeout must be >= 0 or None, got {recv_timeout!r}")
        if not poll_interval > 0:
            raise ValueError(f"poll_interval must be > 0, got {poll_interval!r}")
        self._connector = connector
        self._recv_timeout = recv_timeout
        self._poll_interval = poll_interval
        self._owns_connector = owns_connector
        self._send_seq = 0
        self._recv_seq = 0
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._close_lock = threading.Lock()
        self._closed = False

    @property
    def name(self) -> str:
        """The pipe name that namespaces its keys."""
        return self._name

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run."""
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"{self!r} is closed")

    def send_tensor(self, tensor: torch.Tensor | None) -> None:
        """Put ``tensor`` (or None) under the next sequence key; RuntimeError names the key if put fails.

        A failed put does not consume a sequence number, so the next send reuses the key.
        """
        if tensor is not None:
            import torch

            if not isinstance(tensor, torch.Tensor):
                raise TypeError(f"send_tensor expects a torch.Tensor or None, got {type(tensor).__name__}")
        with self._send_lock:
            self._check_open()
            key = f"{self._prefix}{self._send_seq}"
            ok, _size, _metadata = self._connector.put(self._from, self._to, key, tensor)
            if not ok:
                raise RuntimeError(f"{type(self._connector).__name__} failed to put {key!r} for {self!r}")
            self._send_seq += 1

    def recv_tensor(self) -> torch.Tensor | None:
        """Return the next item in send order, waiting up to ``recv_timeout`` seconds.

        Raises TimeoutError naming the key and the timeout, or RuntimeError if the
        pipe is closed while waiting; either way the item stays next in line.
        """
        with self._recv_lock:
            key = f"{self._prefix}{self._recv_seq}"
            timeout = self._recv_timeout
            deadline = None if timeout is None else time.monotonic() + timeout
            while True:
                if self._closed:
                    self._connector.abandon_get(key)
                    raise RuntimeError(f"{self!r} is closed (next key {key!r})")
                now = time.monotonic()
                wait_until = now + self._poll_interval
                if deadline is not None:
                    wait_until = min(wait_until, deadline)
                result = self._connector.get_with_deadline(self._from, self._to, key, None, deadline=wait_until)
                if result is not None:
                    self._recv_seq += 1
                    return resolve_payload(result[0])
                if deadline is not None and time.monotonic() >= deadline:
                    self._connector.abandon_get(key)
                    raise TimeoutError(f"{self!r}: no item under key {key!r} within recv_timeout={timeout}s")

    def close(self) -> None:
        """Stop the pipe (idempotent); close the connector only if ``owns_connector``."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_connector:
            self._connector.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"ConnectorKVPipe(name={self._name!r}, {self._from}->{self._to}, "
            f"connector={type(self._connector).__name__})"
        )
