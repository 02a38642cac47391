"""``omni bench``: argument handling around :mod:`omni_core.bench`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import yaml

from ..bench import parse_size, run_bench
from ..errors import ConfigError, PluginError


def run(args: argparse.Namespace) -> int:
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
        print(f"omni bench: {exc}; install it with: pip install numpy matplotlib", file=sys.stderr)
        return 1
    except (ConfigError, PluginError, ValueError, OSError, RuntimeError) as exc:
        print(f"omni bench: {exc}", file=sys.stderr)
        return 1
