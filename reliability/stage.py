"""The parent's handle on a stage child (``python -m reliability.child``), and the environment children get."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from omni_core.remote import JsonLinesChild


def child_env() -> dict[str, str]:
    """Children import this package through PYTHONPATH (it is not installed) and use one torch thread."""
    root = str(Path(__file__).resolve().parents[1])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


class StageProcess(JsonLinesChild):
    """One ``python -m reliability.child`` process."""

    def __init__(
        self, config: dict[str, Any], timeout: float = 60.0, env: dict[str, str] | None = None, prefix: list[str] = ()
    ) -> None:  # fmt: skip
        """``prefix`` runs it elsewhere (a test host's ``ip netns exec NAME``)."""
        command = [*prefix, sys.executable, "-m", "reliability.child", json.dumps(config)]
        super().__init__(command, timeout=timeout, env={**child_env(), **(env or {})})
