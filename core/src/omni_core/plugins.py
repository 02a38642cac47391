"""Plugin discovery: pluggy hooks on the ``omni`` entry-point group.

Discovery runs once per process on first need (never at ``import omni_core``).
Each entry point is loaded and each hook called inside its own try/except, so a
broken plugin is recorded and reported, never fatal to the host.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import pluggy

from . import hookspecs
from .errors import ConfigError, PluginError
from .registration import ConnectorRegistration, CoordinatorRegistration, LauncherRegistration
from .suggest import did_you_mean
from .version import SUPPORTED_API_VERSIONS, __version__

logger = logging.getLogger("omni.core.plugins")

ENTRY_POINT_GROUP = "omni"
ALLOW_ENV = "OMNI_PLUGINS"
DENY_ENV = "OMNI_DISABLED_PLUGINS"


@dataclass
class PluginRecord:
    """One plugin as discovered: where it came from, what it provides, what went wrong."""

    name: str
    distribution: str
    version: str
    status: str = "loaded"  #: loaded | broken | disabled
    errors: list[str] = field(default_factory=list)
    cause: BaseException | None = None
    connectors: list[ConnectorRegistration] = field(default_factory=list)
    load_balancers: list[Any] = field(default_factory=list)
    cli_commands: list[Any] = field(default_factory=list)
    services: list[Any] = field(default_factory=list)
    launchers: list[LauncherRegistration] = field(default_factory=list)
    coordinators: list[CoordinatorRegistration] = field(default_factory=list)

    def fail(self, message: str, cause: BaseException | None = None) -> None:
        self.status = "broken"
        self.errors.append(message)
        self.cause = self.cause or cause
        logger.warning("omni plugin %s (%s %s): %s", self.name, self.distribution, self.version, message)

    @property
    def label(self) -> str:
        return f"plugin {self.name!r} from {self.distribution} {self.version}".rstrip()


def _split_env(name: str) -> set[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return {part.strip() for part in raw.split(",") if part.strip()}


class PluginRegistry:
    """Everything the installed (or test-registered) plugins provide."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginRecord] = {}
        self._connectors: dict[str, tuple[ConnectorRegistration, PluginRecord]] = {}
        self._conflicts: dict[str, list[PluginRecord]] = {}
        self._lock = threading.RLock()

    # -- discovery ------------------------------------------------------------
    def load_entry_points(self) -> None:
        """Load every ``omni`` entry point allowed by OMNI_PLUGINS / OMNI_DISABLED_PLUGINS."""
        allow, deny = _split_env(ALLOW_ENV), _split_env(DENY_ENV) or set()
        seen: set[tuple[str, str]] = set()
        matched: set[str] = set()
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            dist_name, dist_version = _dist_of(ep)
            if (ep.name, ep.value) in seen:
                continue  # the same distribution visible twice on sys.path
            seen.add((ep.name, ep.value))
            ids = {ep.name, dist_name}
            matched |= ids & ((allow or set()) | deny)
            if (allow is not None and not ids & allow) or ids & deny:
                self.plugins[ep.name] = PluginRecord(ep.name, dist_name, dist_version, status="disabled")
                continue
            record = PluginRecord(ep.name, dist_name, dist_version)
            try:
                module = ep.load()
            except BaseException as exc:
                if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                    raise
                record.fail(f"import of {ep.value!r} failed: {type(exc).__name__}: {exc}", exc)
                self.plugins[ep.name] = record
                continue
            self._add(module, record)
        for env, names in ((ALLOW_ENV, allow or set()), (DENY_ENV, deny)):
            unknown = sorted(names - matched)
            if unknown:
                warnings.warn(
                    f"{env} names plugin(s) that match no installed plugin: {', '.join(unknown)}", stacklevel=3
                )

    def register_plugin(
        self, plugin: object, name: str, distribution: str = "(in-process)", version: str = ""
    ) -> PluginRecord:
        """Register a hook-implementing module or object directly (tests, embedding)."""
        with self._lock:
            if name in self.plugins:
                raise ValueError(f"plugin name {name!r} is already registered ({self.plugins[name].label})")
            return self._add(plugin, PluginRecord(name, distribution, version))

    def unregister_plugin(self, name: str) -> None:
        """Remove a plugin and everything it registered."""
        with self._lock:
            self.plugins.pop(name, None)
            if self.pm.has_plugin(name):
                self.pm.unregister(name=name)
            self._reindex()

    def _add(self, plugin: object, record: PluginRecord) -> PluginRecord:
        self.plugins[record.name] = record
        try:
            self.pm.register(plugin, name=record.name)
        except Exception as exc:  # pluggy validation error: bad hook signature, ...
            record.fail(f"invalid hook implementation: {exc}", exc)
            return record
        record.connectors = self._call(record, "omni_register_connectors", ConnectorRegistration)
        record.load_balancers = self._call(record, "omni_register_load_balancers", object)
        record.cli_commands = self._call(record, "omni_register_cli_commands", object)
        record.services = self._call(record, "omni_register_services", object)
        record.launchers = self._call(record, "omni_register_launchers", LauncherRegistration)
        record.coordinators = self._call(record, "omni_register_coordinators", CoordinatorRegistration)
        self._reindex()
        return record

    def _call(self, record: PluginRecord, hook_name: str, kind: type) -> list[Any]:
        hook = getattr(self.pm.hook, hook_name)
        out: list[Any] = []
        for impl in hook.get_hookimpls():
            if impl.plugin_name != record.name:
                continue
            try:
                items = list(impl.function() or ())
            except Exception as exc:
                record.fail(f"hook {hook_name} raised {type(exc).__name__}: {exc}", exc)
                continue
            for item in items:
                if not isinstance(item, kind):
                    record.fail(f"hook {hook_name} returned {type(item).__name__}, expected {kind.__name__}")
                elif isinstance(item, ConnectorRegistration) and item.api_version not in SUPPORTED_API_VERSIONS:
                    fits = ", ".join(str(v) for v in sorted(SUPPORTED_API_VERSIONS))
                    record.fail(
                        f"connector {item.name!r} targets omni-core connector API {item.api_version}; "
                        f"omni-core {__version__} supports API version(s) {fits}"
                    )
                else:
                    out.append(item)
        return out

    def _reindex(self) -> None:
        providers: dict[str, list[tuple[ConnectorRegistration, PluginRecord]]] = {}
        for record in self.plugins.values():
            for reg in record.connectors:
                for name in reg.names:
                    providers.setdefault(name, []).append((reg, record))
        self._connectors = {n: p[0] for n, p in providers.items() if len(p) == 1}
        self._conflicts = {n: [r for _, r in p] for n, p in providers.items() if len(p) > 1}

    # -- queries ----------------------------------------------------------------
    def connector_names(self) -> list[str]:
        """Names (and aliases) of every usable plugin connector."""
        return sorted(self._connectors)

    def find_connector(self, name: str) -> tuple[ConnectorRegistration, PluginRecord] | None:
        """The registration providing ``name``; raises PluginError on a cross-plugin conflict."""
        if name in self._conflicts:
            who = " and ".join(r.label for r in self._conflicts[name])
            raise PluginError(
                f"connector name {name!r} is provided by more than one plugin: {who}; "
                f"uninstall one or disable it with {DENY_ENV}"
            )
        return self._connectors.get(name)

    def conflicts(self) -> dict[str, list[PluginRecord]]:
        return dict(self._conflicts)

    def broken(self) -> list[PluginRecord]:
        return [r for r in self.plugins.values() if r.status == "broken"]

    def load_balancers(self) -> list[tuple[Any, PluginRecord]]:
        return [(lb, r) for r in self.plugins.values() for lb in r.load_balancers]

    def cli_commands(self) -> list[tuple[Any, PluginRecord]]:
        return [(c, r) for r in self.plugins.values() for c in r.cli_commands]

    def services(self) -> list[tuple[Any, PluginRecord]]:
        return [(s, r) for r in self.plugins.values() for s in r.services]

    def launchers(self) -> list[tuple[LauncherRegistration, PluginRecord]]:
        return [(launcher, r) for r in self.plugins.values() for launcher in r.launchers]

    def coordinators(self) -> list[tuple[CoordinatorRegistration, PluginRecord]]:
        return [(c, r) for r in self.plugins.values() for c in r.coordinators]

    def select(self, kind: str, name: str) -> tuple[Any, PluginRecord]:
        """The one registration of ``kind`` named ``name``, and the plugin providing it.

        ``kind`` is one of :data:`SELECTABLE` (``"launcher"``, ``"load-balancing policy"``, ...).  An unknown name
        raises :class:`ConfigError` listing the valid ones (and the closest, if one is close); a name two plugins
        provide raises :class:`ConfigError` naming both.
        """
        queries: dict[str, Callable[[], list[tuple[Any, PluginRecord]]]] = {
            "launcher": self.launchers,
            "coordinator": self.coordinators,
            "load-balancing policy": self.load_balancers,
            "service": self.services,
        }
        entries = queries[kind]()
        found = [(reg, record) for reg, record in entries if reg.name == name]
        if not found:
            names = sorted({reg.name for reg, _ in entries})
            valid = ", ".join(names) or "(none registered)"
            hint = did_you_mean(name, names)
            raise ConfigError(f"unknown {kind} {name!r}{hint}; valid {SELECTABLE[kind]}: {valid}")
        if len(found) > 1:
            who = " and ".join(record.label for _, record in found)
            raise ConfigError(f"{kind} {name!r} is provided by more than one plugin: {who}")
        return found[0]


#: The kinds :meth:`PluginRegistry.select` chooses among, and their plurals.
SELECTABLE = {
    "launcher": "launchers",
    "coordinator": "coordinators",
    "load-balancing policy": "policies",
    "service": "services",
}


def missing_requirements(registration: ConnectorRegistration) -> list[str]:
    """Top-level modules the connector needs that are not installed (nothing is imported)."""
    missing = []
    for module in registration.requires:
        try:
            if importlib.util.find_spec(module) is None:
                missing.append(module)
        except (ImportError, ValueError):
            missing.append(module)
    return missing


def _dist_of(ep: EntryPoint) -> tuple[str, str]:
    dist = getattr(ep, "dist", None)
    if dist is None:
        return "(unknown distribution)", ""
    return dist.metadata["Name"] or "(unknown distribution)", dist.version or ""


_registry: PluginRegistry | None = None
_registry_lock = threading.Lock()


def get_plugin_registry() -> PluginRegistry:
    """The process-wide registry; entry points are scanned on the first call only."""
    global _registry
    with _registry_lock:
        if _registry is None:
            registry = PluginRegistry()
            registry.load_entry_points()
            _registry = registry
            logger.debug("plugins from entry point group %r: %s", ENTRY_POINT_GROUP,
                         ", ".join(f"{r.name} ({r.status})" for r in registry.plugins.values()) or "none")
        return _registry


def reset_plugin_registry(*, autoload: bool = True) -> PluginRegistry | None:
    """Drop the process-wide registry (tests).  With ``autoload=False`` install an empty one."""
    global _registry
    with _registry_lock:
        _registry = None if autoload else PluginRegistry()
        return _registry
