"""omni-vllm: vLLM's KV connector over Omni connectors, and a stage-to-stage KV pipe.

``kv_connector="OmniKVConnector"`` works in every vLLM process once this distribution is installed
(a ``vllm.general_plugins`` entry point registers it); ``kv_connector_module_path="omni_vllm"`` works
too.  Importing this package is cheap: vLLM and torch load on first access to a name.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY = {
    "OmniKVConnector": "connector",
    "StageKVPipe": "stage_pipe",
    "register": "registration",
    "parse_settings": "config",
    "KVSettings": "config",
}

__all__ = ["KVSettings", "OmniKVConnector", "StageKVPipe", "__version__", "parse_settings", "register"]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)

if TYPE_CHECKING:
    from .config import KVSettings, parse_settings
    from .connector import OmniKVConnector
    from .registration import register
    from .stage_pipe import StageKVPipe
