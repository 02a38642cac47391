"""The ``omni`` command line: plugins, doctor, config validate, plus plugin-provided commands."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..plugins import get_plugin_registry
from ..registration import import_target
from ..version import __version__


def _build_parser(plugin_commands: dict[str, str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni", description="Omni Connectors: move data between pipeline stages.")
    parser.add_argument("--version", action="version", version=f"omni-core {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("plugins", help="list installed plugins, their connectors and status")
    sub.add_parser("doctor", help="check Python, backends, /dev/shm and system libraries")
    config = sub.add_parser("config", help="work with pipeline configs")
    config_sub = config.add_subparsers(dest="config_command", metavar="ACTION")
    validate = config_sub.add_parser("validate", help="validate a config and print its edge -> connector table")
    validate.add_argument("file")
    run = sub.add_parser("run", help="drive a pipeline config through real stage processes and connectors")
    run.add_argument("config")
    run.add_argument("--no-progress", action="store_true", help="do not draw the progress bar")
    run.add_argument("--kill-replica", type=int, metavar="STAGE", help="SIGKILL one replica of STAGE mid-run")
    bench = sub.add_parser("bench", help="measure connector bandwidth between two processes (memcpy as ceiling)")
    bench.add_argument("--connectors", default="SharedMemoryConnector", help="comma-separated connector names")
    bench.add_argument("--config", help="YAML/JSON mapping connector name -> extra (servers, ports)")
    bench.add_argument("--sizes", default="4KiB,1MiB,16MiB,64MiB", help="comma-separated payload sizes")
    bench.add_argument("--repeat", type=int, default=10, help="samples per size (after one warm-up)")
    bench.add_argument("--out", default="bench-results/omni", help="directory for results.json, .md and .png")
    bench.add_argument("--no-progress", action="store_true")
    services = sub.add_parser("services", help="start or stop local backends for trying the examples")
    services_sub = services.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = services_sub.add_parser("up", help="start a local backend (e.g. mooncake, yuanrong)")
    up.add_argument("name")
    down = services_sub.add_parser("down", help="stop local backends started with 'up' (all if none named)")
    down.add_argument("names", nargs="*")
    for name, help_text in sorted(plugin_commands.items()):
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``omni`` console script; returns 0 ok, 1 problems found, 2 usage."""
    argv = list(sys.argv[1:] if argv is None else argv)
    registry = get_plugin_registry()
    commands = {cmd.name: (cmd, record) for cmd, record in registry.cli_commands()}
    parser = _build_parser({name: cmd.help for name, (cmd, _) in commands.items()})
    if argv and argv[0] in commands:
        command, record = commands[argv[0]]
        try:
            handler = import_target(command.target)
        except (ImportError, AttributeError) as exc:
            print(f"omni {argv[0]}: {record.label} failed to load: {exc}", file=sys.stderr)
            return 1
        return int(handler(argv[1:]) or 0)
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
    if args.command == "bench":
        from . import bench_cmd

        return bench_cmd.run(args)
    if args.command == "services":
        from . import services_cmd

        return services_cmd.run(args)
    if args.command == "run":
        from ..run.orchestrator import main as run_main

        return run_main(args.config, progress=not args.no_progress, kill_stage=args.kill_replica)
    parser.print_help(sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
