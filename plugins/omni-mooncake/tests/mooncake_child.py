"""A connector in a child process, driven by JSON lines on stdin (see ``mooncake_procs.ConnectorProcess``)."""

from __future__ import annotations

import json
import sys
import time
import traceback
from typing import Any

from mooncake_payloads import build, unwrap

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.testing import checksum


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


def serve(connector: Any, command: dict[str, Any]) -> dict[str, Any]:
    op = command["op"]
    edge = (command.get("from", "0"), command.get("to", "1"))
    if op == "put":
        ok, size, metadata = connector.put(*edge, command["key"], build(command["payload"]))
        return {"ok": ok, "size": size, "metadata": metadata}
    if op == "get":
        deadline = time.monotonic() + float(command.get("timeout", 30.0))
        result = connector.get_with_deadline(*edge, command["key"], command.get("metadata"), deadline=deadline)
        if result is None:
            return {"found": False}
        payload = unwrap(result[0])
        return {"found": True, "size": result[1], "checksum": checksum(payload), "type": type(payload).__name__}
    if op == "health":
        return connector.health()
    if op == "update_sender_info":
        connector.update_sender_info(command["host"], command["port"], command.get("rank"))
        return {}
    if op == "cleanup":
        connector.cleanup(command["key"])
        return {}
    return {"error": f"unknown op {op!r}"}


def main() -> int:
    spec = json.loads(sys.argv[1])
    try:
        connector = OmniConnectorFactory.create_connector(ConnectorSpec(spec["name"], spec["extra"]))
    except Exception as exc:
        answer({"ready": False, "error": f"{type(exc).__name__}: {exc}"})
        return 1
    info = connector.get_connection_info() if hasattr(connector, "get_connection_info") else {}
    answer({"ready": True, "info": info})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "close":
            connector.close()
            answer({"closed": True})
            return 0
        try:
            answer(serve(connector, command))
        except Exception as exc:
            answer({"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()})
    connector.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
