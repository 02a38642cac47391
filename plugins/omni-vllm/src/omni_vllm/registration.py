"""Registration with vLLM's ``KVConnectorFactory`` (the ``vllm.general_plugins`` entry point calls it)."""

from __future__ import annotations

NAME = "OmniKVConnector"
MODULE = "omni_vllm.connector"


def register() -> None:
    """Make ``kv_connector="OmniKVConnector"`` work in this process; safe to call again, in any vLLM process.

    vLLM loads general plugins in every process it starts (API server, engine core, workers), once each;
    a second call (another ``LLM`` in the same process, or a direct call) changes nothing.  The
    connector's module is imported only when vLLM creates the connector.
    """
    from vllm.distributed.kv_transfer.kv_connector.factory import KVConnectorFactory

    try:
        KVConnectorFactory.register_connector(NAME, MODULE, NAME)
    except ValueError:
        from .connector import OmniKVConnector

        if KVConnectorFactory.get_connector_class_by_name(NAME) is not OmniKVConnector:
            raise ValueError(f"another plugin registered a vLLM KV connector named {NAME!r}") from None
