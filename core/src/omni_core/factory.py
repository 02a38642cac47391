"""``OmniConnectorFactory``: create connectors by name from plugin registrations."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, cast

from .base import OmniConnectorBase
from .capabilities import Capabilities
from .errors import PluginError
from .plugins import get_plugin_registry
from .registration import ConnectorRegistration, import_target
from .spec import ConnectorSpec
from .suggest import did_you_mean

Constructor = Callable[[dict[str, Any]], OmniConnectorBase]


class OmniConnectorFactory:
    """Factory for creating OmniConnectors.

    Names resolve first to constructors registered in-process with
    :meth:`register_connector`, then to plugin registrations discovered through
    the ``omni`` entry points.  Built-in connectors have no special path.
    """

    _registry: dict[str, Constructor] = {}
    _lock = threading.Lock()

    @classmethod
    def register_connector(cls, name: str, constructor: Constructor) -> None:
        """Register a constructor ``(extra: dict) -> connector`` under ``name``."""
        with cls._lock:
            if name in cls._registry:
                raise ValueError(f"connector {name!r} is already registered in this process")
            found = get_plugin_registry().find_connector(name)
            if found is not None:
                raise ValueError(f"connector {name!r} is already provided by {found[1].label}")
            cls._registry[name] = constructor

    @classmethod
    def unregister_connector(cls, name: str) -> None:
        """Remove a constructor registered with :meth:`register_connector` (tests)."""
        with cls._lock:
            cls._registry.pop(name, None)

    @classmethod
    def list_registered_connectors(cls) -> list[str]:
        """All connector names (and aliases) that ``create_connector`` accepts."""
        return sorted({*cls._registry, *get_plugin_registry().connector_names()})

    @classmethod
    def registration(cls, name: str) -> ConnectorRegistration | None:
        """The plugin registration for ``name`` (None for in-process constructors).

        Raises ValueError listing the available names if ``name`` is unknown.
        """
        if name in cls._registry:
            return None
        registry = get_plugin_registry()
        found = registry.find_connector(name)
        if found is not None:
            return found[0]
        available = cls.list_registered_connectors()
        hint = did_you_mean(name, available)
        message = f"unknown connector {name!r}{hint}; available: {', '.join(available) or '(none)'}"
        broken = registry.broken()
        if broken:
            details = "; ".join(f"{r.label}: {r.errors[0]}" for r in broken)
            raise PluginError(f"{message}. Plugins that failed to load: {details}") from broken[0].cause
        raise ValueError(message)

    @classmethod
    def capabilities(cls, name: str) -> Capabilities:
        """Declared capabilities of ``name`` (in-process constructors: from the class if known)."""
        reg = cls.registration(name)
        if reg is not None:
            return reg.capabilities
        caps = getattr(cls._registry[name], "capabilities", None)
        return caps if isinstance(caps, Capabilities) else Capabilities()

    @classmethod
    def create_connector(cls, spec: ConnectorSpec) -> OmniConnectorBase:
        """Create a connector from a spec; errors keep their type and name the fix."""
        reg = cls.registration(spec.name)
        if reg is None:
            return cls._registry[spec.name](dict(spec.extra))
        extra = reg.validate_extra(spec.extra, f"connector {spec.name!r}")
        constructor = cast(Constructor, load_target(reg))
        try:
            return constructor(extra)
        except ImportError as exc:
            raise _install_hint_error(reg, exc) from exc
        except Exception as exc:
            exc.add_note(f"while creating connector {spec.name!r} ({reg.target})")
            raise


def load_target(reg: ConnectorRegistration) -> type[OmniConnectorBase]:
    """Import ``reg.target``; ImportErrors stay ImportErrors and name the pip command."""
    try:
        obj = import_target(reg.target)
    except ImportError as exc:
        raise _install_hint_error(reg, exc) from exc
    except AttributeError as exc:
        raise ImportError(f"connector {reg.name!r}: target {reg.target!r} not found: {exc}") from exc
    if not (isinstance(obj, type) and issubclass(obj, OmniConnectorBase)):
        raise TypeError(f"connector {reg.name!r}: target {reg.target!r} is not an OmniConnectorBase subclass")
    return obj


def _install_hint_error(reg: ConnectorRegistration, exc: ImportError) -> ImportError:
    hint = f"; install it with: {reg.install_hint}" if reg.install_hint else ""
    message = f"connector {reg.name!r} could not import its dependencies ({exc}){hint}"
    if isinstance(exc, ModuleNotFoundError):
        return ModuleNotFoundError(message, name=exc.name)
    return type(exc)(message) if type(exc) is ImportError else ImportError(message)
