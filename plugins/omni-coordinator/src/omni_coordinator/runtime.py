"""Run an :class:`OmniCoordinator` in a child process and hand out only its addresses."""

from __future__ import annotations

import os
import selectors
import subprocess
import sys
import time
import weakref

from .cli import ANNOUNCED_ENDPOINTS, parse_announcement


def _shutdown(proc: subprocess.Popen[bytes]) -> None:
    """Close the lifeline, then terminate -> wait 5 s -> kill -> wait 2 s."""
    if proc.stdin is not None:
        proc.stdin.close()
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=2.0)


def _read_endpoints(proc: subprocess.Popen[bytes], timeout: float) -> dict[str, str]:
    """The addresses the child prints once bound; RuntimeError if it dies or takes longer than ``timeout``."""
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    endpoints: dict[str, str] = {}
    pending = b""
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        while len(endpoints) < len(ANNOUNCED_ENDPOINTS):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"OmniCoordinator did not report its addresses within {timeout:.0f}s")
            if not selector.select(remaining):
                continue
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk:
                raise RuntimeError(f"OmniCoordinator died during startup (exit code {proc.wait()})")
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                found = parse_announcement(line.decode("utf-8", "replace"))
                if found is not None:
                    endpoints[found[0]] = found[1]
    return endpoints


class OmniCoordinatorRuntime:
    """Own one coordinator child process and its two bound addresses.

    The child is a fresh interpreter (``python -m omni_coordinator.cli serve``)
    started with plain arguments: nothing is pickled or forked.  It binds port
    0 and reports the real ports (no probe-then-bind race), runs in its own
    process group (a terminal Ctrl-C reaches the parent, which decides), and
    exits when the parent closes it or dies (its stdin closes).  The
    coordinator object itself is never exposed: use the stage and hub clients.
    """

    def __init__(
        self,
        *,
        host: str,
        heartbeat_timeout: float,
        curve_secret_key: str | None = None,
        curve_authorized_keys: str | None = None,
        startup_timeout: float = 30.0,
    ) -> None:
        if not host:
            raise ValueError("host must be non-empty")
        if not heartbeat_timeout > 0:
            raise ValueError(f"heartbeat_timeout must be > 0, got {heartbeat_timeout}")
        command = [sys.executable, "-m", "omni_coordinator.cli", "serve", "--stdin-lifeline", "--host", host,
                   "--heartbeat-timeout", repr(float(heartbeat_timeout))]
        if curve_secret_key:
            command += ["--curve-secret-key", curve_secret_key]
        if curve_authorized_keys:
            command += ["--curve-authorized-keys", curve_authorized_keys]
        self._proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
        self._finalizer = weakref.finalize(self, _shutdown, self._proc)
        try:
            endpoints = _read_endpoints(self._proc, startup_timeout)
        except BaseException:
            self._finalizer()
            raise
        finally:
            assert self._proc.stdout is not None
            self._proc.stdout.close()
        #: Address stage clients connect to.
        self.router_address: str = endpoints["router"]
        #: Address hub clients subscribe to.
        self.pub_address: str = endpoints["pub"]

    @property
    def pid(self) -> int:
        """Process id of the coordinator child."""
        return self._proc.pid

    def close(self) -> None:
        """Stop the coordinator child.  Idempotent."""
        self._finalizer()
