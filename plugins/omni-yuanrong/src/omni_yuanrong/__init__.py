"""omni-yuanrong: openYuanrong datasystem and TransferEngine connectors.

Importing this package is cheap: the connectors (and torch, yr.datasystem) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "YuanrongConnector": "kv_connector",
    "YuanrongTransferEngineConnector": "te_connector",
}

__all__ = ["YuanrongConnector", "YuanrongTransferEngineConnector", "__version__"]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

if TYPE_CHECKING:
    from .kv_connector import YuanrongConnector
    from .te_connector import YuanrongTransferEngineConnector
