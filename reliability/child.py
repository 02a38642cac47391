"""A pipeline stage in its own process: one connector, driven by JSON lines on stdin (nothing is pickled).

``python -m reliability.child '<config json>'`` with config ``{"spec": {"name", "extra"}, "consume": "none" |
"cleanup", "coordinator": null | {"router", "address", "stage_id"}}``.  It answers ``{"ready", "pid"}``, then
one JSON line per command:

- ``{"op": "put", "key", "size"}`` -> ``{"ok", "size", "metadata"}`` (the payload is rebuilt from the key);
- ``{"op": "get", "key", "size", "metadata", "timeout"}`` -> ``{"found", "intact", "error"}``; with
  ``consume: cleanup`` (connectors whose reads do not consume) a read payload is then deleted;
- ``{"op": "probe", "key", "metadata"}`` -> ``{"found"}``: one more read, which must find nothing;
- ``{"op": "cleanup", "key"}``, ``{"op": "health"}``, ``{"op": "close"}``.

With a coordinator the stage registers as a replica and heartbeats, as an engine's stage would.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_core.digest import checksum

from . import payloads

FROM, TO = "0", "1"


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message, default=str) + "\n")
    sys.stdout.flush()


class Stage:
    """The child's connector and how it serves each command."""

    def __init__(self, config: dict[str, Any]) -> None:
        spec = config["spec"]
        self.connector = OmniConnectorFactory.create_connector(ConnectorSpec(spec["name"], spec.get("extra", {})))
        self.consume = config.get("consume", "none")
        self.coordinator = None
        coord = config.get("coordinator")
        if coord:
            from omni_coordinator import create_stage_coord_client

            self.coordinator = create_stage_coord_client(
                coord_zmq_addr=coord["router"], input_addr=coord["address"], output_addr=coord["address"] + "#out",
                stage_id=coord["stage_id"], heartbeat_interval=0.2,
            )

    def put(self, command: dict[str, Any]) -> dict[str, Any]:
        key = command["key"]
        try:
            ok, size, metadata = self.connector.put(FROM, TO, key, payloads.make(key, command["size"]))
        except Exception as exc:  # a put that raises is a refused put, reported with its reason
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        return {"ok": ok, "size": size, "metadata": metadata}

    def get(self, command: dict[str, Any]) -> dict[str, Any]:
        key = command["key"]
        deadline = time.monotonic() + command.get("timeout", 5.0)
        try:
            result = self.connector.get_with_deadline(FROM, TO, key, command.get("metadata"), deadline=deadline)
        except Exception as exc:  # backend down, corrupt value: not found, with the reason
            return {"found": False, "error": f"{type(exc).__name__}: {exc}"}
        if result is None:
            return {"found": False}
        intact = checksum(result[0]) == payloads.digest(key, command["size"])
        del result
        if self.consume == "cleanup":
            self.connector.cleanup(key, FROM, TO)  # type: ignore[call-arg]
        return {"found": True, "intact": intact}

    def probe(self, command: dict[str, Any]) -> dict[str, Any]:
        try:
            return {"found": self.connector.get(FROM, TO, command["key"], command.get("metadata")) is not None}
        except Exception as exc:
            return {"found": False, "error": f"{type(exc).__name__}: {exc}"}

    def close(self) -> None:
        if self.coordinator is not None:
            self.coordinator.close()
        self.connector.close()


def main(argv: list[str]) -> int:
    stage = Stage(json.loads(argv[0]))
    _answer({"ready": True, "pid": os.getpid()})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            op = command["op"]
            if op == "put":
                _answer(stage.put(command))
            elif op == "get":
                _answer(stage.get(command))
            elif op == "probe":
                _answer(stage.probe(command))
            elif op == "cleanup":
                stage.connector.cleanup(command["key"])
                _answer({"done": True})
            elif op == "health":
                _answer(stage.connector.health())
            elif op == "close":
                break
    finally:
        stage.close()
    _answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
