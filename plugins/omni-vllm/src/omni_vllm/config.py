"""``kv_connector_extra_config`` of ``OmniKVConnector``: parsed and checked without importing vLLM.

Every error is a :class:`omni_core.ConfigError` naming the key at fault.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from omni_core import ConfigError, ConfigKey, ConnectorSpec, OmniConnectorFactory

WHERE = "kv_connector_extra_config"
ROLES = ("kv_producer", "kv_consumer", "kv_both")
_NAMESPACE = re.compile(r"[A-Za-z0-9_]{1,32}")

#: The keys ``kv_connector_extra_config`` may hold besides ``omni_connector``.
SETTINGS_KEYS = (
    ConfigKey("namespace", str, "omni", "prefix of every key ([A-Za-z0-9_], at most 32); isolates deployments"),
    ConfigKey("load_timeout_s", (int, float), 10.0, "how long a decode worker waits for one layer's KV"),
    ConfigKey("lookup_budget_s", (int, float), 0.2, "time the scheduler may spend probing one request's prefixes"),
    ConfigKey("lookup_backoff_s", (int, float), 30.0, "after a probe slower than lookup_budget_s (a sender gone), "
              "requests are computed without a lookup for this long"),
    ConfigKey("from_stage", (int, str), 0, "stage id of the prefill side (keys and ports of the Omni connector)"),
    ConfigKey("to_stage", (int, str), 1, "stage id of the decode side"),
)
_SPEC_KEYS = {"name", "extra"}


@dataclass(frozen=True)
class KVSettings:
    """What ``OmniKVConnector`` reads from ``kv_connector_extra_config``."""

    connector: ConnectorSpec
    namespace: str = "omni"
    load_timeout_s: float = 10.0
    lookup_budget_s: float = 0.2
    lookup_backoff_s: float = 30.0
    from_stage: str = "0"
    to_stage: str = "1"


def parse_settings(extra_config: Mapping[str, Any] | None) -> KVSettings:
    """Check ``kv_connector_extra_config`` and return the settings; ConfigError names the key at fault.

    ``omni_connector`` is a ConnectorSpec as a mapping, ``{"name": ..., "extra": {...}}``; its ``extra``
    is validated against the keys the named connector declares.
    """
    if extra_config is None:
        extra_config = {}
    if not isinstance(extra_config, Mapping):
        raise ConfigError(f"{WHERE} must be a mapping, got {type(extra_config).__name__}")
    known = {key.name: key for key in SETTINGS_KEYS}
    unknown = sorted(set(extra_config) - set(known) - {"omni_connector"})
    if unknown:
        raise ConfigError(
            f"{WHERE}: unknown key {unknown[0]!r} for OmniKVConnector; valid keys: omni_connector, {', '.join(known)}"
        )
    if "omni_connector" not in extra_config:
        raise ConfigError(
            f"{WHERE}: key 'omni_connector' is required, e.g. "
            '{"omni_connector": {"name": "SharedMemoryConnector", "extra": {"namespace": "pd"}}}'
        )
    values = {name: key.coerce(extra_config.get(name, key.default), WHERE) for name, key in known.items()}
    namespace = values["namespace"]
    if not _NAMESPACE.fullmatch(namespace):
        raise ConfigError(f"{WHERE}: key 'namespace' must be 1-32 characters of [A-Za-z0-9_], got {namespace!r}")
    for name in ("load_timeout_s", "lookup_budget_s", "lookup_backoff_s"):
        if not values[name] > 0:
            raise ConfigError(f"{WHERE}: key {name!r} must be > 0, got {values[name]!r}")
    stages = {}
    for name in ("from_stage", "to_stage"):
        stage = str(values[name])
        if not stage.isdigit():
            raise ConfigError(f"{WHERE}: key {name!r} must be a stage id (a non-negative integer), got {stage!r}")
        stages[name] = stage
    return KVSettings(
        connector=parse_connector_spec(extra_config["omni_connector"]),
        namespace=namespace,
        load_timeout_s=float(values["load_timeout_s"]),
        lookup_budget_s=float(values["lookup_budget_s"]),
        lookup_backoff_s=float(values["lookup_backoff_s"]),
        **stages,
    )


def parse_connector_spec(value: Any) -> ConnectorSpec:
    """``{"name": ..., "extra": {...}}`` as a validated ConnectorSpec (unknown connector or key: ConfigError)."""
    where = f"{WHERE}['omni_connector']"
    if isinstance(value, ConnectorSpec):
        value = {"name": value.name, "extra": value.extra}
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} must be a mapping {{'name': ..., 'extra': {{...}}}}, got {type(value).__name__}")
    unknown = sorted(set(value) - _SPEC_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys: extra, name")
    name = value.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}: key 'name' must be a connector name, got {name!r}")
    try:
        registration = OmniConnectorFactory.registration(name)
    except ValueError as exc:
        raise ConfigError(f"{where}: key 'name': {exc}") from exc
    extra = value.get("extra") or {}
    if registration is not None:
        extra = registration.validate_extra(extra, f"{where}['extra']")
    elif not isinstance(extra, Mapping):
        raise ConfigError(f"{where}: key 'extra' must be a mapping, got {type(extra).__name__}")
    return ConnectorSpec(name, dict(extra))


def check_role(role: Any) -> str:
    """The vLLM ``kv_role`` if OmniKVConnector supports it, else ConfigError."""
    if role not in ROLES:
        raise ConfigError(f"kv_transfer_config: key 'kv_role' must be one of {', '.join(ROLES)}, got {role!r}")
    return str(role)
