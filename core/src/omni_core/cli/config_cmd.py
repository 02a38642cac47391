"""``omni config validate FILE``: the edge -> connector table and the placement, or every error found."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeVar

from ..config_loader import load_omni_transfer_config
from ..errors import ConfigError
from ..factory import OmniConnectorFactory
from ..placement import StagePlacement, load_placement
from .table import print_table
from .terminal import print_error

T = TypeVar("T")


def run(args: argparse.Namespace) -> int:
    faults: dict[str, None] = {}
    config = _load(load_omni_transfer_config, args.file, faults)
    placement = _load(load_placement, args.file, faults)
    if faults:
        print_error(args.file, "invalid")
        for line in faults:
            print(f"  - {line}", file=sys.stderr)
        return 1
    assert config is not None and placement is not None
    rows = []
    for (src, dst), spec in sorted(config.connectors.items()):
        caps = OmniConnectorFactory.capabilities(spec.name).summary()
        extra = ", ".join(f"{k}={v!r}" for k, v in sorted(spec.extra.items())) or "-"
        rows.append([f"{src} -> {dst}", spec.name, caps, extra])
    print_table(["edge", "connector", "capabilities", "extra"], rows)
    if placement.stages or placement.strategy:
        strategy = f", strategy {placement.strategy}" if placement.strategy else ""
        print(f"\nlauncher {placement.launcher}{strategy}")
        placed = [[sid, _describe(stage)] for sid, stage in sorted(placement.stages.items(), key=lambda i: int(i[0]))]
        print_table(["stage", "placement"], placed)
    return 0


def _load(load: Callable[[str], T], path: str, faults: dict[str, None]) -> T | None:
    """``load(path)``, or None with its faults added to ``faults`` (each once)."""
    try:
        return load(path)
    except (ConfigError, FileNotFoundError) as exc:
        faults.update(dict.fromkeys(getattr(exc, "errors", None) or [str(exc)]))
        return None


def _describe(stage: StagePlacement) -> str:
    parts = [f"host {stage.host.name} ({stage.host.address})"] if stage.host else []
    parts += [f"{key} " + ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in values.items())
              for key, values in (("resources", stage.resources), ("labels", stage.labels)) if values]
    parts += [f"{key} {value:g}" for key, value in (("num_gpus", stage.num_gpus), ("num_cpus", stage.num_cpus))
              if value is not None]
    return "; ".join(parts) or "-"
