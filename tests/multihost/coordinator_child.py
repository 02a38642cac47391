"""A coordinator stage client or hub client in its own process (on a test host), driven by JSON lines.

``python coordinator_child.py stage ROUTER INPUT_ADDR CURVE_JSON`` registers a replica of stage 0 and
heartbeats until told ``{"op": "close"}``; ``python coordinator_child.py hub PUB CURVE_JSON`` follows the
replica lists and answers ``{"op": "replicas"}`` with the input addresses listed and the hub's counters.
CURVE_JSON is ``null`` or ``{"server": FILE, "client": FILE}`` (certificates).  The first line says ready.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from omni_coordinator import CurveClientKeys, OmniCoordClientForHub, OmniCoordClientForStage


def answer(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    role, address, *rest = argv
    files = json.loads(rest[-1])
    curve = CurveClientKeys.from_files(files["server"], files["client"]) if files else None
    if role == "stage":
        client: Any = OmniCoordClientForStage(address, rest[0], rest[0] + "/out", 0, curve=curve)
    else:
        client = OmniCoordClientForHub(address, curve=curve)
    answer({"ready": True})
    for line in sys.stdin:
        command = json.loads(line)
        if command["op"] == "close":
            break
        if role != "hub":
            answer({"error": f"a stage client answers only close, not {command['op']!r}"})
            continue
        listed = client.get_replica_list()
        answer({"replicas": sorted(r.input_addr for r in listed.replicas), "seq": listed.seq, **client.stats()})
    client.close()
    answer({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
