"""Settings of ``YuanrongTransferEngineConnector``: env expansion, auto host/ports/devices, checks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni_core import expand_env_int, expand_env_value, resolve_host

from .te_device import resolve_device_name, resolve_pool_device

ROLES = ("sender", "receiver")
AUTO_PORT_VALUES = frozenset({"", "auto"})
_NAME = "YuanrongTransferEngineConnector"


def _port(value: Any, field: str) -> int | None:
    """A port from config: None/""/"auto" -> None (chosen at bind time), else an int in 1..65535."""
    if value is None or (isinstance(value, str) and value.strip().lower() in AUTO_PORT_VALUES):
        return None
    port = expand_env_int(value, field_name=f"{_NAME} {field}")
    if not 1 <= port <= 65535:
        raise ValueError(f"{_NAME} {field} must be in 1..65535 or 'auto', got {port}")
    return port


@dataclass(frozen=True)
class TESettings:
    """Resolved settings (the keys of ``ConnectorSpec.extra``, see ``omni_yuanrong.hooks``)."""

    role: str
    host: str
    zmq_port: int | None
    rpc_port: int | None
    protocol: str
    device_name: str
    memory_pool_size: int
    memory_pool_device: str
    buffer_ttl_seconds: float
    sender_host: str | None
    sender_zmq_port: int | None
    control_timeout_ms: int

    @classmethod
    def from_config(cls, config: Mapping[str, Any], *, allow_host_pool: bool, local_rank: int) -> TESettings:
        """Resolve ``config``: every string value is ``${VAR}``-expanded, ports strictly."""
        values = {key: expand_env_value(value, field_name=f"{_NAME} {key}") for key, value in config.items()}
        role = str(values.get("role") or "sender").lower()
        if role not in ROLES:
            raise ValueError(f"{_NAME} role must be 'sender' or 'receiver', got {values.get('role')!r}")
        host = str(values.get("host") or "auto")
        protocol = str(values.get("protocol", "ascend"))
        sender_host = values.get("sender_host")
        pool_device = resolve_pool_device(str(values.get("memory_pool_device", "npu")), allow_host=allow_host_pool)
        settings = cls(
            role=role,
            host=resolve_host(host),
            zmq_port=_port(values.get("zmq_port"), "zmq_port"),
            rpc_port=_port(values.get("rpc_port"), "rpc_port"),
            protocol=protocol,
            device_name=resolve_device_name(str(values.get("device_name", "auto")), protocol, local_rank),
            memory_pool_size=expand_env_int(values.get("memory_pool_size", 1 << 30), field_name="memory_pool_size"),
            memory_pool_device=pool_device,
            buffer_ttl_seconds=float(values.get("buffer_ttl_seconds", 300.0)),
            sender_host=None if sender_host is None else str(sender_host),
            sender_zmq_port=_port(values.get("sender_zmq_port"), "sender_zmq_port"),
            control_timeout_ms=expand_env_int(values.get("control_timeout_ms", 5000), field_name="control_timeout_ms"),
        )
        if settings.memory_pool_size <= 0:
            raise ValueError(f"{_NAME} memory_pool_size must be > 0, got {settings.memory_pool_size}")
        if settings.control_timeout_ms <= 0:
            raise ValueError(f"{_NAME} control_timeout_ms must be > 0, got {settings.control_timeout_ms}")
        return settings
