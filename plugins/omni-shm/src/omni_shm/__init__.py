"""omni-shm: Shared-memory connector for one host (the embedded default).

Importing this package is cheap: the connector (and numpy, torch) load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {"SharedMemoryConnector": "connector"}

__all__ = ["SharedMemoryConnector", "__version__"]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

if TYPE_CHECKING:
    from .connector import SharedMemoryConnector
