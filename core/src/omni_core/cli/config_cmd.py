"""``omni config validate FILE``: the edge -> connector table, or every error found."""

from __future__ import annotations

import argparse
import sys

from ..config_loader import load_omni_transfer_config
from ..errors import ConfigError
from ..factory import OmniConnectorFactory
from .table import render_table


def run(args: argparse.Namespace) -> int:
    try:
        config = load_omni_transfer_config(args.file)
    except (ConfigError, FileNotFoundError) as exc:
        print(f"{args.file}: invalid", file=sys.stderr)
        for line in getattr(exc, "errors", None) or [str(exc)]:
            print(f"  - {line}", file=sys.stderr)
        return 1
    assert config is not None
    rows = []
    for (src, dst), spec in sorted(config.connectors.items()):
        caps = OmniConnectorFactory.capabilities(spec.name).summary()
        extra = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.extra.items())) or "-"
        rows.append([f"{src} -> {dst}", spec.name, caps, extra])
    print(render_table(["edge", "connector", "capabilities", "extra"], rows))
    return 0
