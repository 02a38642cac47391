"""A connector in a child process, driven by JSON lines (multi-process tests and benchmarks).

The child runs ``python -m omni_core.remote '<spec json>'``.  Each stdin line is
one command; each answer is one JSON line on stdout (nothing is pickled):

- ``{"op": "put", "from": "0", "to": "1", "key": K, "kind": KIND}`` -> ``{"ok", "size", "metadata", "put_s"}``
- ``{"op": "get", "from": "0", "to": "1", "key": K, "metadata": M, "timeout": S}`` ->
  ``{"found", "size", "checksum", "get_s"}``
- ``{"op": "cleanup", "key": K}`` -> ``{"cleaned": true}`` (the connector's ``cleanup(K)``);
- ``{"op": "health"}`` -> the connector's ``health()``;
- ``{"op": "close"}`` -> ``{"closed": true}`` and exit.

:class:`JsonLinesChannel` is the one JSON-lines protocol of the repository: the test children, the reliability
stages and the stage replicas of ``omni run`` (whatever launcher starts them) all speak it.

KIND is a name from :mod:`omni_core.samples` or ``"bytes:N"`` (an N-byte uint8 tensor).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import sys
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Any

from .base import resolve_payload
from .digest import checksum
from .factory import OmniConnectorFactory
from .samples import make_payload
from .spec import ConnectorSpec

if TYPE_CHECKING:
    from typing_extensions import Self


#: Seconds a child has, after SIGTERM, before it is killed.
TERM_GRACE_S = 5.0


class ChildGone(RuntimeError):
    """The peer (a child process, a stage replica) is gone: it exited, was killed or closed its side."""


class JsonLinesChannel(ABC):
    """A peer driven by JSON lines both ways: a command per line out, a message per line in.

    Subclasses provide the transport: :meth:`fileno` (readable when the peer wrote something), :meth:`_receive`
    (one read; ``b""`` once the peer closed its side), :meth:`_transmit` (raise :class:`ChildGone` when the peer
    is gone), :meth:`_gone` (why it is gone) and :meth:`kill`.  This base buffers and parses: :meth:`pump` moves
    what arrived into :attr:`lines`, :meth:`read` waits for the next message, :meth:`wait_ready` for the peer's
    greeting (``{"ready": true, ...}``, or ``{"ready": false, "error": ...}``), :meth:`request_close` asks it to
    close (``{"op": "close"}``).  :attr:`alive` turns False once the peer is gone.
    """

    timeout: float = 60.0

    def __init__(self) -> None:
        self._buffer = b""
        self.lines: list[dict[str, Any]] = []
        self.hello: dict[str, Any] = {}
        self.alive = True
        self._close_sent = False

    @abstractmethod
    def fileno(self) -> int:
        """A descriptor that is readable when the peer wrote something (for ``select``)."""

    @abstractmethod
    def _receive(self) -> bytes:
        """One read of what the peer wrote; ``b""`` once it closed its side."""

    @abstractmethod
    def _transmit(self, data: bytes) -> None:
        """Write ``data`` to the peer; :class:`ChildGone` if it is gone."""

    @abstractmethod
    def _gone(self) -> str:
        """Why the peer is gone, as a sentence's end (``"exited with code 1"``)."""

    @abstractmethod
    def kill(self) -> None:
        """Stop the peer at once, without a chance to clean up."""

    def pump(self) -> bool:
        """Move what the peer wrote into :attr:`lines` (one read: call when :meth:`fileno` is readable).

        Returns False once the peer closed its side (and marks it not :attr:`alive`).
        """
        chunk = self._receive()
        if not chunk:
            self.alive = False
            return False
        *complete, self._buffer = (self._buffer + chunk).split(b"\n")
        self.lines.extend(json.loads(line) for line in complete if line.strip())
        return True

    def send(self, command: dict[str, Any]) -> None:
        """Send one command without waiting for an answer; :class:`ChildGone` (and not alive) if the peer is gone."""
        try:
            self._transmit((json.dumps(command) + "\n").encode())
        except ChildGone:
            self.alive = False
            raise

    def read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next message, within ``timeout`` seconds (default :attr:`timeout`; TimeoutError after that)."""
        wait = self.timeout if timeout is None else timeout
        deadline = time.monotonic() + wait
        while not self.lines:
            if not self.alive:
                raise ChildGone(f"{self} {self._gone()}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self} did not answer within {wait} s")
            if select.select([self.fileno()], [], [], remaining)[0] and not self.pump():
                raise ChildGone(f"{self} {self._gone()}")
        return self.lines.pop(0)

    def call(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return the next message."""
        self.send(command)
        return self.read(timeout)

    def wait_ready(self, timeout: float | None = None) -> dict[str, Any]:
        """Read the greeting into :attr:`hello`; kill the peer and raise ``RuntimeError`` unless it is ready."""
        try:
            self.hello = self.read(timeout)
        except BaseException:
            self.kill()
            raise
        if not self.hello.get("ready"):
            self.kill()
            raise RuntimeError(f"{self} failed to start: {self.hello.get('error', self.hello)}")
        return self.hello

    def request_close(self) -> None:
        """Send ``{"op": "close"}`` once, without waiting for the peer (nothing if it is gone)."""
        if not self._close_sent and self.alive:
            self._close_sent = True
            with contextlib.suppress(ChildGone):
                self.send({"op": "close"})


class JsonLinesChild(JsonLinesChannel):
    """A child process driven by JSON lines over its stdin and stdout.

    The child's first line is its greeting, ``{"ready": true, ...}`` (or ``{"ready": false, "error": ...}``),
    kept in :attr:`hello`; with ``wait=True`` (the default) the constructor reads it and raises ``RuntimeError``
    unless it says ready, else call :meth:`wait_ready`.  Reads wait at most ``timeout`` seconds (TimeoutError);
    a child that exits first raises :class:`ChildGone`.  :meth:`close` sends ``{"op": "close"}``, then SIGTERM
    and SIGKILL to a child that does not exit in time.  ``start_new_session`` keeps the terminal's Ctrl-C from the
    child, so its parent decides how it stops.
    """

    def __init__(
        self,
        command: list[str],
        *,
        timeout: float = 60.0,
        env: dict[str, str] | None = None,
        wait: bool = True,
        start_new_session: bool = False,
    ) -> None:
        super().__init__()
        self.timeout = timeout
        child_env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}  # idle torch workers spin
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env, start_new_session=start_new_session
        )
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        if wait:
            self.wait_ready()

    def __repr__(self) -> str:
        return f"child {self.pid}"

    @property
    def pid(self) -> int:
        return self.proc.pid

    def fileno(self) -> int:
        return self._fd

    def _receive(self) -> bytes:
        if self.proc.stdout is None or self.proc.stdout.closed:
            return b""
        return os.read(self._fd, 1 << 16)

    def _transmit(self, data: bytes) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(data)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ChildGone(f"{self} is gone") from exc

    def _gone(self) -> str:
        if self.proc.stdout is None or self.proc.stdout.closed:
            return "was killed"
        code = self.proc.wait()
        return f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"

    def kill(self) -> None:
        """SIGKILL: the child gets no chance to clean up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.alive = False
        self._close_pipes()

    def close(self) -> None:
        """Ask the child to close and exit (reading what it still writes) within ``timeout``; then SIGTERM it, and
        SIGKILL it if it is still there :data:`TERM_GRACE_S` later."""
        self.request_close()
        deadline = time.monotonic() + self.timeout
        with contextlib.suppress(ChildGone, OSError, ValueError):
            while self.proc.poll() is None and time.monotonic() < deadline:
                ready = select.select([self._fd], [], [], max(0.0, deadline - time.monotonic()))[0]
                if ready and not self.pump():
                    break
        try:
            self.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:  # busy (a long get, say): SIGTERM, which a child may handle to clean up
            self.proc.terminate()
            try:
                self.proc.wait(timeout=TERM_GRACE_S)
            except subprocess.TimeoutExpired:
                self.kill()
        self.alive = False
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class ChildConnector(JsonLinesChild):
    """A child process owning one connector, answering the commands above.

    ``launcher`` is the command that starts the child (default ``python -m
    omni_core.remote``); the spec JSON is appended as its last argument.  ``env``
    is added to the child's environment.
    """

    def __init__(
        self,
        spec: ConnectorSpec,
        *,
        timeout: float = 60.0,
        launcher: list[str] | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        command = [*(launcher or [sys.executable, "-m", "omni_core.remote"])]
        spec_json = json.dumps({"name": spec.name, "extra": spec.extra})
        super().__init__([*command, spec_json], timeout=timeout, env={"PYTHONUNBUFFERED": "1", **(env or {})})


def _payload(kind: str) -> Any:
    if kind.startswith("bytes:"):
        import torch

        return torch.ones(int(kind.removeprefix("bytes:")), dtype=torch.uint8)
    return make_payload(kind)


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def child_main(argv: list[str]) -> int:
    """Child side: build the connector from the spec JSON in ``argv[0]`` and serve commands from stdin."""
    spec = json.loads(argv[0])
    connector = OmniConnectorFactory.create_connector(ConnectorSpec(spec["name"], spec.get("extra", {})))
    _answer({"ready": True})
    payloads: dict[str, Any] = {}
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "put":
                data = payloads.setdefault(command["kind"], _payload(command["kind"]))
                started = time.perf_counter()
                ok, size, metadata = connector.put(command["from"], command["to"], command["key"], data)
                _answer({"ok": ok, "size": size, "metadata": metadata, "put_s": time.perf_counter() - started})
            elif command["op"] == "get":
                started = time.perf_counter()
                deadline = time.monotonic() + float(command.get("timeout", 10.0))
                result = connector.get_with_deadline(
                    command["from"], command["to"], command["key"], command.get("metadata"), deadline=deadline
                )
                get_s = time.perf_counter() - started
                if result is None:
                    _answer({"found": False, "get_s": get_s})
                else:
                    digest = checksum(resolve_payload(result[0]))
                    size, result = result[1], None  # the payload is not kept: its memory goes back now
                    _answer({"found": True, "size": size, "checksum": digest, "get_s": get_s})
            elif command["op"] == "cleanup":
                connector.cleanup(command["key"])
                _answer({"cleaned": True})
            elif command["op"] == "health":
                _answer(connector.health())
            elif command["op"] == "close":
                break
            else:
                _answer({"error": f"unknown op {command['op']!r}"})
    finally:
        connector.close()
    _answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(child_main(sys.argv[1:]))
