"""Child processes for multi-process tests, started with ``sys.executable -c`` (nothing is pickled).

A child runs a small script that builds its own connector from a JSON config given on the command line,
then follows JSON commands on stdin and answers JSON lines on stdout (see ``SCRIPT``).
"""

from __future__ import annotations

import json
import sys
from typing import Any

from omni_core.remote import JsonLinesChild

SCRIPT = r"""
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
"""


class Child(JsonLinesChild):
    """A child process with its own SharedMemoryConnector."""

    def __init__(self, extra: dict[str, Any], timeout: float = 60.0) -> None:
        super().__init__([sys.executable, "-c", SCRIPT, json.dumps(extra)], timeout=timeout)
