"""Entry-point hooks of omni-pipeline (imports nothing heavy): the ``omni run``/``bench``/``services`` commands
and the built-in ``local`` launcher."""

from __future__ import annotations

from omni_core import CliCommand, LauncherRegistration, hookimpl


@hookimpl
def omni_register_cli_commands() -> list[CliCommand]:
    return [
        CliCommand("run", "drive a pipeline config through real stage replicas and connectors",
                   "omni_pipeline.cli:run"),
        CliCommand("bench", "measure connector bandwidth between two processes (memcpy as ceiling)",
                   "omni_pipeline.cli:bench"),
        CliCommand("services", "start or stop local backends for trying the examples", "omni_pipeline.cli:services"),
    ]


@hookimpl
def omni_register_launchers() -> list[LauncherRegistration]:
    return [
        LauncherRegistration(
            "local",
            "omni_pipeline.local_launcher:LocalLauncher",
            "each replica a process on this machine, or on a named host through that host's exec prefix",
            placement_keys=("host",),
        )
    ]
