"""A stage worker process for ``omni run``, controlled by JSON lines on stdin/stdout.

It wires its edges exactly as an inference engine's stage would
(``get_stage_connector_config`` + ``create_connectors_from_config``), receives
each request's payload from every incoming edge, checks it, and emits its own
output on every outgoing edge.  Control messages carry only metadata.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from ..base import OmniConnectorBase
from ..config_loader import load_config_document, load_omni_transfer_config
from ..digest import checksum
from ..initialization import create_connectors_from_config, get_stage_connector_config, stage_payload_to_specs
from ..kv_pipe import ConnectorKVPipe
from .workload import Workload, kv_cache, stage_output


def _say(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


class StageWorker:
    """One stage: its connectors, what it has received per request, and its outputs."""

    def __init__(self, config_path: str, stage_id: int) -> None:
        self.stage_id = stage_id
        self.workload = Workload.from_config((load_config_document(config_path) or {}).get("workload"))
        if self.workload.tensor_bytes or self.workload.kv_cache_bytes:
            import torch  # noqa: F401 - load before the first request so its latency is not the import
        transfer = load_omni_transfer_config(config_path)
        payload = get_stage_connector_config(transfer, stage_id)
        incoming = stage_payload_to_specs(stage_id, payload)
        outgoing = {
            e: s for e, s in stage_payload_to_specs(stage_id, payload, incoming_only=False).items() if e not in incoming
        }
        self.inputs = create_connectors_from_config(incoming, caller_stage_id=stage_id)
        try:
            self.outputs = create_connectors_from_config(outgoing, caller_stage_id=stage_id)
        except BaseException:
            self._close(self.inputs)
            raise
        self.kv_out = {e: ConnectorKVPipe(c, *e, name="kv") for e, c in self.outputs.items()}
        self.kv_in = {
            e: ConnectorKVPipe(c, *e, name="kv", recv_timeout=self.workload.timeout_s) for e, c in self.inputs.items()
        }
        self.pending: dict[str, set[tuple[str, str]]] = {}

    def receive(self, request_id: str, edge: tuple[str, str], metadata: dict[str, Any] | None) -> None:
        connector = self.inputs[edge]
        deadline = time.monotonic() + self.workload.timeout_s
        result = connector.get_with_deadline(*edge, request_id, metadata, deadline=deadline)
        done_at = time.time()
        if result is None:
            _say({"op": "lost", "request_id": request_id, "edge": edge})
            return
        obj, size = result
        kv_digest = checksum(self.kv_in[edge].recv_tensor()) if self.workload.kv_cache_bytes else None
        _say(
            {
                "op": "received",
                "request_id": request_id,
                "edge": edge,
                "size": size,
                "done_at": done_at,
                "checksum": checksum(obj),
                "kv_checksum": kv_digest,
            }
        )
        waiting = self.pending.setdefault(request_id, {e for e in self.inputs})
        waiting.discard(edge)
        if not waiting:
            del self.pending[request_id]
            self.emit(request_id)

    def emit(self, request_id: str) -> None:
        if not self.outputs:
            _say({"op": "done", "request_id": request_id})
            return
        payload = stage_output(request_id, self.stage_id, self.workload)
        digest = checksum(payload)
        kv = kv_cache(request_id, self.stage_id, self.workload) if self.workload.kv_cache_bytes else None
        for edge, connector in self.outputs.items():
            started = time.time()
            ok, size, metadata = connector.put(*edge, request_id, payload)
            if not ok:
                _say({"op": "put_failed", "request_id": request_id, "edge": edge})
                continue
            if kv is not None:
                self.kv_out[edge].send_tensor(kv)
            _say(
                {
                    "op": "sent",
                    "request_id": request_id,
                    "edge": edge,
                    "size": size,
                    "metadata": metadata,
                    "checksum": digest,
                    "kv_checksum": checksum(kv) if kv is not None else None,
                    "started_at": started,
                }
            )

    def close(self) -> None:
        self._close(self.inputs)
        self._close(self.outputs)

    @staticmethod
    def _close(connectors: dict[tuple[str, str], OmniConnectorBase]) -> None:
        for connector in connectors.values():
            connector.close()


def main(argv: list[str]) -> int:
    config_path, stage_id = argv[0], int(argv[1])
    try:
        worker = StageWorker(config_path, stage_id)
    except Exception as exc:  # reported to the orchestrator, which names the stage
        notes = "; ".join(getattr(exc, "__notes__", []))
        _say({"op": "failed", "error": f"{type(exc).__name__}: {exc}" + (f" ({notes})" if notes else "")})
        return 1
    _say({"op": "ready"})
    try:
        for line in sys.stdin:
            command = json.loads(line)
            if command["op"] == "input":
                worker.emit(command["request_id"])
            elif command["op"] == "fetch":
                worker.receive(command["request_id"], tuple(command["edge"]), command.get("metadata"))
            elif command["op"] == "stop":
                break
    finally:
        worker.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
