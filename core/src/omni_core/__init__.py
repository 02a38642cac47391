"""Omni Connectors core: the connector contract, specs, factory, config loader and serializer.

Importing this package is cheap: it imports no torch, numpy, zmq or backend
module and scans no entry points.  Public names load on first access.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_names as _lazy_names
from .version import CONNECTOR_API_VERSION, __version__

_LAZY: dict[str, str] = {
    "OmniConnectorBase": "base",
    "validate_key": "base",
    "resolve_payload": "base",
    "Capabilities": "capabilities",
    "Delivery": "capabilities",
    "ConnectorSpec": "spec",
    "OmniTransferConfig": "spec",
    "ConnectorRegistration": "registration",
    "ConfigKey": "registration",
    "PolicyRegistration": "registration",
    "CliCommand": "registration",
    "ServiceRegistration": "registration",
    "LauncherRegistration": "registration",
    "CoordinatorRegistration": "registration",
    "Launcher": "launch",
    "ReplicaHandle": "launch",
    "Placement": "placement",
    "StagePlacement": "placement",
    "HostSpec": "placement",
    "load_placement": "placement",
    "JsonLinesChannel": "remote",
    "JsonLinesChild": "remote",
    "ChildConnector": "remote",
    "ChildGone": "remote",
    "render_table": "cli.table",
    "print_table": "cli.table",
    "print_error": "cli.terminal",
    "ProgressReporter": "cli.terminal",
    "import_target": "registration",
    "hookimpl": "hookspecs",
    "get_plugin_registry": "plugins",
    "OmniConnectorFactory": "factory",
    "load_omni_transfer_config": "config_loader",
    "load_config_document": "config_loader",
    "create_connectors_from_config": "initialization",
    "initialize_connectors_from_config": "initialization",
    "initialize_orchestrator_connectors": "initialization",
    "get_connectors_config_for_stage": "initialization",
    "get_stage_connector_config": "initialization",
    "build_stage_connectors": "initialization",
    "resolve_connector_spec": "initialization",
    "get_connector_local_rank": "initialization",
    "get_replica_id": "initialization",
    "resolve_omni_kv_config_for_stage": "initialization",
    "stage_payload_to_specs": "initialization",
    "compute_connector_zmq_port": "ports",
    "KV_RANK_PORT_STRIDE": "ports",
    "KV_REPLICA_PORT_STRIDE": "ports",
    "KV_TRANSFER_PORT_OFFSET": "ports",
    "REQUEST_FORWARDING_PORT_OFFSET": "ports",
    "ORCHESTRATOR_PORT_OFFSET": "ports",
    "OmniSerializer": "serialization",
    "OmniSerde": "serialization",
    "SerializedPayload": "serialization",
    "DecodeLimits": "serialization",
    "checksum": "digest",
    "serialize_obj": "serialization",
    "deserialize_obj": "serialization",
    "BufferAllocator": "memory_pool",
    "ManagedBuffer": "memory_pool",
    "private_copy": "host_copies",
    "start_metrics_server": "metrics",
    "metrics_snapshot": "metrics:snapshot",
    "merge_metrics": "metrics:merge_remote",
    "record_calls": "metrics",
    "KVPipeBase": "kv_pipe",
    "ConnectorKVPipe": "kv_pipe",
    "expand_env_value": "envexpand",
    "expand_env_int": "envexpand",
    "AUTO_HOST_VALUES": "envexpand",
    "resolve_host": "hosts",
    "did_you_mean": "suggest",
    "configure_logging": "log_config",
    "lazy_names": "lazy",
    "ConfigError": "errors",
    "EnvVarExpansionError": "errors",
    "PortCollisionError": "errors",
    "PluginError": "errors",
    "SerializationError": "errors",
}

__all__ = sorted([*_LAZY, "CONNECTOR_API_VERSION", "__version__"])


__getattr__, __dir__ = _lazy_names(__name__, _LAZY)


if TYPE_CHECKING:
    from .base import OmniConnectorBase, resolve_payload, validate_key
    from .capabilities import Capabilities, Delivery
    from .cli.table import print_table, render_table
    from .cli.terminal import ProgressReporter, print_error
    from .config_loader import load_config_document, load_omni_transfer_config
    from .digest import checksum
    from .envexpand import AUTO_HOST_VALUES, expand_env_int, expand_env_value
    from .errors import ConfigError, EnvVarExpansionError, PluginError, PortCollisionError, SerializationError
    from .factory import OmniConnectorFactory
    from .hookspecs import hookimpl
    from .host_copies import private_copy
    from .hosts import resolve_host
    from .initialization import (
        build_stage_connectors,
        create_connectors_from_config,
        get_connector_local_rank,
        get_connectors_config_for_stage,
        get_replica_id,
        get_stage_connector_config,
        initialize_connectors_from_config,
        initialize_orchestrator_connectors,
        resolve_connector_spec,
        resolve_omni_kv_config_for_stage,
        stage_payload_to_specs,
    )
    from .kv_pipe import ConnectorKVPipe, KVPipeBase
    from .launch import Launcher, ReplicaHandle
    from .lazy import lazy_names
    from .log_config import configure_logging
    from .memory_pool import BufferAllocator, ManagedBuffer
    from .metrics import merge_remote as merge_metrics
    from .metrics import record_calls, start_metrics_server
    from .metrics import snapshot as metrics_snapshot
    from .placement import HostSpec, Placement, StagePlacement, load_placement
    from .plugins import get_plugin_registry
    from .ports import (
        KV_RANK_PORT_STRIDE,
        KV_REPLICA_PORT_STRIDE,
        KV_TRANSFER_PORT_OFFSET,
        ORCHESTRATOR_PORT_OFFSET,
        REQUEST_FORWARDING_PORT_OFFSET,
        compute_connector_zmq_port,
    )
    from .registration import (
        CliCommand,
        ConfigKey,
        ConnectorRegistration,
        CoordinatorRegistration,
        LauncherRegistration,
        PolicyRegistration,
        ServiceRegistration,
        import_target,
    )
    from .remote import ChildConnector, ChildGone, JsonLinesChannel, JsonLinesChild
    from .serialization import (
        DecodeLimits,
        OmniSerde,
        OmniSerializer,
        SerializedPayload,
        deserialize_obj,
        serialize_obj,
    )
    from .spec import ConnectorSpec, OmniTransferConfig
    from .suggest import did_you_mean
