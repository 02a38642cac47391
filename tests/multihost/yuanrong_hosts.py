"""openYuanrong on test hosts: connector processes on a host (the workers: ``omni_yuanrong.testing.HostWorker``,
their Unix socket visible on their own host only, so any other process talks TCP to them).

Run as a script, this module is a connector child: a JSON-lines loop (parent side:
:class:`StageProcess`) that, unlike ``omni_core.remote``, answers a connector's errors
instead of dying on them, and reports ``health()`` and its own threads and descriptors.
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from omni_core.remote import JsonLinesChild
from omni_yuanrong.testing import CLIENT_TIMEOUTS, HostWorker

__all__ = ["CLIENT_TIMEOUTS", "HostWorker", "StageProcess"]
PLUGIN_TESTS = Path(__file__).resolve().parents[2] / "plugins" / "omni-yuanrong" / "tests"


class StageProcess(JsonLinesChild):
    """A connector in a process started with ``prefix`` (a host's), driven by JSON lines.

    ``engine`` builds the TransferEngine connector on a CPU pool with ``"fake"``:
    ``FakeAscendTransferEngine`` (the data plane, which needs an Ascend NPU, over TCP) or
    ``"real"``: the real engine (initialization, registration and its RPC listener only).
    """

    def __init__(self, prefix: list[str], name: str, extra: dict[str, Any], *, engine: str | None = None) -> None:
        spec = json.dumps({"name": name, "extra": extra, "engine": engine})
        env = {"PYTHONPATH": os.pathsep.join([str(PLUGIN_TESTS), os.environ.get("PYTHONPATH", "")])}
        super().__init__([*prefix, sys.executable, __file__, spec], timeout=120, env=env)

    def put(self, key: str, nbytes: int, edge: tuple[str, str] = ("0", "1")) -> dict[str, Any]:
        return self.call({"op": "put", "edge": edge, "key": key, "nbytes": nbytes})

    def get(
        self, key: str, edge: tuple[str, str] = ("0", "1"), metadata: Any = None, *, wait_s: float | None = None
    ) -> dict[str, Any]:
        """``get``, or ``get_with_deadline`` ``wait_s`` seconds from now."""
        return self.call({"op": "get", "edge": edge, "key": key, "metadata": metadata, "wait_s": wait_s})

    def health(self) -> dict[str, Any]:
        return self.call({"op": "health"})

    def cleanup(self, key: str) -> dict[str, Any]:
        return self.call({"op": "cleanup", "key": key})

    def resources(self) -> dict[str, int]:
        """This process's threads and open descriptors."""
        return self.call({"op": "resources"})

    def stop(self, grace_s: float = 10.0) -> None:
        """Close the connector and exit; SIGKILL after ``grace_s`` (a client library can block its close)."""
        self.timeout = grace_s
        self.close()


# -- child side ------------------------------------------------------------------------------------
def _connector(spec: dict[str, Any]) -> Any:
    from omni_core import ConnectorSpec, OmniConnectorFactory

    if spec["engine"] == "fake":
        from fake_ascend_engine import make_fake_engine_connector

        return make_fake_engine_connector(spec["extra"])
    if spec["engine"] == "real":
        from omni_yuanrong.te_connector import YuanrongTransferEngineConnector
        from omni_yuanrong.te_engine import real_engine

        return YuanrongTransferEngineConnector(spec["extra"], engine_factory=real_engine)
    return OmniConnectorFactory.create_connector(ConnectorSpec(spec["name"], spec["extra"]))


@functools.lru_cache(maxsize=4)
def _payload(nbytes: int) -> tuple[Any, str]:
    """An ``nbytes`` uint8 tensor (a repeated ramp) and its checksum."""
    import torch

    from omni_core.testing import checksum

    tensor = torch.arange(256, dtype=torch.uint8).repeat(nbytes // 256 + 1)[:nbytes].clone()
    return tensor, checksum(tensor)


def _serve(connector: Any, command: dict[str, Any]) -> dict[str, Any]:
    from omni_core import resolve_payload
    from omni_core.testing import checksum

    op = command["op"]
    started = time.perf_counter()
    if op == "put":
        payload, expected = _payload(command["nbytes"])
        started = time.perf_counter()
        ok, size, metadata = connector.put(*command["edge"], command["key"], payload)
        call_s = time.perf_counter() - started
        return {"ok": ok, "size": size, "metadata": metadata, "expected": expected, "call_s": call_s}
    if op == "get":
        edge, key, metadata = command["edge"], command["key"], command.get("metadata")
        if command.get("wait_s") is None:
            result = connector.get(*edge, key, metadata)
        else:
            result = connector.get_with_deadline(*edge, key, metadata, deadline=time.monotonic() + command["wait_s"])
        call_s = time.perf_counter() - started
        if result is None:
            return {"found": False, "call_s": call_s}
        obj = resolve_payload(result[0])
        digest = checksum(obj.to_payload() if hasattr(obj, "to_payload") else obj)
        if hasattr(result[0], "release"):
            result[0].release()
        return {"found": True, "size": result[1], "checksum": digest, "call_s": call_s}
    if op == "health":
        return connector.health()
    if op == "cleanup":
        connector.cleanup(command["key"])
        return {"ok": True}
    if op == "resources":
        return {"threads": len(os.listdir("/proc/self/task")), "fds": len(os.listdir("/proc/self/fd"))}
    return {"error": f"unknown op {op!r}", "type": "ValueError"}


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    connector = _connector(spec)

    def answer(message: dict[str, Any]) -> None:
        sys.stdout.write(json.dumps(message, default=str) + "\n")
        sys.stdout.flush()

    answer({"ready": True, **({"info": connector.get_connection_info()} if spec["engine"] else {})})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "close":
                break
            started = time.monotonic()
            try:
                reply = _serve(connector, command)
            except Exception as exc:  # the test asserts on the error the caller would get
                reply = {"error": str(exc), "type": type(exc).__name__}
            answer({**reply, "elapsed_s": time.monotonic() - started})
    finally:
        connector.close()
    answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
