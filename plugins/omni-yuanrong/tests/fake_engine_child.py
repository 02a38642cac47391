"""Kit child processes for the TransferEngine connector: the fake engine is registered before the connector.

Parent side: :class:`FakeEngineChild` replaces the kit's ``ChildConnector``.  Child side: run as a
script, it registers the fake-engine connector and then serves the kit's JSON-lines protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from omni_core import ConnectorSpec
from omni_core.testing import ChildConnector


class FakeEngineChild(ChildConnector):
    """A kit child process whose connector uses FakeAscendTransferEngine."""

    def __init__(self, spec: ConnectorSpec, *, timeout: float = 60.0) -> None:
        self.timeout = timeout
        self.proc = subprocess.Popen(
            [sys.executable, __file__, json.dumps({"name": spec.name, "extra": spec.extra})],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        ready = self._read()
        if not ready.get("ready"):
            raise RuntimeError(f"child connector did not start: {ready}")


if __name__ == "__main__":
    from fake_ascend_engine import register_fake_connector

    from omni_core.testing.child import main

    register_fake_connector()
    raise SystemExit(main(sys.argv[1:]))
