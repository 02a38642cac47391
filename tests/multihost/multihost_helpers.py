"""Helpers the multi-host tests share: payload digests, descriptor counts, traffic through a host's link."""

from __future__ import annotations

import os
import time
from typing import Any

from omni_core.remote import ChildConnector
from omni_core.testing import checksum, make_payload
from omni_core.testing.hosts import TestHost

MiB = 1 << 20
EDGE = {"from": "0", "to": "1"}


def digest(kind: str) -> str:
    """The checksum a child connector reports for payload ``kind`` (see ``omni_core.remote``)."""
    if kind.startswith("bytes:"):
        import torch

        return checksum(torch.ones(int(kind.removeprefix("bytes:")), dtype=torch.uint8))
    return checksum(make_payload(kind))


def put(child: ChildConnector, key: str, kind: str, timeout: float | None = None) -> dict[str, Any]:
    return child.call({"op": "put", **EDGE, "key": key, "kind": kind}, timeout)


def get(
    child: ChildConnector, key: str, metadata: dict[str, Any] | None, wait: float = 20.0
) -> dict[str, Any]:
    """A ``get_with_deadline`` ``wait`` seconds away, in the child."""
    return child.call({"op": "get", **EDGE, "key": key, "metadata": metadata, "timeout": wait}, wait + 60)


def health(child: ChildConnector) -> dict[str, Any]:
    return child.call({"op": "health"})


def open_fds(pid: int) -> dict[str, int]:
    """Open descriptors of process ``pid`` by kind (``socket``, ``pipe``, ``anon_inode:[eventfd]``, a path...)."""
    kinds: dict[str, int] = {}
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        kind = target.split(":[")[0] if target.startswith(("socket:", "pipe:")) else target
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def link_bytes(host: TestHost) -> int:
    """Bytes that went through ``host``'s link, both ways (read on the bridge side)."""
    stats = f"/sys/class/net/{host.veth}/statistics"
    return sum(int(open(f"{stats}/{name}").read()) for name in ("rx_bytes", "tx_bytes"))


def wait_for_traffic(host: TestHost, since: int, nbytes: int, within: float = 60.0) -> None:
    """Block until ``nbytes`` more went through ``host``'s link than ``since`` (a transfer is under way)."""
    deadline = time.monotonic() + within
    while link_bytes(host) - since < nbytes:
        assert time.monotonic() < deadline, f"fewer than {nbytes} bytes moved through {host} in {within} s"
        time.sleep(0.002)


def descriptors(*children: ChildConnector) -> dict[int, dict[str, int]]:
    return {child.pid: open_fds(child.pid) for child in children}


def assert_descriptors_back(
    before: dict[int, dict[str, int]], within: float = 10.0, *, library_sockets: tuple[int, ...] = ()
) -> None:
    """No process holds more descriptors of any kind than in ``before`` (within ``within`` seconds).

    Sockets of the processes in ``library_sockets`` are not counted: there a backend library keeps connections
    of its own that the test has no hand in (say why at the call).
    """
    deadline = time.monotonic() + within
    while True:
        now = {pid: open_fds(pid) for pid in before}
        grown = [kind for pid, kinds in now.items() for kind, n in kinds.items()
                 if n > before[pid].get(kind, 0) and not (kind == "socket" and pid in library_sockets)]  # fmt: skip
        if not grown:
            return
        assert time.monotonic() < deadline, f"descriptors were {before}, are {now}"
        time.sleep(0.1)
