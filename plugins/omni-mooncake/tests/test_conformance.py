"""The omni_core conformance kit, run against the real backends (one class per connector)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from mooncake_payloads import unwrap
from mooncake_procs import MooncakeMaster, store_extra, te_extra

from omni_core import ConnectorSpec, OmniConnectorBase, OmniConnectorFactory
from omni_core.testing import ConnectorConformanceTests


@pytest.fixture(scope="module")
def shared_store(master: MooncakeMaster) -> Iterator[OmniConnectorBase]:
    """One store client for the whole class: closing one takes about 2 s."""
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("MooncakeStoreConnector", store_extra(master)))
    yield connector
    connector.close()


class TestMooncakeStoreConformance(ConnectorConformanceTests):
    @pytest.fixture
    def connector_spec(self, master: MooncakeMaster) -> ConnectorSpec:
        return ConnectorSpec("MooncakeStoreConnector", store_extra(master))

    @pytest.fixture
    def producer(self, shared_store: OmniConnectorBase) -> OmniConnectorBase:
        return shared_store


class TestMooncakeTransferEngineConformance(ConnectorConformanceTests):
    @pytest.fixture
    def producer_spec(self, mooncake_available: None) -> ConnectorSpec:
        return ConnectorSpec("MooncakeTransferEngineConnector", te_extra("sender"))

    @pytest.fixture
    def producer(self, producer_spec: ConnectorSpec) -> Iterator[OmniConnectorBase]:
        # the consumer's default sender is this producer's side-channel port, known once it is bound
        connector = OmniConnectorFactory.create_connector(producer_spec)
        yield connector
        connector.close()

    @pytest.fixture
    def consumer_spec(self, producer: Any) -> ConnectorSpec:
        info = producer.get_connection_info()
        return ConnectorSpec(
            "MooncakeTransferEngineConnector",
            te_extra("receiver", sender_host=info["host"], sender_zmq_port=info["zmq_port"]),
        )

    def unwrap(self, obj: Any) -> Any:
        return unwrap(obj)
