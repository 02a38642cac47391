"""Create connectors for a stage graph: roles, ports and per-stage config payloads.

Role and port resolution is keyed on the connector's declared capabilities
(``needs_endpoint``), never on its class name.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .base import OmniConnectorBase
from .config_loader import load_omni_transfer_config
from .envexpand import AUTO_HOST_VALUES, expand_env_int
from .errors import ConfigError
from .factory import OmniConnectorFactory
from .metrics import wired_for_stage
from .ports import (
    KV_RANK_PORT_STRIDE,
    KV_REPLICA_PORT_STRIDE,
    KV_TRANSFER_PORT_OFFSET,
    PortPlan,
    compute_connector_zmq_port,
    describe_use,
)
from .spec import ConnectorSpec, OmniTransferConfig

__all__ = [
    "KV_RANK_PORT_STRIDE",
    "KV_REPLICA_PORT_STRIDE",
    "KV_TRANSFER_PORT_OFFSET",
    "build_stage_connectors",
    "create_connectors_from_config",
    "get_connector_local_rank",
    "get_connectors_config_for_stage",
    "get_stage_connector_config",
    "initialize_connectors_from_config",
    "initialize_orchestrator_connectors",
    "resolve_connector_spec",
    "resolve_omni_kv_config_for_stage",
    "stage_payload_to_specs",
]

DEFAULT_ZMQ_PORT = 50051
REPLICA_ENV = ("OMNI_REPLICA_ID", "VLLM_OMNI_REPLICA_ID")
LOCAL_RANK_ENV = ("LOCAL_RANK", "VLLM_LOCAL_RANK", "OMPI_COMM_WORLD_LOCAL_RANK", "MV2_COMM_WORLD_LOCAL_RANK")
ROLES = ("sender", "receiver")


def get_connector_local_rank() -> int:
    """This process's local rank from the usual launcher variables (0 if none is set)."""
    for name in LOCAL_RANK_ENV:
        value = os.environ.get(name)
        if value not in (None, ""):
            return _non_negative_env_int(name, value)
    return 0


def get_replica_id() -> int:
    """This process's Omni replica id from OMNI_REPLICA_ID / VLLM_OMNI_REPLICA_ID (0 if unset)."""
    for name in REPLICA_ENV:
        value = os.environ.get(name)
        if value not in (None, ""):
            return _non_negative_env_int(name, value)
    return 0


def _non_negative_env_int(name: str, value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(f"environment variable {name}={value!r} must be a non-negative integer") from None
    if number < 0:
        raise ConfigError(f"environment variable {name}={value!r} must be a non-negative integer")
    return number


def _stage_int(value: Any, what: str) -> int:
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{what} must be an integer stage id, got {value!r}") from None
    if isinstance(value, bool) or number < 0:
        raise ConfigError(f"{what} must be a non-negative integer stage id, got {value!r}")
    return number


def resolve_connector_spec(
    spec: ConnectorSpec,
    *,
    stage_id: int | str,
    role: str | None,
    purpose: str = "request_forwarding",
    local_rank: int = 0,
    replica_id: int = 0,
) -> ConnectorSpec:
    """Return a copy of ``spec`` with stage id, role and (for endpoint connectors) ports filled in."""
    extra = dict(spec.extra)
    extra["stage_id"] = stage_id
    if role is not None:
        extra["role"] = role
    if not OmniConnectorFactory.capabilities(spec.name).needs_endpoint:
        return ConnectorSpec(spec.name, extra)
    if role == "receiver" and extra.get("sender_zmq_port") is not None:
        extra.pop("zmq_port", None)
        return ConnectorSpec(spec.name, extra)
    base = extra.get("zmq_port", DEFAULT_ZMQ_PORT)
    if isinstance(base, str) and base.strip().lower() in {"auto", ""}:
        return ConnectorSpec(spec.name, extra)  # the connector binds port 0 and advertises the real port
    from_stage = _stage_int(extra.get("from_stage", stage_id), f"connector {spec.name!r}: from_stage")
    port = compute_connector_zmq_port(
        expand_env_int(base, field_name=f"connector {spec.name!r}: zmq_port"),
        purpose=purpose,
        from_stage=from_stage,
        local_rank=local_rank,
        replica_id=replica_id,
    )
    if role == "receiver":
        host = extra.get("host")
        extra.setdefault("sender_host", "127.0.0.1" if host is None or str(host) in AUTO_HOST_VALUES else host)
        extra["sender_zmq_port"] = port
        extra.pop("zmq_port", None)
    else:
        extra["zmq_port"] = port
    return ConnectorSpec(spec.name, extra)


def _role_for(
    caller_stage_id: int | str | None, is_sender: bool | None, edge: tuple[str, str], extra: Mapping[str, Any]
) -> str | None:
    if is_sender is not None:
        return "sender" if is_sender else "receiver"
    if caller_stage_id is not None and str(caller_stage_id) == edge[1]:
        return "receiver"
    if caller_stage_id is not None and str(caller_stage_id) == edge[0]:
        return "sender"
    role = extra.get("role")
    return role if role in ROLES else None


def create_connectors_from_config(
    connectors_config: Mapping[tuple[str, str], ConnectorSpec],
    purpose: str = "request_forwarding",
    caller_stage_id: int | str | None = None,
    is_sender: bool | None = None,
) -> dict[tuple[str, str], OmniConnectorBase]:
    """Create one connector per edge; on any failure close those already created and re-raise.

    Errors keep their type and gain a note naming the edge.  Two edges that
    resolve to the same ZMQ port raise :class:`PortCollisionError` naming both.
    """
    orchestrator = caller_stage_id == "orchestrator"
    local_rank = 0 if orchestrator else get_connector_local_rank()
    replica_id = get_replica_id()
    plan = PortPlan()
    created: dict[tuple[str, str], OmniConnectorBase] = {}
    try:
        for edge, spec in connectors_config.items():
            edge = (str(edge[0]), str(edge[1]))
            try:
                created[edge] = _create_for_edge(
                    edge, spec, plan, purpose, caller_stage_id, is_sender, orchestrator, local_rank, replica_id
                )
            except Exception as exc:
                exc.add_note(f"while creating connector {spec.name!r} for edge {edge[0]}->{edge[1]}")
                raise
    except BaseException:
        for connector in created.values():
            connector.close()
        raise
    if caller_stage_id is not None:  # the stage label of their metrics
        for connector in created.values():
            wired_for_stage(connector, str(caller_stage_id))
    return created


def _create_for_edge(
    edge: tuple[str, str],
    spec: ConnectorSpec,
    plan: PortPlan,
    purpose: str,
    caller_stage_id: int | str | None,
    is_sender: bool | None,
    orchestrator: bool,
    local_rank: int,
    replica_id: int,
) -> OmniConnectorBase:
    if not OmniConnectorFactory.capabilities(spec.name).needs_endpoint:
        return OmniConnectorFactory.create_connector(spec)
    from_stage = _stage_int(edge[0], f"edge {edge[0]}->{edge[1]}: from_stage")
    to_stage = _stage_int(edge[1], f"edge {edge[0]}->{edge[1]}: to_stage")
    role = _role_for(caller_stage_id, is_sender, edge, spec.extra)
    if role is None:
        raise ConfigError(
            f"edge {edge[0]}->{edge[1]}: connector {spec.name!r} needs a role (sender or receiver); "
            "pass caller_stage_id or is_sender, or set extra.role"
        )
    use_purpose = "orchestrator" if orchestrator else purpose
    extra = {**spec.extra, "from_stage": from_stage, "to_stage": to_stage}
    resolved = resolve_connector_spec(
        ConnectorSpec(spec.name, extra),
        stage_id=caller_stage_id if caller_stage_id is not None else from_stage,
        role=role,
        purpose=use_purpose,
        local_rank=local_rank,
        replica_id=replica_id,
    )
    port = resolved.extra.get("zmq_port" if role == "sender" else "sender_zmq_port")
    if isinstance(port, int) and role == "sender":
        plan.claim(port, f"edge {edge[0]}->{edge[1]} " + describe_use(use_purpose, from_stage, local_rank, replica_id))
    return OmniConnectorFactory.create_connector(resolved)


def initialize_connectors_from_config(
    config_path: str | Path | None = None,
    default_shm_threshold: int = 65536,
    purpose: str = "request_forwarding",
    caller_stage_id: int | str | None = None,
    is_sender: bool | None = None,
) -> tuple[OmniTransferConfig | None, dict[tuple[str, str], OmniConnectorBase]]:
    """Load a config file and create its connectors: ``(config, {(from, to): connector})``."""
    config = load_omni_transfer_config(config_path, default_shm_threshold=default_shm_threshold)
    if config is None:
        return None, {}
    return config, create_connectors_from_config(config.connectors, purpose, caller_stage_id, is_sender)


def initialize_orchestrator_connectors(
    config_path: str | None,
    worker_backend: str | None = "multi_process",
    shm_threshold_bytes: int = 65536,
) -> tuple[OmniTransferConfig | None, dict[tuple[str, str], OmniConnectorBase]]:
    """Connectors the orchestrator uses: it is the sender on every edge (orchestrator ports)."""
    if worker_backend not in (None, "multi_process", "ray"):
        raise ConfigError(f"worker_backend must be 'multi_process' or 'ray', got {worker_backend!r}")
    return initialize_connectors_from_config(
        config_path, shm_threshold_bytes, caller_stage_id="orchestrator", is_sender=True
    )


def get_connectors_config_for_stage(transfer_config: OmniTransferConfig | None, stage_id: str | int) -> dict[str, Any]:
    """The connector payload shipped to one stage worker.

    Incoming edges appear as ``"from_stage_<F>"`` (role receiver), outgoing
    ones as ``"to_stage_<T>"`` (role sender), each ``{"spec": {"name", "extra"}}``
    with ``from_stage``/``to_stage`` filled in.
    """
    if transfer_config is None:
        return {}
    stage = str(stage_id)
    payload: dict[str, Any] = {}
    for (src, dst), spec in sorted(transfer_config.connectors.items()):
        if stage not in (src, dst):
            continue
        role, key = ("receiver", f"from_stage_{src}") if dst == stage else ("sender", f"to_stage_{dst}")
        extra = {**spec.extra, "from_stage": _stage_int(src, "from_stage"), "to_stage": _stage_int(dst, "to_stage")}
        extra.setdefault("role", role)
        payload[key] = {"spec": {"name": spec.name, "extra": extra}}
    return payload


def get_stage_connector_config(transfer_config: OmniTransferConfig | None, stage_id: int) -> dict[str, Any]:
    """Serialized connector config payload for a stage (``{}`` without a config).

    Unlike upstream, errors are raised, not swallowed into an "IPC fallback".
    """
    return get_connectors_config_for_stage(transfer_config, stage_id)


def stage_payload_to_specs(
    stage_id: int | str, connectors_config: Mapping[str, Any], *, incoming_only: bool = True
) -> dict[tuple[str, str], ConnectorSpec]:
    """Turn a ``get_connectors_config_for_stage`` payload back into edge specs."""
    specs: dict[tuple[str, str], ConnectorSpec] = {}
    for key, entry in connectors_config.items():
        if key.startswith("from_stage_"):
            edge = (key.removeprefix("from_stage_"), str(stage_id))
        elif key.startswith("to_stage_") and not incoming_only:
            edge = (str(stage_id), key.removeprefix("to_stage_"))
        else:
            continue
        spec = entry.get("spec", {}) if isinstance(entry, Mapping) else {}
        specs[edge] = ConnectorSpec(spec.get("name", "SharedMemoryConnector"), dict(spec.get("extra") or {}))
    return specs


def build_stage_connectors(
    stage_id: int, connectors_config: dict[str, Any], purpose: str = "request_forwarding"
) -> dict[tuple[str, str], Any] | None:
    """Deprecated: use ``get_stage_connector_config`` + ``create_connectors_from_config``."""
    warnings.warn(
        "build_stage_connectors is deprecated; use get_stage_connector_config and create_connectors_from_config",
        DeprecationWarning,
        stacklevel=2,
    )
    specs = stage_payload_to_specs(stage_id, connectors_config)
    if not specs:
        return None
    return create_connectors_from_config(specs, purpose, caller_stage_id=stage_id, is_sender=False)


def resolve_omni_kv_config_for_stage(
    transfer_cfg: OmniTransferConfig | None, stage_id: int | str
) -> tuple[dict[str, Any] | None, str | None, str | None]:
    """KV connector config for a stage: its outgoing edge (sender) first, else its incoming edge."""
    if transfer_cfg is None:
        return None, None, None
    stage = str(stage_id)

    def order(value: str) -> tuple[int, int | str]:
        return (0, int(value)) if value.isdigit() else (1, value)

    outgoing = sorted((dst for src, dst in transfer_cfg.connectors if src == stage), key=order)
    incoming = sorted((src for src, dst in transfer_cfg.connectors if dst == stage), key=order)
    if outgoing:
        edge, role = (stage, outgoing[0]), "sender"
    elif incoming:
        edge, role = (incoming[0], stage), "receiver"
    else:
        return None, None, None
    spec = transfer_cfg.connectors[edge]
    config = {"type": spec.name, **spec.extra}
    config.setdefault("role", role)
    return config, edge[0], edge[1]
