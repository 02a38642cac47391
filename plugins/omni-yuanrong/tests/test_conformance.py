"""The conformance kit, run exactly as a third-party plugin author would."""

from __future__ import annotations

from typing import Any

import pytest
from fake_ascend_engine import register_fake_connector
from fake_engine_child import FakeEngineChild

from omni_core import ConnectorSpec
from omni_core.testing import ConnectorConformanceTests
from omni_yuanrong.te_payload import RawPayloadBuffer


class TestYuanrongConnector(ConnectorConformanceTests):
    """YuanrongConnector against a real datasystem worker on loopback."""

    @pytest.fixture
    def connector_spec(self, kv_spec: ConnectorSpec) -> ConnectorSpec:
        return kv_spec


TE_EXTRA = {"host": "127.0.0.1", "memory_pool_device": "cpu", "memory_pool_size": 64 << 20, "zmq_port": "auto"}


class TestYuanrongTransferEngineConnectorOnFakeEngine(ConnectorConformanceTests):
    """The real connector (config checked against its real registration) driving FakeAscendTransferEngine.

    The real engine's data plane needs an Ascend NPU; tests/test_te_connector.py runs the real
    engine's initialization, registration and control plane.
    """

    registration_name = "YuanrongTransferEngineConnector"

    def child_connector(self, spec: ConnectorSpec) -> FakeEngineChild:
        return FakeEngineChild(spec)

    @pytest.fixture
    def connector_spec(self) -> ConnectorSpec:
        return ConnectorSpec(register_fake_connector(), {**TE_EXTRA, "role": "sender"})

    @pytest.fixture
    def consumer_spec(self, connector_spec: ConnectorSpec, producer: Any) -> ConnectorSpec:
        extra = {**TE_EXTRA, "role": "receiver", "sender_host": "127.0.0.1", "sender_zmq_port": producer.zmq_port}
        return ConnectorSpec(connector_spec.name, extra)

    def unwrap(self, obj: Any) -> Any:
        if isinstance(obj, RawPayloadBuffer):
            with obj:
                return obj.to_payload()
        return obj
