"""``omni bench``: connector bandwidth between two processes, memcpy as the ceiling."""

from __future__ import annotations

import json
import subprocess
import sys


def _bench(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "omni_core.cli.main", "bench", *args],
                          capture_output=True, text=True, timeout=300)


def test_bench_writes_json_table_and_plot(tmp_path) -> None:
    out = tmp_path / "bench"
    done = _bench("--connectors", "SharedMemoryConnector", "--sizes", "4KiB,1MiB", "--repeat", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())["results"]
    assert {(r["connector"], r["bytes"]) for r in results} == {
        (name, size) for name in ("memcpy", "SharedMemoryConnector") for size in (4096, 1 << 20)
    }
    assert all(r["median_ms"] > 0 and r["min_ms"] <= r["median_ms"] for r in results)
    assert "SharedMemoryConnector  1 MiB" in done.stdout and "x memcpy" in done.stdout
    assert (out / "bandwidth.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "transfers" in done.stderr  # the progress bar


def test_bench_unknown_connector_fails_before_starting(tmp_path) -> None:
    done = _bench("--connectors", "NoSuchConnector", "--out", str(tmp_path))
    assert done.returncode == 1 and "unknown connector 'NoSuchConnector'" in done.stderr, done.stderr
    assert not (tmp_path / "results.json").exists()
