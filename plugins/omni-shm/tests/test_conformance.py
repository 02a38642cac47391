"""omni-core's conformance kit, run against SharedMemoryConnector exactly as a third-party plugin would."""

from __future__ import annotations

import pytest
from conftest import new_namespace

from omni_core import ConnectorSpec
from omni_core.testing import ConnectorConformanceTests


class TestSharedMemoryConformance(ConnectorConformanceTests):
    @pytest.fixture
    def connector_spec(self) -> ConnectorSpec:
        return ConnectorSpec("SharedMemoryConnector", {"namespace": new_namespace()})


class TestSharedMemoryZeroCopyConformance(ConnectorConformanceTests):
    @pytest.fixture
    def connector_spec(self) -> ConnectorSpec:
        return ConnectorSpec("SharedMemoryConnector", {"namespace": new_namespace(), "zero_copy": True})
