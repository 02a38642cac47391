"""A connector in a child process, driven by JSON lines on stdin (used by the kit's multi-process tests).

Run as ``python -m omni_core.testing.child '<spec json>'``.  Each stdin line is
one command; each answer is one JSON line on stdout:

- ``{"op": "put", "from": "0", "to": "1", "key": K, "kind": KIND}`` -> ``{"ok", "size", "metadata"}``
- ``{"op": "get", "from": "0", "to": "1", "key": K, "metadata": M, "timeout": S}`` -> ``{"found", "size", "checksum"}``
- ``{"op": "close"}`` -> ``{"closed": true}`` and exit.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from omni_core.digest import checksum
from omni_core.factory import OmniConnectorFactory
from omni_core.spec import ConnectorSpec
from omni_core.testing.payloads import make_payload


def _answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    spec = json.loads(argv[0])
    connector = OmniConnectorFactory.create_connector(ConnectorSpec(spec["name"], spec.get("extra", {})))
    _answer({"ready": True})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "put":
                ok, size, metadata = connector.put(
                    command["from"], command["to"], command["key"], make_payload(command["kind"])
                )
                _answer({"ok": ok, "size": size, "metadata": metadata})
            elif command["op"] == "get":
                deadline = time.monotonic() + float(command.get("timeout", 10.0))
                result = connector.get_with_deadline(
                    command["from"], command["to"], command["key"], command.get("metadata"), deadline=deadline
                )
                if result is None:
                    _answer({"found": False})
                else:
                    _answer({"found": True, "size": result[1], "checksum": checksum(result[0])})
            elif command["op"] == "close":
                break
            else:
                _answer({"error": f"unknown op {command['op']!r}"})
    finally:
        connector.close()
    _answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
