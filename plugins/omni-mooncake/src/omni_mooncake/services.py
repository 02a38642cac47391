"""``omni services up mooncake``: a local master for trying the examples."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from .master import MooncakeMaster


def start_master(state_dir: Path) -> dict[str, Any]:
    """Start a detached ``mooncake_master`` (127.0.0.1, free ports); return how to reach and stop it."""
    workdir = Path(tempfile.mkdtemp(prefix="omni-mooncake-master-"))
    master = MooncakeMaster(detach=True, log_path=workdir / "master.log").start()
    assert master.proc is not None
    return {
        "pid": master.proc.pid,
        "workdir": str(workdir),
        "env": {"OMNI_MOONCAKE_MASTER": master.address},
        "hint": f"mooncake_master at {master.address} (metadata: P2PHANDSHAKE); examples read it from "
        f"OMNI_MOONCAKE_MASTER:\n  export OMNI_MOONCAKE_MASTER={master.address}",
    }
