"""A stage replica process of ``omni run``, controlled by JSON lines on stdin/stdout.

``python -m omni_pipeline.stage CONFIG STAGE_ID [--coordinator NAME ADDRESS --address ADDRESS]``: it greets
with ``{"ready": true}`` (or ``{"ready": false, "error": ...}``), answers commands (``input``, ``fetch``,
``resend``) with messages, and on ``{"op": "close"}``, SIGTERM or the end of stdin closes its connectors and exits.

It wires its edges exactly as an inference engine's stage would
(``get_stage_connector_config`` + ``create_connectors_from_config``), receives
each request's payload from every incoming edge, checks it, and emits its own
output: it puts it on every outgoing edge itself, or (``workload.forwarding:
orchestrator``) reports its digest so the orchestrator puts it.  Control
messages carry only metadata.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import time
import warnings
from collections.abc import Iterable
from typing import Any, TextIO

from omni_core import (
    ConnectorKVPipe,
    OmniConnectorBase,
    checksum,
    configure_logging,
    create_connectors_from_config,
    get_plugin_registry,
    get_replica_id,
    get_stage_connector_config,
    import_target,
    load_config_document,
    load_omni_transfer_config,
    metrics_snapshot,
    record_calls,
    stage_payload_to_specs,
)

from .workload import Workload, kv_cache, stage_output

logger = logging.getLogger("omni.pipeline")

#: Where the JSON lines go: the process's original stdout, taken by :func:`_take_stdout`.
_channel: TextIO = sys.stdout


def _take_stdout() -> None:
    """Keep the original stdout for the JSON lines alone; fd 1 (``print``, libraries such as Ray, which prints
    cluster events on a driver's stdout) goes to stderr from now on, so nothing else ever lands between them."""
    global _channel
    _channel = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)


def _say(message: dict[str, Any]) -> None:
    _channel.write(json.dumps(message) + "\n")
    _channel.flush()


#: Set by ``omni run --metrics-port``: the replica records its connector calls and sends them along.
PUSH_METRICS_ENV = "OMNI_METRICS_PUSH"
#: ... at most this often (and once more before it closes).
PUSH_METRICS_EVERY_S = 1.0


class MetricsPush:
    """Sends this replica's connector metrics to the orchestrator, between commands, at most every second."""

    def __init__(self, stage_id: int) -> None:
        self.enabled = os.environ.get(PUSH_METRICS_ENV) == "1"
        self._stage = str(stage_id)
        self._last = 0.0
        if self.enabled:
            record_calls()

    def __call__(self, *, final: bool = False) -> None:
        if self.enabled and (final or time.monotonic() - self._last >= PUSH_METRICS_EVERY_S):
            self._last = time.monotonic()
            _say({"op": "metrics", "figures": metrics_snapshot(stage=self._stage)})


class StageWorker:
    """One stage: its connectors, what it has received per request, and its outputs."""

    def __init__(
        self, config_path: str, stage_id: int, coordinator: tuple[str, str] | None = None, address: str = ""
    ) -> None:
        """``coordinator`` is (the registered coordinator's name, its address) to register with, if any."""
        self.stage_id = stage_id
        self.workload = Workload.from_config((load_config_document(config_path) or {}).get("workload"))
        if self.workload.tensor_bytes or self.workload.kv_cache_bytes:
            warnings.filterwarnings("ignore", message="Failed to initialize NumPy")  # numpy is optional
            import torch  # noqa: F401 - load before the first request so its latency is not the import
        transfer = load_omni_transfer_config(config_path)
        payload = get_stage_connector_config(transfer, stage_id)
        incoming = stage_payload_to_specs(stage_id, payload)
        outgoing = {
            e: s for e, s in stage_payload_to_specs(stage_id, payload, incoming_only=False).items() if e not in incoming
        }
        self.out_edges = sorted(outgoing)
        self.inputs = create_connectors_from_config(incoming, caller_stage_id=stage_id)
        self.outputs: dict[tuple[str, str], OmniConnectorBase] = {}
        if self.workload.forwarding == "stages":
            try:
                self.outputs = create_connectors_from_config(outgoing, caller_stage_id=stage_id)
            except BaseException:
                self._close(self.inputs)
                raise
        self.pending: dict[str, set[tuple[str, str]]] = {}
        self.coord_client = None
        if coordinator:
            registration, _ = get_plugin_registry().select("coordinator", coordinator[0])
            self.coord_client = import_target(registration.stage_client)(
                coord_zmq_addr=coordinator[1],
                input_addr=address,
                output_addr=address + "#out",
                stage_id=stage_id,
                queue_length_getter=lambda: len(self.pending),
            )

    def receive(self, request_id: str, edge: tuple[str, str], metadata: dict[str, Any] | None) -> None:
        connector = self.inputs[edge]
        started = time.perf_counter()
        result = connector.get_with_deadline(
            *edge, request_id, metadata, deadline=time.monotonic() + self.workload.timeout_s
        )
        get_s = time.perf_counter() - started
        if result is None:
            logger.warning("%s on edge %s -> %s: nothing arrived within %.1f s; reported lost", request_id, *edge,
                           self.workload.timeout_s)
            _say({"op": "lost", "request_id": request_id, "edge": edge})
            return
        obj, size = result
        kv_digest = None
        if self.workload.kv_cache_bytes:
            _follow_sender(connector, metadata)
            with kv_pipe(connector, edge, request_id, self.workload.timeout_s) as pipe:
                try:
                    kv_digest = checksum(pipe.recv_tensor())
                except TimeoutError:  # its sender died between the payload and its KV cache: as lost as the payload
                    logger.warning("%s on edge %s -> %s: its KV cache did not follow the payload; reported lost",
                                   request_id, *edge)
                    _say({"op": "lost", "request_id": request_id, "edge": edge})
                    return
        _say(
            {
                "op": "received",
                "request_id": request_id,
                "edge": edge,
                "size": size,
                "get_s": get_s,
                "checksum": checksum(obj),
                "kv_checksum": kv_digest,
            }
        )
        logger.debug("%s on edge %s -> %s: received %d bytes in %.2f ms", request_id, *edge, size, get_s * 1e3)
        waiting = self.pending.setdefault(request_id, {e for e in self.inputs})
        waiting.discard(edge)
        if not waiting:
            del self.pending[request_id]
            self.emit(request_id)

    def emit(self, request_id: str, only: tuple[str, str] | None = None) -> None:
        """Emit this stage's output for ``request_id`` on every outgoing edge (or only on ``only``)."""
        if not self.out_edges:
            _say({"op": "done", "request_id": request_id})
            return
        payload = stage_output(request_id, self.stage_id, self.workload)
        kv = kv_cache(request_id, self.stage_id, self.workload) if self.workload.kv_cache_bytes else None
        digests = (checksum(payload), checksum(kv) if kv is not None else None)
        if not self.outputs:  # forwarding: orchestrator (it rebuilds the output and checks these digests)
            _say({"op": "output", "request_id": request_id, "checksum": digests[0], "kv_checksum": digests[1]})
            return
        for edge, connector in self.outputs.items():
            if only is None or edge == only:
                _say(put_output(connector, edge, request_id, payload, kv, digests, self.workload.timeout_s, only))

    def close(self) -> None:
        if self.coord_client is not None:
            self.coord_client.close()
        self._close(self.inputs)
        self._close(self.outputs)

    @staticmethod
    def _close(connectors: dict[tuple[str, str], OmniConnectorBase]) -> None:
        for connector in connectors.values():
            connector.close()


def _follow_sender(connector: OmniConnectorBase, metadata: dict[str, Any] | None) -> None:
    """Point a pulling connector's key lookups (the KV pipe's) at the sender of ``metadata``.

    Transfer-engine receivers pull from a sender they must know; this is upstream's ``kv_sender_info``.
    """
    update = getattr(connector, "update_sender_info", None)
    if update is not None and isinstance(metadata, dict) and {"source_host", "source_port"} <= metadata.keys():
        update(metadata["source_host"], metadata["source_port"])


def _edges(edges: Iterable[tuple[str, str]]) -> str:
    """``0 -> 1, 0 -> 2`` (for log lines), or ``no edge``."""
    return ", ".join(f"{a} -> {b}" for a, b in sorted(edges)) or "no edge"


def kv_pipe(connector: OmniConnectorBase, edge: tuple[str, str], request_id: str, timeout_s: float) -> ConnectorKVPipe:
    """The KV-cache pipe of one request on one edge (a pipe per request, so replicas can share an edge)."""
    return ConnectorKVPipe(connector, *edge, name=f"kv-{request_id}", recv_timeout=timeout_s)


def put_output(
    connector: OmniConnectorBase,
    edge: tuple[str, str],
    request_id: str,
    payload: Any,
    kv: Any,
    digests: tuple[str, str | None],
    timeout_s: float,
    resend: tuple[str, str] | None = None,
) -> dict[str, Any]:
    """Put one request's output (and its KV cache) on ``edge``; returns the control message reporting it.

    ``resend`` (the edge again) first withdraws whatever is left of an earlier put of the request.
    """
    if resend is not None:
        connector.cleanup(request_id)
    started = time.perf_counter()
    ok, size, metadata = connector.put(*edge, request_id, payload)
    put_s = time.perf_counter() - started
    if not ok:
        return {"op": "put_failed", "request_id": request_id, "edge": edge}
    if kv is not None:
        with kv_pipe(connector, edge, request_id, timeout_s) as pipe:
            pipe.send_tensor(kv)
    return {
        "op": "sent",
        "request_id": request_id,
        "edge": edge,
        "size": size,
        "metadata": metadata,
        "checksum": digests[0],
        "kv_checksum": digests[1],
        "put_s": put_s,
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m omni_pipeline.stage")
    parser.add_argument("config")
    parser.add_argument("stage_id", type=int)
    parser.add_argument("--coordinator", nargs=2, metavar=("NAME", "ADDRESS"), help="register with this coordinator")
    parser.add_argument("--address", default="", help="this replica's address in the coordinator's list")
    args = parser.parse_args(argv)
    _take_stdout()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))  # close the connectors on the way out
    try:
        configure_logging(prefix=f"stage {args.stage_id} replica {get_replica_id()}")
        worker = StageWorker(args.config, args.stage_id, args.coordinator, args.address)
    except Exception as exc:  # reported to the orchestrator, which names the stage
        notes = "; ".join(getattr(exc, "__notes__", []))
        _say({"ready": False, "error": f"{type(exc).__name__}: {exc}" + (f" ({notes})" if notes else "")})
        return 1
    logger.info("ready: receives on %s; sends on %s", _edges(worker.inputs), _edges(worker.out_edges))
    _say({"ready": True})
    asked_to_close = False
    push_metrics = MetricsPush(args.stage_id)
    try:
        for line in sys.stdin:
            push_metrics()
            command = json.loads(line)
            if command["op"] == "input":
                worker.emit(command["request_id"])
            elif command["op"] == "resend":
                worker.emit(command["request_id"], only=tuple(command["edge"]))
            elif command["op"] == "fetch":
                try:
                    worker.receive(command["request_id"], tuple(command["edge"]), command.get("metadata"))
                except Exception as exc:  # reported, so the orchestrator names the edge and request
                    _say(
                        {
                            "op": "error",
                            "request_id": command["request_id"],
                            "edge": command["edge"],
                            "error": f"{type(exc).__name__}: {exc}",
                        }
                    )
            elif command["op"] == "close":
                asked_to_close = True
                push_metrics(final=True)
                break
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # closing already: let it finish
        worker.close()
    if asked_to_close:  # (at the end of stdin nobody is listening)
        _say({"closed": True})
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
