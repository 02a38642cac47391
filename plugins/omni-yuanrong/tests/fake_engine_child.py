"""Kit child processes for the TransferEngine connector: the fake engine is registered before the connector.

Parent side: :class:`FakeEngineChild` replaces the kit's ``ChildConnector``.  Child side: run as a
script, it registers the fake-engine connector and then serves the kit's JSON-lines protocol.
"""

from __future__ import annotations

import sys

from omni_core import ConnectorSpec
from omni_core.testing import ChildConnector


class FakeEngineChild(ChildConnector):
    """A kit child process whose connector uses FakeAscendTransferEngine."""

    def __init__(self, spec: ConnectorSpec, *, timeout: float = 60.0) -> None:
        super().__init__(spec, timeout=timeout, launcher=[sys.executable, __file__])


if __name__ == "__main__":
    from fake_ascend_engine import register_fake_connector

    from omni_core.remote import child_main

    register_fake_connector()
    raise SystemExit(child_main(sys.argv[1:]))
