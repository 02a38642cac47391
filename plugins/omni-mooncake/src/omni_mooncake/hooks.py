"""Entry-point hooks of omni-mooncake (imports nothing heavy)."""

from __future__ import annotations

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, Delivery, ServiceRegistration, hookimpl

INSTALL_HINT = "pip install 'omni-mooncake[cpu]'  (CUDA 12 hosts: 'omni-mooncake[cuda]', CUDA 13: '[cuda13]')"

QUARANTINE_KEY = ConfigKey(
    "quarantine_s",
    (int, float, type(None)),
    None,
    "seconds memory of a failed transfer is held before reuse; None = the engine's transfer timeout + margin",
)

STORE_KEYS = (
    ConfigKey(
        "host", (str, type(None)), "auto", "address other clients reach this one's segment at; auto = this host's IP"
    ),
    ConfigKey("metadata_server", str, "http://127.0.0.1:8080/metadata", "metadata server URL or 'P2PHANDSHAKE'"),
    ConfigKey("master", str, "127.0.0.1:50051", "mooncake_master RPC address"),
    ConfigKey("segment", int, 512 * 1024 * 1024, "bytes this process contributes to the global pool"),
    ConfigKey(
        "localbuf",
        int,
        64 * 1024 * 1024,
        "bytes of registered local buffer: puts stage framed payloads and gets receive into it "
        "(bigger payloads use temporary memory)",
    ),
    ConfigKey("proto", str, "tcp", "'tcp' or 'rdma'"),
    ConfigKey("rdma", str, "", "RDMA device list"),
    ConfigKey("get_timeout_s", (int, float), 1.0, "how long get() waits for a key to appear"),
    ConfigKey("setup_timeout_s", (int, float), 10.0, "how long to wait for the master before failing"),
    ConfigKey(
        "transfer_timeout_s",
        (int, float, type(None)),
        None,
        "longest a put, or one read of a get, is waited for (a peer cut off mid-transfer); None: Mooncake's own 60 s",
    ),
    ConfigKey(
        "replica_num",
        int,
        1,
        "copies of each object, each in another client's segment (2: a client's death loses nothing)",
    ),
    ConfigKey(
        "hard_pin",
        bool,
        False,
        "never evict acknowledged objects: a full store refuses new puts instead (remove them with cleanup)",
    ),
    QUARANTINE_KEY,
)

TE_KEYS = (
    ConfigKey("host", (str, type(None)), "auto", "address to advertise; auto = this host's IP"),
    ConfigKey(
        "zmq_port", (int, str), 50051, "sender side-channel port (offset by core's port resolution); 0 or 'auto' = any"
    ),
    ConfigKey("protocol", str, "rdma", "'rdma' or 'tcp'"),
    ConfigKey("device_name", str, "", "RDMA NIC filter, e.g. 'mlx5_0'"),
    ConfigKey("memory_pool_size", int, 1024**3, "bytes of the registered memory pool"),
    ConfigKey("memory_pool_device", str, "cpu", "'cpu' (pinned host memory when CUDA is present) or a CUDA device"),
    ConfigKey(
        "buffer_ttl_seconds", (int, float), 300.0, "unclaimed sender buffers are reclaimed after this; <= 0 disables"
    ),
    ConfigKey("sender_host", (str, type(None)), None, "receiver: default sender host"),
    ConfigKey("sender_zmq_port", (int, type(None)), None, "receiver: default sender side-channel port"),
    ConfigKey("readers", int, 1, "receivers per key before the sender frees it (1 sender -> N receivers)"),
    QUARANTINE_KEY,
)

STORE_REGISTRATION = ConnectorRegistration(
    name="MooncakeStoreConnector",
    aliases=("MooncakeConnector",),
    target="omni_mooncake.store_connector:MooncakeStoreConnector",
    capabilities=Capabilities(delivery=Delivery.PERSISTENT, cross_host=True),
    config_keys=STORE_KEYS,
    install_hint=INSTALL_HINT,
    requires=("mooncake",),
    description="Mooncake distributed store (master + segments)",
)

TE_REGISTRATION = ConnectorRegistration(
    name="MooncakeTransferEngineConnector",
    target="omni_mooncake.te_connector:MooncakeTransferEngineConnector",
    capabilities=Capabilities(
        raw_data=True, needs_endpoint=True, delivery=Delivery.CONSUME_ONCE, cross_host=True, device_memory=True
    ),
    config_keys=TE_KEYS,
    install_hint=INSTALL_HINT,
    requires=("mooncake", "zmq"),
    description="Mooncake TransferEngine (RDMA/TCP) with a registered memory pool",
)


@hookimpl
def omni_register_connectors() -> list[ConnectorRegistration]:
    return [STORE_REGISTRATION, TE_REGISTRATION]


@hookimpl
def omni_register_services() -> list[ServiceRegistration]:
    return [ServiceRegistration("mooncake", "a local mooncake_master", "omni_mooncake.services:start_master")]
