"""A connector in a child process, driven by JSON lines (multi-process tests and benchmarks).

The child runs ``python -m omni_core.remote '<spec json>'``.  Each stdin line is
one command; each answer is one JSON line on stdout (nothing is pickled):

- ``{"op": "put", "from": "0", "to": "1", "key": K, "kind": KIND}`` -> ``{"ok", "size", "metadata", "put_s"}``
- ``{"op": "get", "from": "0", "to": "1", "key": K, "metadata": M, "timeout": S}`` ->
  ``{"found", "size", "checksum", "get_s"}``
- ``{"op": "cleanup", "key": K}`` -> ``{"cleaned": true}`` (the connector's ``cleanup(K)``);
- ``{"op": "health"}`` -> the connector's ``health()``;
- ``{"op": "close"}`` -> ``{"closed": true}`` and exit.

KIND is a name from :mod:`omni_core.samples` or ``"bytes:N"`` (an N-byte uint8 tensor).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

from .base import resolve_payload
from .digest import checksum
from .factory import OmniConnectorFactory
from .samples import make_payload
from .spec import ConnectorSpec

if TYPE_CHECKING:
    from typing_extensions import Self


class ChildGone(RuntimeError):
    """The child process exited (or was killed) before it answered."""


class JsonLinesChild:
    """Parent side of a child process driven by JSON lines: a command per stdin line, an answer per stdout line.

    The child's first line is its greeting (kept in :attr:`hello`); ``RuntimeError`` if it does not say
    ``ready``.  Reads wait at most ``timeout`` seconds (TimeoutError); a child that exits first raises
    :class:`ChildGone`.  ``close()`` sends ``{"op": "close"}`` and SIGKILLs a child that does not exit.
    """

    def __init__(self, command: list[str], *, timeout: float = 60.0, env: dict[str, str] | None = None) -> None:
        self.timeout = timeout
        child_env = {"OMP_NUM_THREADS": "1", **os.environ, **(env or {})}  # idle torch workers spin
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=child_env)
        assert self.proc.stdout is not None
        self._fd = self.proc.stdout.fileno()
        self._buffer = b""
        try:
            self.hello = self.read()
        except BaseException:
            self.kill()
            raise
        if not self.hello.get("ready"):
            self.kill()
            raise RuntimeError(f"child {command[-1]!r:.200} did not start: {self.hello}")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def send(self, command: dict[str, Any]) -> None:
        """Send one command without waiting for its answer."""
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(command) + "\n").encode())
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise ChildGone(f"child {self.pid} is gone") from exc

    def read(self, timeout: float | None = None) -> dict[str, Any]:
        """The next answer, within ``timeout`` seconds (default: the child's)."""
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        while b"\n" not in self._buffer:
            if self.proc.stdout is None or self.proc.stdout.closed:
                raise ChildGone(f"child {self.pid} was killed")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"child {self.pid} did not answer within {self.timeout if timeout is None else timeout} s"
                )
            if select.select([self._fd], [], [], remaining)[0]:
                chunk = os.read(self._fd, 1 << 16)
                if not chunk:
                    raise ChildGone(f"child {self.pid} exited with {self.proc.wait()}")
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return json.loads(line)

    def call(self, command: dict[str, Any], timeout: float | None = None) -> dict[str, Any]:
        """Send one command and return the child's answer."""
        self.send(command)
        return self.read(timeout)

    def kill(self) -> None:
        """SIGKILL: the child gets no chance to clean up."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def close(self) -> None:
        """Ask the child to close and exit; SIGKILL it if it does not."""
        if self.proc.poll() is None:
            try:
                self.call({"op": "close"})
                self.proc.wait(timeout=self.timeout)
            except (ChildGone, TimeoutError, subprocess.TimeoutExpired):
                self.kill()
        self._close_pipes()

    def _close_pipes(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
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
