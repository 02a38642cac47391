"""The commands omni-pipeline adds to ``omni``: ``run``, ``bench`` and ``services`` (each takes its argv)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from omni_core import ConfigError, PluginError, print_error


def run(argv: list[str]) -> int:
    """``omni run CONFIG``: 0 when every payload arrived intact exactly once, 1 if not, 130 on Ctrl-C."""
    parser = argparse.ArgumentParser(prog="omni run", description="Drive a pipeline config through real stage "
                                     "replicas and connectors; verify every payload; print a per-edge table.")
    parser.add_argument("config")
    parser.add_argument("--launcher", metavar="NAME", help="the launcher starting stage replicas (default: the "
                        "config's `launcher`, else local)")
    parser.add_argument("--ray-address", metavar="HOST:PORT", help="the Ray cluster the `ray` launcher joins (sets "
                        "RAY_ADDRESS); with neither, it starts a local Ray")
    parser.add_argument("--no-progress", action="store_true", help="no progress on stderr (a bar on a terminal, "
                        "else a line every tenth of the requests)")
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document on stdout")
    parser.add_argument("--kill-replica", type=int, metavar="STAGE", help="SIGKILL one replica of STAGE mid-run")
    parser.add_argument("--metrics-port", type=int, metavar="PORT", help="serve the connector metrics of the run and "
                        "every stage replica (Prometheus text) at http://ADDR:PORT/metrics while it runs (0: any port)")
    parser.add_argument("--metrics-addr", default="127.0.0.1", metavar="ADDR", help="address of --metrics-port "
                        "(default 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.ray_address:
        os.environ["RAY_ADDRESS"] = args.ray_address
    from .orchestrator import main

    metrics = (args.metrics_addr, args.metrics_port) if args.metrics_port is not None else None
    return main(args.config, progress=not args.no_progress, kill_stage=args.kill_replica, launcher=args.launcher,
                json_output=args.json, metrics=metrics)


def bench(argv: list[str]) -> int:
    """``omni bench``: put + get bandwidth of connectors between two processes; 0 ok, 1 failed."""
    from .bench import DEFAULT_SIZES

    parser = argparse.ArgumentParser(prog="omni bench", description="Measure connector bandwidth between two "
                                     "processes, memcpy as the ceiling.")
    parser.add_argument("--connectors", default="SharedMemoryConnector", help="comma-separated connector names")
    parser.add_argument("--config", help="YAML/JSON mapping connector name -> extra (servers, ports)")
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="comma-separated payload sizes")
    parser.add_argument("--repeat", type=int, default=10, help="samples per size (after one warm-up)")
    parser.add_argument("--out", default="bench-results/omni", help="directory for results.json, .md and .png")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    import yaml

    from .bench import parse_size, run_bench

    try:
        connectors = [c.strip() for c in args.connectors.split(",") if c.strip()]
        sizes = [parse_size(s) for s in args.sizes.split(",")]
        if args.repeat < 1:
            raise ConfigError("--repeat must be at least 1")
        extras = yaml.safe_load(Path(args.config).read_text()) if args.config else {}
        if not isinstance(extras, dict):
            raise ConfigError(f"{args.config}: expected a mapping of connector name -> extra")
        return run_bench(connectors, extras, sizes, args.repeat, Path(args.out), progress=not args.no_progress)
    except ModuleNotFoundError as exc:
        print_error("omni bench", f"{exc}; install it with: pip install 'omni-pipeline[bench]'")
        return 1
    except (ConfigError, PluginError, ValueError, OSError, RuntimeError) as exc:
        print_error("omni bench", exc)
        return 1


def services(argv: list[str]) -> int:
    """``omni services up NAME`` / ``down [NAME ...]``: 0 ok, 1 failed, 2 unknown service."""
    parser = argparse.ArgumentParser(prog="omni services", description="Start or stop local backends for trying "
                                     "the examples (plugins provide them).")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    up = sub.add_parser("up", help="start a local backend (e.g. mooncake, yuanrong)")
    up.add_argument("name")
    down = sub.add_parser("down", help="stop local backends started with 'up' (all if none named)")
    down.add_argument("names", nargs="*")
    args = parser.parse_args(argv)
    from .services import down as stop
    from .services import up as start

    return start(args.name) if args.action == "up" else stop(args.names)
