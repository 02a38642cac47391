"""omni-mooncake: Mooncake Store and TransferEngine connectors.

Importing this package is cheap: the connectors (and torch, zmq, mooncake) load on first access.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "MooncakeStoreConnector": ("store_connector", "MooncakeStoreConnector"),
    "MooncakeConnector": ("store_connector", "MooncakeStoreConnector"),  # upstream's old name
    "MooncakeTransferEngineConnector": ("te_connector", "MooncakeTransferEngineConnector"),
    "ReceivedBuffer": ("te_pool", "ReceivedBuffer"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'omni_mooncake' has no attribute {name!r}")
    module, attr = _LAZY[name]
    value = getattr(importlib.import_module(f".{module}", __name__), attr)
    globals()[name] = value
    return value
