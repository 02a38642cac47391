"""What a scenario left behind once everything was closed: shared-memory entries, lock files, pool bytes,
processes and listening ports."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

SHM = Path("/dev/shm")
_LOCK_DIRS = (Path("/tmp"), SHM, Path("/run/lock"), Path("/var/lock"))
_LISTEN = "0A"


@dataclass
class Leaks:
    """Counts of what was left (goal: all zero), and the names behind them."""

    shm_entries: int = 0
    lock_files: int = 0
    pool_bytes: int = 0
    processes: int = 0
    ports: int = 0
    details: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.shm_entries + self.lock_files + self.pool_bytes + self.processes + self.ports


class LeakProbe:
    """Snapshot before a scenario; :meth:`measure` after it."""

    def __init__(self, namespace: str | None) -> None:
        self.namespace = namespace
        self._shm_before = set(os.listdir(SHM))
        self._locks_before = _lock_files()

    def measure(self, pids: list[int], ports: list[int], pool_bytes: int) -> Leaks:
        """Everything new in /dev/shm that is ours, new lock files, live ``pids``, ``ports`` still listening."""
        shm = sorted(name for name in set(os.listdir(SHM)) - self._shm_before if self._ours(name))
        locks = sorted(_lock_files() - self._locks_before)
        alive = [pid for pid in pids if process_alive(pid)]
        listening = sorted(set(ports) & _listening_ports())
        details = [f"/dev/shm/{n}" for n in shm] + locks
        details += [f"pid {p}" for p in alive] + [f"port {p}" for p in listening]
        return Leaks(len(shm), len(locks), pool_bytes, len(alive), len(listening), details)

    def _ours(self, name: str) -> bool:
        """Omni entries of our namespace, and any entry not of an omni namespace (other sessions run beside us)."""
        if not name.startswith("omni-"):
            return True
        return self.namespace is not None and name.startswith(f"omni-{self.namespace}-")


def shm_bytes(namespace: str) -> int:
    """Bytes of the slabs of ``namespace`` still in /dev/shm."""
    total = 0
    for entry in os.scandir(SHM):
        if entry.name.startswith(f"omni-{namespace}-"):
            with contextlib.suppress(FileNotFoundError):
                total += 0 if entry.is_symlink() else entry.stat(follow_symlinks=False).st_size
    return total


def _lock_files() -> set[str]:
    found = set()
    for directory in _LOCK_DIRS:
        try:
            names = os.listdir(directory)
        except OSError:
            continue
        found |= {str(directory / n) for n in names if "lock" in n.lower() or n.endswith(".lck")}
    return found


def process_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rpartition(b")")[2].split()[0] not in (b"Z", b"X")
    except OSError:
        return False


def _listening_ports() -> set[int]:
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == _LISTEN:
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports
