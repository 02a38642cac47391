"""Entry-point hooks of omni-shm (imports nothing heavy)."""

from __future__ import annotations

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, Delivery, hookimpl


@hookimpl
def omni_register_connectors() -> list[ConnectorRegistration]:
    return [
        ConnectorRegistration(
            name="SharedMemoryConnector",
            target="omni_shm.connector:SharedMemoryConnector",
            capabilities=Capabilities(raw_data=False, delivery=Delivery.CONSUME_ONCE),
            config_keys=(
                ConfigKey("namespace", str, "omni", "prefix of segment names; isolates pipelines on one host"),
                ConfigKey("device", (str, type(None)), None, "device for decoded tensors (e.g. 'cuda:0'); None = CPU"),
                ConfigKey("readers", int, 1, "readers per key: 1 = consume-once, N > 1 = broadcast to N readers"),
                ConfigKey("ttl_seconds", (int, float), 600.0, "unconsumed payloads older than this are reclaimed"),
                ConfigKey("zero_copy", bool, False, "get returns views into shared memory instead of copies"),
                ConfigKey("shm_threshold_bytes", int, 65536, "accepted for upstream configs; payloads below it use the arena"),
            ),
            install_hint="pip install omni-shm",
            description="POSIX shared memory on one host; any process can get by key",
        )
    ]
