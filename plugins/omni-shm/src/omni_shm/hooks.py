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
                ConfigKey("namespace", str, "omni", "prefix of every name in shm_dir ([A-Za-z0-9_.], max 32); "
                          "isolates pipelines on one host"),
                ConfigKey("shm_dir", str, "/dev/shm", "directory (a tmpfs) holding slabs and key entries"),
                ConfigKey("device", (str, type(None)), None, "device for decoded tensors (e.g. 'cuda:0'); None = CPU"),
                ConfigKey("readers", int, 1, "readers per key: 1 = consume-once, N > 1 = broadcast to N readers "
                          "(each connector reads a key once)"),
                ConfigKey("ttl_seconds", (int, float), 600.0, "payloads not read by all readers within this many "
                          "seconds are withdrawn and reclaimed"),
                ConfigKey("zero_copy", bool, False, "get returns tensors/arrays as views into shared memory, held "
                          "until dropped or release(key) (a CUDA device gets copies)"),
                ConfigKey("arena_bytes", int, 16 << 20, "size of the slabs shared by small payloads (up to a "
                          "quarter of it); larger payloads get slabs of their own"),
                ConfigKey("keep_idle_bytes", int, 512 << 20, "bytes of empty slabs kept mapped for reuse"),
                ConfigKey("sweep_interval_s", (int, float), 5.0, "seconds between full sweeps (consumed, expired "
                          "and dead processes' leftovers) run from put/get"),
                ConfigKey("pin_memory", bool, True, "register slabs as pinned host memory for fast CUDA copies "
                          "(only in processes that already use CUDA)"),
            ),
            install_hint="pip install omni-shm",
            description="POSIX shared memory on one host; any process can get by key",
        )
    ]
