"""Store calls with a time bound: the Mooncake library waits up to 60 s on a transfer to a peer that went
silent (a partition), and a native call cannot be interrupted, so a bounded call runs on a worker thread
and its caller stops waiting at the bound."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any, TypeVar

T = TypeVar("T")

#: Worker threads of one connector's bounded calls.
WORKERS = 4


class CallTimedOut(TimeoutError):
    """A bounded call did not finish in time (it goes on in the background, holding what it uses)."""


class BoundedCalls:
    """Run calls on worker threads and wait for each at most ``timeout_s`` seconds (None: run them inline).

    A call given up keeps running to its end on its thread (the library bounds it) and keeps its buffers
    alive until then; :attr:`in_background` counts such calls.  A call still queued at the bound never runs.
    """

    def __init__(self, timeout_s: float | None, name: str) -> None:
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(WORKERS, thread_name_prefix=name) if timeout_s is not None else None
        self._lock = threading.Lock()
        self._in_background = 0

    def run(self, call: Callable[..., T], *args: Any) -> T:
        """``call(*args)``; CallTimedOut once ``timeout_s`` passed (exceptions of the call propagate)."""
        if self._executor is None:
            return call(*args)
        future = self._executor.submit(call, *args)
        try:
            return future.result(timeout=self.timeout_s)
        except FutureTimeout:
            if future.cancel():
                raise CallTimedOut(f"did not start within {self.timeout_s:g} s (every worker busy)") from None
            if future.done():  # it finished just now
                return future.result()
            with self._lock:
                self._in_background += 1
            future.add_done_callback(self._finished)  # runs at once if it finished meanwhile
            raise CallTimedOut(f"did not finish within {self.timeout_s:g} s") from None

    def _finished(self, _: Future[Any]) -> None:
        with self._lock:
            self._in_background -= 1

    @property
    def in_background(self) -> int:
        """Calls given up that have not ended yet."""
        with self._lock:
            return self._in_background

    def close(self) -> None:
        """Wait for every call to end (given-up ones included), then stop the workers."""
        if self._executor is not None:
            self._executor.shutdown(wait=True)
