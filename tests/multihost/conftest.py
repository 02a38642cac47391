"""Three test hosts (network namespaces, one interface each, no default route) shared by the whole session.

Servers run on the hosts' own addresses in 198.18.0.0/15; every connector runs in a child process on its
host (``TestHost.child_connector``), configured ``host: auto``.  Hosts, processes and links are removed at
the end, also on failure.  Needs root: skipped without it, failed under CI=true.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Iterator

import pytest

from omni_core.testing import require
from omni_core.testing.hosts import NamespaceHosts

os.environ.setdefault("MC_LOG_LEVEL", "ERROR")  # children inherit it


@pytest.fixture(scope="session")
def hosts() -> Iterator[NamespaceHosts]:
    with NamespaceHosts.for_test(3) as net:
        yield net


@pytest.fixture(scope="session")
def mooncake_available() -> None:
    from omni_mooncake.master import INSTALL

    try:
        for module in ("mooncake.store", "mooncake.engine"):
            importlib.import_module(module)
    except ImportError as exc:
        require(False, f"the Mooncake wheel does not import ({exc}): {INSTALL}")


@pytest.fixture(scope="session")
def mooncake_master(hosts: NamespaceHosts, mooncake_available: None) -> Iterator[object]:
    """A ``mooncake_master`` on host 1, bound to that host's address."""
    from omni_mooncake.master import MooncakeMaster

    h1 = hosts.host(1)
    master = MooncakeMaster(lease_ms=200, host=h1.address, launcher=h1.exec_prefix).start()
    yield master
    master.stop()
