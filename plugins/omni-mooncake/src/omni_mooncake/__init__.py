"""omni-mooncake: Mooncake Store and TransferEngine connectors.

Importing this package is cheap: the connectors (and torch, zmq, mooncake) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "MooncakeStoreConnector": "store_connector",
    "MooncakeConnector": "store_connector:MooncakeStoreConnector",  # upstream's old name
    "MooncakeTransferEngineConnector": "te_connector",
    "ReceivedBuffer": "te_pool",
}

__all__ = [
    "MooncakeConnector",
    "MooncakeStoreConnector",
    "MooncakeTransferEngineConnector",
    "ReceivedBuffer",
    "__version__",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

if TYPE_CHECKING:
    from .store_connector import MooncakeStoreConnector
    from .store_connector import MooncakeStoreConnector as MooncakeConnector
    from .te_connector import MooncakeTransferEngineConnector
    from .te_pool import ReceivedBuffer
