"""``omni services up NAME`` / ``omni services down [NAME]``: local backends for trying examples."""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path
from typing import Any

import psutil

from omni_core import ConfigError, get_plugin_registry, import_target, print_error


def state_dir() -> Path:
    """Where running services are recorded (``$OMNI_STATE_DIR``, default ``~/.cache/omni/services``)."""
    return Path(os.environ.get("OMNI_STATE_DIR") or Path.home() / ".cache" / "omni" / "services")


def stop_service(info: dict[str, Any], timeout: float = 20.0) -> None:
    """Stop a recorded service by PID (SIGTERM, then SIGKILL) and remove its work directory."""
    pid = int(info["pid"])
    if psutil.pid_exists(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if psutil.pid_exists(pid):
            os.kill(pid, signal.SIGKILL)
    if info.get("workdir"):
        shutil.rmtree(info["workdir"], ignore_errors=True)


def up(name: str) -> int:
    """Start service ``name`` (unless it runs already) and record it; 0 ok, 1 failed, 2 unknown."""
    try:
        service, record = get_plugin_registry().select("service", name)
    except ConfigError as exc:
        print_error("omni services", exc)
        return 2
    record_path = state_dir() / f"{name}.json"
    if record_path.exists():
        info = json.loads(record_path.read_text())
        if psutil.pid_exists(int(info["pid"])):
            print(f"{name} is already running (pid {info['pid']}).\n{info['hint']}")
            return 0
    record_path.parent.mkdir(parents=True, exist_ok=True)
    try:
        info = import_target(service.target)(record_path.parent)
    except Exception as exc:
        print_error("omni services", f"{name} ({record.label}) failed to start: {exc}")
        return 1
    record_path.write_text(json.dumps(info))
    print(f"{name} is running (pid {info['pid']}); stop it with: omni services down {name}\n{info['hint']}")
    return 0


def down(names: list[str]) -> int:
    """Stop the recorded services named (all if none); 0 ok, 1 if one named is not running."""
    records = sorted(state_dir().glob("*.json")) if state_dir().exists() else []
    chosen = [p for p in records if not names or p.stem in names]
    missing = sorted(set(names) - {p.stem for p in records})
    for path in chosen:
        stop_service(json.loads(path.read_text()))
        path.unlink()
        print(f"{path.stem} stopped")
    if missing:
        print_error("omni services", f"not running: {', '.join(missing)}")
    if not chosen and not missing:
        print("no services running")
    return 1 if missing else 0
