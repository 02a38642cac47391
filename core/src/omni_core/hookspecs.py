"""Pluggy hook specifications of the ``omni`` plugin system."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

PROJECT = "omni"
hookspec = pluggy.HookspecMarker(PROJECT)
#: Marker plugins use on their hook implementations.
hookimpl = pluggy.HookimplMarker(PROJECT)

if TYPE_CHECKING:
    from .registration import ConnectorRegistration, CoordinatorRegistration, LauncherRegistration


@hookspec
def omni_register_connectors() -> list[ConnectorRegistration]:
    """Return the connectors this plugin provides (targets are lazy ``module:Class`` strings)."""
    raise NotImplementedError


@hookspec
def omni_register_cli_commands() -> list[Any]:
    """Return :class:`omni_core.cli.CliCommand` records adding ``omni`` subcommands."""
    raise NotImplementedError


@hookspec
def omni_register_load_balancers() -> list[Any]:
    """Return load-balancing policy records (name, ``module:Class`` target)."""
    raise NotImplementedError


@hookspec
def omni_register_services() -> list[Any]:
    """Return :class:`omni_core.ServiceRegistration` records for ``omni services up NAME``."""
    raise NotImplementedError


@hookspec
def omni_register_launchers() -> list[LauncherRegistration]:
    """Return the launchers this plugin provides (``launcher: NAME``; targets are lazy ``module:Class`` strings)."""
    raise NotImplementedError


@hookspec
def omni_register_coordinators() -> list[CoordinatorRegistration]:
    """Return the stage-replica coordinators this plugin provides (lazy ``module:attr`` targets)."""
    raise NotImplementedError
