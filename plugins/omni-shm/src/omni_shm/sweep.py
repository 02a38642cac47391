"""Reclaiming what dead processes left in the shared-memory directory."""

from __future__ import annotations

import contextlib
import os
import time

from . import names, protocol
from .reader import PayloadReader


def sweep_orphans(directory: str, reader: PayloadReader, ttl_s: float) -> int:
    """Remove the slabs, scratch entries and key entries of processes that are gone; return how many.

    Only entries of this user are considered, and an owner counts as gone only when its pid is absent or
    now belongs to a process with another start time (see :func:`names.owner_alive`).  A dead owner's
    payloads that are still unread and younger than ``ttl_s`` are adopted: their key entries and slab stay, so
    they can still be read; a later sweep removes the slab once every reader has taken them (no key entry
    left) or they are ``ttl_s`` old.  Key entries are withdrawn through the region protocol before the slab
    itself is removed.
    """
    alive: dict[names.Owner, bool] = {}

    def dead(owner: names.Owner) -> bool:
        if owner not in alive:
            alive[owner] = names.owner_alive(owner)
        return not alive[owner]

    euid = os.geteuid()
    owned: list[str] = []
    entries: list[str] = []
    with os.scandir(directory) as scan:
        for entry in scan:
            if not entry.name.startswith(names.PREFIX):
                continue
            try:
                if entry.stat(follow_symlinks=False).st_uid != euid:
                    continue
            except FileNotFoundError:
                continue
            parsed = names.parse_owned(entry.name)
            if parsed is not None and dead(parsed[0]):
                owned.append(entry.name)
            elif parsed is None and names.is_key_entry(entry.name):
                entries.append(entry.name)

    removed = 0
    dead_slabs = set(owned)
    adopted: set[str] = set()
    for name in entries:
        path = os.path.join(directory, name)
        try:
            location = names.parse_target(os.readlink(path))
            published = os.lstat(path).st_mtime
        except OSError:
            continue
        if location is None:
            continue
        parsed = names.parse_owned(location.slab)
        if location.slab in dead_slabs or (parsed is not None and dead(parsed[0])):
            if time.time() - published < ttl_s:  # unread: readable until read or its ttl
                adopted.add(location.slab)
                continue
            with contextlib.suppress(protocol.Busy):  # a reader is taking it: it goes without us
                reader.retire_entry(path)
                removed += 1
    for name in (n for n in owned if n not in adopted):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
            removed += 1
        reader.forget(name)
    return removed
