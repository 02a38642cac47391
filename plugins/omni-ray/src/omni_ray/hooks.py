"""Entry-point hooks of omni-ray (imports nothing heavy)."""

from __future__ import annotations

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, Delivery, LauncherRegistration, hookimpl


@hookimpl
def omni_register_connectors() -> list[ConnectorRegistration]:
    return [
        ConnectorRegistration(
            name="RayConnector",
            target="omni_ray.connector:RayConnector",
            capabilities=Capabilities(delivery=Delivery.CONSUME_ONCE, cross_host=True),
            config_keys=(
                ConfigKey(
                    "address",
                    (str, type(None)),
                    None,
                    "Ray cluster to join when this process is not "
                    "connected yet; None = RAY_ADDRESS, else a cluster started on this host ('auto')",
                ),
                ConfigKey(
                    "namespace",
                    (str, type(None)),
                    None,
                    "Ray namespace of the payload owners; producers and consumers of a pipeline share it; "
                    "None = OMNI_RAY_NAMESPACE (the ray launcher sets one per run), else 'omni'",
                ),
                ConfigKey(
                    "readers",
                    int,
                    1,
                    "readers per key: 1 = consume-once, N > 1 = broadcast to N readers "
                    "(each connector reads a key once)",
                ),
                ConfigKey(
                    "ttl_seconds",
                    (int, float),
                    600.0,
                    "payloads not read by all readers within this many seconds are freed",
                ),
                ConfigKey(
                    "zero_copy",
                    bool,
                    False,
                    "get returns tensors/arrays as read-only views into Ray's "
                    "object store (no copy); the object stays pinned while they live",
                ),
                ConfigKey("device", (str, type(None)), None, "device for decoded tensors (e.g. 'cuda:0'); None = CPU"),
                ConfigKey(
                    "call_timeout_s",
                    (int, float),
                    30.0,
                    "longest wait for a payload owner or an object transfer before put/get report failure",
                ),
                ConfigKey(
                    "owner_idle_s",
                    (int, float),
                    60.0,
                    "a node's payload owner exits after holding nothing "
                    "for this many seconds (the next put starts a new one)",
                ),
                ConfigKey(
                    "staging_bytes",
                    int,
                    64 << 20,
                    "reused memory that put serializes frames into before handing them to the owner; "
                    "larger frames get fresh memory; 0 = always fresh",
                ),
            ),
            install_hint="pip install omni-ray",
            requires=("ray",),
            description="Ray object store: payloads owned by a per-node actor, fetched by any node of the cluster",
        )
    ]


@hookimpl
def omni_register_launchers() -> list[LauncherRegistration]:
    return [
        LauncherRegistration(
            "ray",
            "omni_ray.launcher:RayLauncher",
            "every stage replica a Ray actor, placed by node, resources, labels, GPUs or a placement group",
            placement_keys=("host", "resources", "labels", "num_gpus", "num_cpus", "strategy"),
        )
    ]
