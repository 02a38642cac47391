"""A connector in a child process, driven by JSON lines (multi-process tests and benchmarks).

The child runs ``python -m omni_core.remote '<spec json>'``.  Each stdin line is
one command; each answer is one JSON line on stdout (nothing is pickled):

- ``{"op": "put", "from": "0", "to": "1", "key": K, "kind": KIND}`` -> ``{"ok", "size", "metadata", "put_s"}``
- ``{"op": "get", "from": "0", "to": "1", "key": K, "metadata": M, "timeout": S}`` ->
  ``{"found", "size", "checksum", "get_s"}``
- ``{"op": "close"}`` -> ``{"closed": true}`` and exit.

KIND is a name from :mod:`omni_core.samples` or ``"bytes:N"`` (an N-byte uint8 tensor).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from typing import Any

from .base import resolve_payload
from .digest import checksum
from .factory import OmniConnectorFactory
from .samples import make_payload
from .spec import ConnectorSpec


class ChildConnector:
    """Parent side: a child process owning one connector, answering JSON commands.

    ``launcher`` is the command that starts the child (default ``python -m
    omni_core.remote``); the spec JSON is appended as its last argument.
    """

    def __init__(self, spec: ConnectorSpec, *, timeout: float = 60.0, launcher: list[str] | None = None) -> None:
        self.timeout = timeout
        command = [*(launcher or [sys.executable, "-m", "omni_core.remote"])]
        self.proc = subprocess.Popen(
            [*command, json.dumps({"name": spec.name, "extra": spec.extra})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"OMP_NUM_THREADS": "1", **os.environ, "PYTHONUNBUFFERED": "1"},  # idle torch workers spin
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"child connector did not start: {ready}")

    def _read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + self.timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"child connector (pid {self.proc.pid}) did not answer in {self.timeout} s")
            readable, _, _ = select.select([self.proc.stdout], [], [], remaining)
            if readable:
                line = self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"child connector (pid {self.proc.pid}) exited with {self.proc.wait()}")
                return json.loads(line)

    def call(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one command and return the child's answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> None:
        """Ask the child to close its connector and exit; kill it if it does not."""
        if self.proc.poll() is None:
            try:
                self.call({"op": "close"})
                self.proc.wait(timeout=self.timeout)
            except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            if stream is not None:
                stream.close()

    def __enter__(self) -> ChildConnector:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


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
                    _answer({"found": False})
                else:
                    digest = checksum(resolve_payload(result[0]))
                    _answer({"found": True, "size": result[1], "checksum": digest, "get_s": get_s})
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
