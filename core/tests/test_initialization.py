"""Stage wiring: roles and ports resolved by capability, per-stage payloads, failure cleanup."""

from __future__ import annotations

import pytest
from support import DICT, ENDPOINT, FAILING, InProcessDictConnector, InProcessEndpointConnector, Plugin

from omni_core import (
    ConfigError,
    ConnectorSpec,
    OmniTransferConfig,
    PortCollisionError,
    build_stage_connectors,
    create_connectors_from_config,
    get_connectors_config_for_stage,
    get_stage_connector_config,
    resolve_connector_spec,
    resolve_omni_kv_config_for_stage,
)


@pytest.fixture(autouse=True)
def connectors(plugin_registry):
    plugin_registry.register_plugin(Plugin(DICT, ENDPOINT, FAILING), name="test-connectors")
    InProcessDictConnector.instances.clear()


def test_non_endpoint_connectors_get_the_raw_spec() -> None:
    created = create_connectors_from_config(
        {("0", "1"): ConnectorSpec("DictConnector", {"label": "a"})}, caller_stage_id=1
    )
    assert created[("0", "1")].config == {"label": "a"}


def test_receiver_gets_sender_endpoint_from_the_port_formula() -> None:
    created = create_connectors_from_config(
        {("0", "1"): ConnectorSpec("EndpointConnector", {"host": "10.0.0.5"})}, caller_stage_id=1
    )
    config = created[("0", "1")].config
    assert config["role"] == "receiver" and config["sender_host"] == "10.0.0.5"
    assert config["sender_zmq_port"] == 50051 and "zmq_port" not in config


def test_orchestrator_is_sender_on_orchestrator_ports() -> None:
    created = create_connectors_from_config(
        {("1", "2"): ConnectorSpec("EndpointConnector", {"zmq_port": 6000})},
        caller_stage_id="orchestrator",
        is_sender=True,
    )
    config = created[("1", "2")].config
    assert (config["role"], config["zmq_port"], config["from_stage"], config["to_stage"]) == ("sender", 6201, 1, 2)


def test_local_rank_and_replica_come_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("LOCAL_RANK", "2")
    monkeypatch.setenv("OMNI_REPLICA_ID", "1")
    created = create_connectors_from_config(
        {("0", "1"): ConnectorSpec("EndpointConnector", {"zmq_port": 6000})}, caller_stage_id=0
    )
    assert created[("0", "1")].config["zmq_port"] == 6000 + 1024 + 32


def test_garbage_replica_id_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setenv("OMNI_REPLICA_ID", "two")
    with pytest.raises(ConfigError, match="OMNI_REPLICA_ID='two'"):
        create_connectors_from_config({("0", "1"): ConnectorSpec("DictConnector")})


def test_two_sender_edges_on_one_port_collide() -> None:
    specs = {
        ("0", "1"): ConnectorSpec("EndpointConnector", {"zmq_port": 6000}),
        ("0", "2"): ConnectorSpec("EndpointConnector", {"zmq_port": 6000}),
    }
    with pytest.raises(PortCollisionError, match=r"edge 0->1 .* and edge 0->2") as info:
        create_connectors_from_config(specs, caller_stage_id=0)
    assert any("edge 0->2" in note for note in info.value.__notes__)


def test_endpoint_connector_without_a_role_is_rejected() -> None:
    with pytest.raises(ConfigError, match="edge 0->1.*needs a role"):
        create_connectors_from_config({("0", "1"): ConnectorSpec("EndpointConnector")}, caller_stage_id=5)


def test_a_failed_edge_closes_the_connectors_already_created() -> None:
    specs = {("0", "1"): ConnectorSpec("DictConnector"), ("1", "2"): ConnectorSpec("FailingConnector", {"raise": "os"})}
    with pytest.raises(OSError) as info:
        create_connectors_from_config(specs)
    assert any("edge 1->2" in note for note in info.value.__notes__)
    assert [c.closed for c in InProcessDictConnector.instances] == [True]


def test_resolve_keeps_an_explicit_sender_port_for_receivers() -> None:
    spec = resolve_connector_spec(
        ConnectorSpec("EndpointConnector", {"sender_zmq_port": 7001, "zmq_port": 1}), stage_id=1, role="receiver"
    )
    assert spec.extra == {"sender_zmq_port": 7001, "stage_id": 1, "role": "receiver"}


def test_resolve_leaves_auto_ports_to_the_connector() -> None:
    spec = resolve_connector_spec(ConnectorSpec("EndpointConnector", {"zmq_port": "auto"}), stage_id=0, role="sender")
    assert spec.extra["zmq_port"] == "auto"


def test_resolve_expands_env_ports_strictly(monkeypatch) -> None:
    monkeypatch.delenv("NO_SUCH_PORT_VAR", raising=False)
    with pytest.raises(ConfigError, match="NO_SUCH_PORT_VAR"):
        resolve_connector_spec(
            ConnectorSpec("EndpointConnector", {"zmq_port": "${NO_SUCH_PORT_VAR}"}), stage_id=0, role="sender"
        )


def _config() -> OmniTransferConfig:
    return OmniTransferConfig(
        connectors={
            ("0", "1"): ConnectorSpec("DictConnector", {"label": "a"}),
            ("1", "2"): ConnectorSpec("EndpointConnector", {"zmq_port": 6000}),
        }
    )


def test_stage_payload_has_incoming_receivers_and_outgoing_senders() -> None:
    payload = get_connectors_config_for_stage(_config(), 1)
    assert payload == {
        "from_stage_0": {
            "spec": {
                "name": "DictConnector",
                "extra": {"label": "a", "from_stage": 0, "to_stage": 1, "role": "receiver"},
            }
        },
        "to_stage_2": {
            "spec": {
                "name": "EndpointConnector",
                "extra": {"zmq_port": 6000, "from_stage": 1, "to_stage": 2, "role": "sender"},
            }
        },
    }
    assert get_stage_connector_config(None, 1) == {}


def test_build_stage_connectors_is_a_deprecated_shim() -> None:
    payload = get_stage_connector_config(_config(), 2)
    with pytest.warns(DeprecationWarning, match="get_stage_connector_config"):
        built = build_stage_connectors(2, payload)
    assert built is not None and isinstance(built[("1", "2")], InProcessEndpointConnector)
    assert built[("1", "2")].config["role"] == "receiver"
    with pytest.warns(DeprecationWarning):
        assert build_stage_connectors(0, get_stage_connector_config(_config(), 0)) is None


def test_kv_config_prefers_the_outgoing_edge() -> None:
    assert resolve_omni_kv_config_for_stage(_config(), 1) == (
        {"type": "EndpointConnector", "zmq_port": 6000, "role": "sender"},
        "1",
        "2",
    )
    assert resolve_omni_kv_config_for_stage(_config(), 2)[1:] == ("1", "2")
    assert resolve_omni_kv_config_for_stage(_config(), 9) == (None, None, None)
