"""Entry-point hooks of omni-yuanrong (imports nothing heavy)."""

from __future__ import annotations

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, Delivery, ServiceRegistration, hookimpl

INSTALL_HINT = "pip install omni-yuanrong  (installs openyuanrong-datasystem)"


@hookimpl
def omni_register_connectors() -> list[ConnectorRegistration]:
    return [
        ConnectorRegistration(
            name="YuanrongConnector",
            target="omni_yuanrong.kv_connector:YuanrongConnector",
            capabilities=Capabilities(delivery=Delivery.PERSISTENT, cross_host=True),
            config_keys=(
                ConfigKey("host", str, "127.0.0.1", "datasystem worker address; auto = this host's address"),
                ConfigKey("port", (int, str), 35001, "datasystem worker port (upstream wrote it as a string)"),
                ConfigKey("get_sub_timeout_ms", int, 1000, "how long get waits for a late producer"),
                ConfigKey("connect_timeout_ms", int, 5000, "client connect timeout"),
                ConfigKey("req_timeout_ms", int, 5000, "per-request timeout (the library default is 60 s)"),
                ConfigKey("zero_copy", bool, False, "get returns read-only views into worker memory"),
                ConfigKey(
                    "write_mode",
                    str,
                    "evict",
                    "evict (memory, evictable) | memory (never evicted) | write_through (also to the worker's "
                    "L2 cache: survives a worker restart) | write_back (L2 cache, asynchronously)",
                ),
                ConfigKey("ttl_seconds", int, 0, "the worker deletes a value this long after its put; 0 = never"),
            ),
            install_hint=INSTALL_HINT,
            requires=("yr",),
            description="openYuanrong datasystem KV store",
        ),
        ConnectorRegistration(
            name="YuanrongTransferEngineConnector",
            target="omni_yuanrong.te_connector:YuanrongTransferEngineConnector",
            capabilities=Capabilities(
                raw_data=True, needs_endpoint=True, delivery=Delivery.CONSUME_ONCE, cross_host=True, device_memory=True
            ),
            config_keys=(
                ConfigKey("host", (str, type(None)), "auto", "address to advertise; auto = this host's IP"),
                ConfigKey("zmq_port", (int, str, type(None)), "auto", "side-channel port; auto = bind port 0"),
                ConfigKey("rpc_port", (int, str, type(None)), "auto", "engine RPC port; auto = a free port"),
                ConfigKey("protocol", str, "ascend", "transfer protocol"),
                ConfigKey("device_name", str, "auto", "'npu:N'; auto = npu:<local rank>"),
                ConfigKey("memory_pool_size", int, 1024**3, "bytes of the registered pool"),
                ConfigKey("memory_pool_device", str, "npu", "'npu' or 'npu:N'"),
                ConfigKey("buffer_ttl_seconds", (int, float), 300.0, "unclaimed payloads freed after this"),
                ConfigKey("control_timeout_ms", int, 5000, "how long a receiver waits for its sender's side channel"),
                ConfigKey("sender_host", (str, type(None)), None, "receiver: default sender host"),
                ConfigKey("sender_zmq_port", (int, str, type(None)), None, "receiver: default sender port"),
            ),
            install_hint=INSTALL_HINT + "; the data plane needs an Ascend NPU with CANN",
            requires=("yr", "zmq"),
            description="openYuanrong TransferEngine (Ascend NPU, receiver reads)",
        ),
    ]


@hookimpl
def omni_register_services() -> list[ServiceRegistration]:
    return [
        ServiceRegistration("yuanrong", "a local openYuanrong datasystem worker", "omni_yuanrong.services:start_worker")
    ]
