"""Registration records that plugins return from ``omni_register_connectors``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .capabilities import Capabilities
from .envexpand import expand_env_value
from .errors import ConfigError
from .suggest import did_you_mean
from .version import CONNECTOR_API_VERSION

_TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_UNSET = object()


@dataclass(frozen=True)
class ConfigKey:
    """One key a connector accepts in ``ConnectorSpec.extra``.

    ``type`` is a Python type or a tuple of types (``bool`` is never accepted
    for ``int``/``float``).  Numeric values may be written as ``${VAR}``
    strings; they are expanded strictly and converted.
    """

    name: str
    type: type | tuple[type, ...]
    default: Any = None
    help: str = ""

    @property
    def type_names(self) -> str:
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        return " | ".join("None" if t is type(None) else t.__name__ for t in types)

    def coerce(self, value: Any, where: str) -> Any:
        """Return ``value`` expanded and checked against ``type``; raise ConfigError naming ``where``."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        field_name = f"{where}: key {self.name!r}"
        numeric = [t for t in types if t in (int, float)]
        if isinstance(value, str) and "$" in value:
            value = expand_env_value(value, strict=bool(numeric), field_name=field_name)
            if numeric and str not in types:
                for t in numeric:
                    try:
                        return t(value)
                    except ValueError:
                        pass
                raise ConfigError(f"{field_name} must be {self.type_names}, got {value!r:.200} after expansion")
        if _matches(value, types):
            return float(value) if float in types and int not in types and isinstance(value, int) else value
        raise ConfigError(f"{field_name} must be {self.type_names}, got {type(value).__name__} {value!r:.200}")


def _matches(value: Any, types: tuple[type, ...]) -> bool:
    for t in types:
        if t is object:
            return True
        if t is type(None) and value is None:
            return True
        if t in (int, float) and isinstance(value, bool):
            continue
        if t is float and isinstance(value, int):
            return True
        if isinstance(value, t):
            return True
    return False


#: Keys core injects into every spec during role/port resolution.
CORE_KEYS: tuple[ConfigKey, ...] = (
    ConfigKey("role", (str, type(None)), None, "sender or receiver; injected by core"),
    ConfigKey("stage_id", (int, str, type(None)), None, "stage that owns this instance; injected by core"),
    ConfigKey("from_stage", (int, str, type(None)), None, "edge source stage; injected by core"),
    ConfigKey("to_stage", (int, str, type(None)), None, "edge destination stage; injected by core"),
)


@dataclass(frozen=True)
class ConnectorRegistration:
    """A connector a plugin provides.  ``target`` is imported only on creation.

    name: the connector name used in configs.
    target: ``"module:Class"``; the class is called with the spec's ``extra`` dict.
    aliases: other names resolving to this connector.
    capabilities: what the connector can do (read without importing it).
    config_keys: the keys ``extra`` may hold; ``None`` accepts any key unchecked.
    api_version: the omni-core connector API version targeted.
    install_hint: the pip command that installs missing dependencies.
    requires: top-level modules the connector needs (checked without importing them).
    """

    name: str
    target: str
    aliases: tuple[str, ...] = ()
    capabilities: Capabilities = field(default_factory=Capabilities)
    config_keys: tuple[ConfigKey, ...] | None = ()
    api_version: int = CONNECTOR_API_VERSION
    install_hint: str = ""
    requires: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"ConnectorRegistration.name must be a non-empty str, got {self.name!r}")
        check_target("connector", self.name, self.target, "Class")
        object.__setattr__(self, "aliases", tuple(self.aliases))
        if self.config_keys is not None:
            keys = tuple(self.config_keys)
            names = [k.name for k in keys]
            dupes = sorted({n for n in names if names.count(n) > 1})
            if dupes:
                raise ValueError(f"connector {self.name!r}: config key(s) declared twice: {dupes}")
            object.__setattr__(self, "config_keys", keys)

    @property
    def names(self) -> tuple[str, ...]:
        return (self.name, *self.aliases)

    def all_keys(self) -> dict[str, ConfigKey] | None:
        """Declared keys plus core's injected keys, by name; ``None`` if unchecked."""
        if self.config_keys is None:
            return None
        return {k.name: k for k in (*CORE_KEYS, *self.config_keys)}

    def validate_extra(self, extra: Mapping[str, Any] | None, where: str) -> dict[str, Any]:
        """Check ``extra`` against the declared keys; return it with values expanded.

        ``where`` names the edge or spec at fault in every error message.
        """
        if extra is None:
            return {}
        if not isinstance(extra, Mapping):
            raise ConfigError(
                f"{where}: 'extra' of connector {self.name!r} must be a mapping, got {type(extra).__name__}"
            )
        keys = self.all_keys()
        if keys is None:
            return dict(extra)
        out: dict[str, Any] = {}
        for name, value in extra.items():
            key = keys.get(name)
            if key is None:
                declared = sorted(k for k in keys if k not in {c.name for c in CORE_KEYS})
                raise ConfigError(
                    f"{where}: unknown key {name!r}{did_you_mean(name, declared)} for connector {self.name!r}; "
                    f"valid keys: {', '.join(declared) or '(none)'}"
                )
            out[name] = key.coerce(value, where)
        return out


@dataclass(frozen=True)
class PolicyRegistration:
    """A load-balancing policy a plugin provides; ``target`` is a lazy ``module:Class``."""

    name: str
    target: str
    description: str = ""

    def __post_init__(self) -> None:
        check_target("policy", self.name, self.target, "Class")


@dataclass(frozen=True)
class CliCommand:
    """An ``omni`` subcommand a plugin adds.

    ``target`` is a lazy ``module:function``; the function takes the remaining
    argv (list of str) and returns the exit code.
    """

    name: str
    help: str
    target: str

    def __post_init__(self) -> None:
        check_target("command", self.name, self.target, "function")


@dataclass(frozen=True)
class ServiceRegistration:
    """A local backend service a plugin can start for trying examples (``omni services up NAME``).

    ``target`` is a lazy ``module:function`` taking the state directory (a
    ``pathlib.Path`` the service may use for files) and returning a dict with
    at least ``pid`` (the detached server process) and ``hint`` (how to reach
    it); ``workdir`` (removed on ``down``) and ``env`` are optional.
    """

    name: str
    description: str
    target: str

    def __post_init__(self) -> None:
        check_target("service", self.name, self.target, "function")


@dataclass(frozen=True)
class LauncherRegistration:
    """A launcher a plugin provides: it starts ``omni run``'s stage replicas where the config's placement says.

    name: the name configs (``launcher: NAME``) and ``omni run --launcher NAME`` use.
    target: a lazy ``"module:Class"``, a :class:`omni_core.Launcher` subclass, called as
        ``Class(placement, replicas)`` (see :mod:`omni_core.launch`).
    placement_keys: the placement keys it honours, of :data:`omni_core.placement.PLACEMENT_KEYS`; a config
        that uses another is refused before anything starts, naming the stage and key.
    """

    name: str
    target: str
    description: str = ""
    placement_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        from .placement import PLACEMENT_KEYS

        check_target("launcher", self.name, self.target, "Class")
        object.__setattr__(self, "placement_keys", tuple(self.placement_keys))
        unknown = sorted(set(self.placement_keys) - set(PLACEMENT_KEYS))
        if unknown:
            raise ValueError(f"launcher {self.name!r}: unknown placement key(s) {unknown}; known: {PLACEMENT_KEYS}")


@dataclass(frozen=True)
class CoordinatorRegistration:
    """A stage-replica coordinator a plugin provides, reached through lazy ``"module:attr"`` targets.

    A runner (``omni run``) uses it without importing the plugin; each target is called as upstream's API is:

    runtime: ``runtime(host=, heartbeat_timeout=)`` starts a coordinator; it has ``router_address``,
        ``pub_address`` and ``close()``.
    hub_client: ``hub_client(pub_address)`` follows its replica list: ``get_replicas_for_stage(stage_id).replicas``
        (records with ``input_addr``, ``queue_length``, ``status.value``) and ``close()``.
    stage_client: ``stage_client(coord_zmq_addr=, input_addr=, output_addr=, stage_id=, queue_length_getter=)``
        registers a stage replica and heartbeats; ``close()`` deregisters it.
    load_balancer: ``load_balancer(policy)`` returns the zero-argument factory of the policy named ``policy``,
        whose instances ``select(task, replicas)`` return an index into ``replicas``.
    """

    name: str
    runtime: str
    hub_client: str
    stage_client: str
    load_balancer: str
    description: str = ""

    def __post_init__(self) -> None:
        for role in ("runtime", "hub_client", "stage_client", "load_balancer"):
            check_target(f"coordinator {self.name!r}", role, getattr(self, role), "attr")


def check_target(kind: str, name: str, target: object, attr: str) -> None:
    """Raise ValueError naming ``kind`` and ``name`` unless ``target`` looks like ``"package.module:attr"``."""
    if not isinstance(target, str) or not _TARGET.match(target):
        raise ValueError(f"{kind} {name!r}: target must look like 'package.module:{attr}', got {target!r}")


def import_target(target: str) -> Any:
    """Import and return the object named by a ``"package.module:attr"`` string."""
    import importlib

    module_name, _, attr = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj
