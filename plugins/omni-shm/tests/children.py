"""Child processes for multi-process tests, started with ``sys.executable -c`` (nothing is pickled).

A child runs a small script that builds its own connector from a JSON config given on the command line,
then follows JSON commands on stdin and answers JSON lines on stdout (see ``SCRIPT``).
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
from typing import Any

SCRIPT = r'''
import json, sys
import torch
from omni_core import ConnectorSpec, OmniConnectorFactory
connector = OmniConnectorFactory.create_connector(ConnectorSpec("SharedMemoryConnector", json.loads(sys.argv[1])))
held = {}
def answer(message):
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()
def payload(spec):
    if spec["kind"] == "tensor":
        return torch.full((spec["n"],), float(spec["value"]), dtype=torch.float32)
    return {"value": spec["value"], "blob": bytes([spec["value"] % 256]) * spec["n"]}
def describe(obj):
    if isinstance(obj, torch.Tensor):
        return {"kind": "tensor", "n": obj.numel(), "value": float(obj[0]) if obj.numel() else None,
                "uniform": bool((obj == obj[0]).all()) if obj.numel() else True}
    return {"kind": "dict", "n": len(obj["blob"]), "value": obj["value"],
            "uniform": obj["blob"] == bytes([obj["value"] % 256]) * len(obj["blob"])}
answer({"ready": True, "pid": __import__("os").getpid()})
for line in sys.stdin:
    command = json.loads(line)
    op = command["op"]
    if op == "put":
        ok, size, meta = connector.put("0", "1", command["key"], payload(command["payload"]))
        answer({"ok": ok, "size": size, "metadata": meta})
    elif op == "put_many":
        results = [connector.put("0", "1", command["key"], payload(dict(command["payload"], value=i)))[0]
                   for i in range(command["count"])]
        answer({"ok": all(results)})
    elif op == "get":
        result = connector.get_with_deadline("0", "1", command["key"], command.get("metadata"),
                                             deadline=__import__("time").monotonic() + command.get("timeout", 10))
        if result is None:
            answer({"found": False})
        else:
            if command.get("hold"):
                held[command["key"]] = result[0]
            answer({"found": True, "size": result[1], **describe(result[0])})
    elif op == "drop":
        held.pop(command["key"], None)
        answer({"dropped": True})
    elif op == "health":
        answer(connector.health())
    elif op == "close":
        connector.close()
        answer({"closed": True})
        break
'''


class Child:
    """A child process with its own SharedMemoryConnector."""

    def __init__(self, extra: dict[str, Any], timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SCRIPT, json.dumps(extra)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()
        hello = self._read()
        assert hello.get("ready"), hello
        self.pid: int = hello["pid"]

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self._lines.put(line)
        self._lines.put("")

    def _read(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=self.timeout)
        except queue.Empty:
            raise TimeoutError(f"child {self.proc.pid} did not answer within {self.timeout} s") from None
        if not line:
            raise RuntimeError(f"child {self.proc.pid} exited with {self.proc.wait()}")
        return json.loads(line)

    def read(self) -> dict[str, Any]:
        """The next answer (for commands sent with :meth:`send`)."""
        return self._read()

    def send(self, **command: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()

    def call(self, **command: Any) -> dict[str, Any]:
        self.send(**command)
        return self._read()

    def kill(self) -> None:
        """SIGKILL: the child gets no chance to clean up."""
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self._close_pipes()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call(op="close")
                self.proc.wait(self.timeout)
            except (OSError, RuntimeError, TimeoutError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self._close_pipes()

    def _close_pipes(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()

    def __enter__(self) -> Child:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
