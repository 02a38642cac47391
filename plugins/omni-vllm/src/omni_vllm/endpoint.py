"""The Omni connector one side of OmniKVConnector uses: role and ports resolved by core, as for any stage."""

from __future__ import annotations

from typing import Any

from omni_core import OmniConnectorBase, OmniConnectorFactory, resolve_connector_spec

from .config import KVSettings


def open_connector(settings: KVSettings, *, sender: bool, replica: int = 0) -> OmniConnectorBase:
    """The connector of the prefill side (``sender``) or the decode side, on the PD edge of ``settings``.

    Endpoint connectors (Mooncake TE, ...) get their role and ports as any vllm-omni stage does: the
    prefill side listens on ``zmq_port + 100 + replica * 1024 + from_stage``; the decode side's default
    sender is that port on ``sender_host``.
    """
    stage = settings.from_stage if sender else settings.to_stage
    spec = settings.connector
    spec = type(spec)(spec.name, {**spec.extra, "from_stage": settings.from_stage, "to_stage": settings.to_stage})
    resolved = resolve_connector_spec(
        spec, stage_id=stage, role="sender" if sender else "receiver", purpose="kv_transfer", replica_id=replica
    )
    return OmniConnectorFactory.create_connector(resolved)


def sender_source(connector: OmniConnectorBase) -> dict[str, Any] | None:
    """Partial metadata ``{source_host, source_port}`` that reaches this sender, for endpoint connectors.

    A receiver given it asks this sender for the rest (upstream's 1-receiver-N-senders contract); None for
    key-addressed connectors, which need no address.
    """
    info = getattr(connector, "get_connection_info", None)
    if not callable(info):
        return None
    connection = info()
    host, port = connection.get("host"), connection.get("zmq_port")
    if host is None or port is None:
        return None
    return {"source_host": host, "source_port": port}
