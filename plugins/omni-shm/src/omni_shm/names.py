"""Names of everything the connector puts in the shared-memory directory, and who owns it.

Entries (all start with ``omni-<namespace>-``):

- slab ``omni-<ns>-<pidns>-<pid>-<start>-s<n>``: a file of payload regions, owned by the process that made it;
- key entry ``omni-<ns>-k-<key>`` (or ``-h-<digest>`` for keys too long for a file name): a symlink whose
  target ``<slab>:<offset>:<generation>`` locates the payload published under the key;
- scratch ``omni-<ns>-<pidns>-<pid>-<start>-p<n>``: a key entry briefly moved aside while a stale one is removed.

The owner is recorded as pid-namespace inode, pid and process start time (from ``/proc/<pid>/stat``), so a
recycled pid never makes a dead owner look alive, and entries of another pid namespace are never judged.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import os
import re
from typing import NamedTuple

PREFIX = "omni-"
MAX_NAMESPACE = 32
_NAMESPACE = re.compile(rf"[A-Za-z0-9_.]{{1,{MAX_NAMESPACE}}}")
_OWNED = re.compile(r"omni-([A-Za-z0-9_.]+)-(\d+)-(\d+)-(\d+)-([sp])(\d+)")
_TARGET = re.compile(r"(omni-([A-Za-z0-9_.]+)-\d+-\d+-\d+-s\d+):(\d+):(\d+)")
_MAX_ENTRY_BYTES = 255  # NAME_MAX

SLAB = "s"
SCRATCH = "p"
_numbers = itertools.count()  # process-wide, so connectors of one process never pick the same name


class Owner(NamedTuple):
    """The process that owns a slab or scratch entry."""

    pidns: int
    pid: int
    start: int

    @property
    def tag(self) -> str:
        return f"{self.pidns}-{self.pid}-{self.start}"


class Location(NamedTuple):
    """Where a published payload lives: a region of a slab, stamped with its generation."""

    slab: str
    offset: int
    generation: int

    def target(self) -> str:
        """The key entry's symlink target for this location."""
        return target(self.slab, self.offset, self.generation)


def validate_namespace(namespace: object) -> str:
    """Return ``namespace`` if it is 1-32 characters of ``[A-Za-z0-9_.]``, else raise ValueError."""
    if not isinstance(namespace, str) or not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"SharedMemoryConnector namespace must be 1-{MAX_NAMESPACE} characters of [A-Za-z0-9_.], got {namespace!r}"
        )
    return namespace


def current_owner() -> Owner:
    """This process as an :class:`Owner` (recomputed after a fork)."""
    return _owner_of(os.getpid())


@functools.lru_cache(maxsize=4)
def _owner_of(pid: int) -> Owner:
    start = process_start_time(pid)
    if start is None:
        raise RuntimeError(f"cannot read the start time of this process from /proc/{pid}/stat")
    return Owner(_pid_namespace(), pid, start)


def _pid_namespace() -> int:
    try:
        return int(os.readlink("/proc/self/ns/pid").partition("[")[2].rstrip("]"))
    except (OSError, ValueError):
        return 0


def process_start_time(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[19])  # field 22 of the line; fields[0] is field 3 (state)


def owner_alive(owner: Owner) -> bool:
    """False only when ``owner`` is known to be gone (same pid namespace, pid absent or restarted)."""
    if owner.pidns != current_owner().pidns:
        return True
    return process_start_time(owner.pid) == owner.start


def slab_name(namespace: str) -> str:
    """A new, never used name for a slab of this process."""
    return f"{PREFIX}{namespace}-{current_owner().tag}-{SLAB}{next(_numbers)}"


def scratch_name(namespace: str) -> str:
    """A new, never used name for a scratch entry of this process."""
    return f"{PREFIX}{namespace}-{current_owner().tag}-{SCRATCH}{next(_numbers)}"


def key_entry_name(namespace: str, key: str) -> str:
    """File name of the key entry for ``key`` (a digest when the key is too long for a file name)."""
    name = f"{PREFIX}{namespace}-k-{key}"
    if len(name) <= _MAX_ENTRY_BYTES // 4 or len(name.encode("utf-8", "surrogatepass")) <= _MAX_ENTRY_BYTES:
        return name
    return f"{PREFIX}{namespace}-h-{hashlib.blake2b(key.encode('utf-8', 'surrogatepass')).hexdigest()}"


def parse_owned(name: str) -> tuple[Owner, str] | None:
    """``(owner, kind)`` of a slab or scratch entry name, else None."""
    match = _OWNED.fullmatch(name)
    if match is None:
        return None
    return Owner(int(match[2]), int(match[3]), int(match[4])), match[5]


def is_key_entry(name: str) -> bool:
    """True for a key entry name of any namespace."""
    _, sep, rest = name.partition("-")
    return sep == "-" and rest.partition("-")[2][:2] in ("k-", "h-")


def target(slab: str, offset: int, generation: int) -> str:
    """The symlink target of a key entry for a region of ``slab``."""
    return f"{slab}:{offset}:{generation}"


def parse_target(target: str, namespace: str | None = None) -> Location | None:
    """The :class:`Location` a key entry's target names, or None if malformed (or of another namespace)."""
    match = _TARGET.fullmatch(target)
    if match is None or (namespace is not None and match[2] != namespace):
        return None
    return Location(match[1], int(match[3]), int(match[4]))
