"""`benchmarks/summarize.py`: one summary.md and a PNG per connector from the targets' summary.json files."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from omni_core.testing import require

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "summarize.py"


def row(connector: str, path: str, nbytes: int, ratio_min: float, median: float, target: str = "") -> dict:
    return {"connector": connector, "path": path, "payload": f"{nbytes} bytes", "bytes": nbytes,
            "reference": "memcpy", "measure": "bandwidth / memcpy bandwidth", "min": ratio_min, "median": median,
            "target": target}  # fmt: skip


def test_summary_table_targets_and_one_png_per_connector(tmp_path: Path) -> None:
    require(importlib.util.find_spec("matplotlib") is not None, "needs matplotlib (the PNGs)")
    (tmp_path / "shm").mkdir()
    rows = [row("SharedMemoryConnector", "copy", 1 << 20, 0.3, 0.25, ">= 0.5"),
            row("SharedMemoryConnector", "copy", 64 << 20, 0.62, 0.61, ">= 0.6"),
            row("OtherConnector", "read", 1 << 20, 0.95, 0.85, ">= 0.9")]  # fmt: skip
    (tmp_path / "shm" / "summary.json").write_text(json.dumps({"command": "bench shm", "rows": rows}))
    command = [sys.executable, str(SCRIPT), str(tmp_path), "shm", "missing"]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1 and "missing/summary.json is missing" in done.stderr  # a target that wrote nothing
    table = (tmp_path / "summary.md").read_text()
    lines = {line.split(" | ")[2]: line for line in table.splitlines() if line.startswith("| SharedMemoryConnector")}
    assert lines["1048576 bytes"].endswith("| >= 0.5 | **no** |")
    assert lines["67108864 bytes"].endswith("| >= 0.6 | yes |")
    assert "| OtherConnector | read | 1048576 bytes | memcpy |" in table and "| >= 0.9 | min only |" in table
    assert "`shm`: `bench shm`" in table
    for name in ("SharedMemoryConnector", "OtherConnector"):
        assert (tmp_path / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
