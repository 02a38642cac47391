"""The ``omni`` command line: plugins, doctor, config validate, plus plugin-provided commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..errors import ConfigError, PluginError
from ..log_config import configure_logging
from ..plugins import get_plugin_registry
from ..registration import import_target
from ..version import __version__
from .terminal import print_error

#: Commands this repository's plugins add, and what installs them (named when the command is missing).
PLUGIN_COMMANDS = {
    "run": "omni-core[pipeline]",
    "bench": "omni-core[pipeline]",
    "services": "omni-core[pipeline]",
    "coordinator": "omni-core[coordinator]",
}


def _build_parser(plugin_commands: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni", description="Omni Connectors: move data between pipeline stages.")
    parser.add_argument("--version", action="version", version=f"omni-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    plugins = sub.add_parser("plugins", help="list installed plugins, their connectors and status")
    plugins.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    doctor = sub.add_parser("doctor", help="check Python, backends, /dev/shm and system libraries")
    doctor.add_argument("--json", action="store_true", help="print one JSON document instead of the table")
    config = sub.add_parser("config", help="work with pipeline configs")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    validate = config_sub.add_parser("validate", help="validate a config and print its edge -> connector table")
    validate.add_argument("file")
    for name, help_text in sorted(plugin_commands.items()):
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omni`` console script; returns 0 ok, 1 problems found, 2 usage (or a bad
    ``OMNI_LOG_LEVEL``).  The ``omni`` loggers write to stderr at ``OMNI_LOG_LEVEL`` (WARNING by default)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        configure_logging()
    except ConfigError as exc:
        print_error("omni", exc)
        return 2
    registry = get_plugin_registry()
    commands = {cmd.name: (cmd, record) for cmd, record in registry.cli_commands()}
    parser = _build_parser({name: cmd.help for name, (cmd, _) in commands.items()})
    if argv and argv[0] in commands:
        command, record = commands[argv[0]]
        try:
            handler = import_target(command.target)
        except (ImportError, AttributeError) as exc:
            print_error(f"omni {argv[0]}", f"{record.label} failed to load: {exc}")
            return 1
        try:
            return int(handler(argv[1:]) or 0)
        except (ConfigError, PluginError, FileNotFoundError) as exc:  # a bad config or plugin: one line, no traceback
            print_error(f"omni {argv[0]}", exc)
            return 1
    if argv and argv[0] in PLUGIN_COMMANDS:
        print_error(f"omni {argv[0]}", "no installed plugin provides this command; "
                    f"install it with: pip install '{PLUGIN_COMMANDS[argv[0]]}'")
        return 2
    args = parser.parse_args(argv)
    if args.command == "plugins":
        from . import plugins_cmd

        return plugins_cmd.run(args)
    if args.command == "doctor":
        from . import doctor

        return doctor.run(args)
    if args.command == "config" and getattr(args, "config_command", None) == "validate":
        from . import config_cmd

        return config_cmd.run(args)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
