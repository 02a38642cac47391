"""Core tests never autoload installed plugins: each test starts with an empty registry."""

from __future__ import annotations

import pytest

from omni_core.factory import OmniConnectorFactory
from omni_core.plugins import PluginRegistry, reset_plugin_registry


@pytest.fixture(autouse=True)
def plugin_registry() -> PluginRegistry:
    """An empty, isolated plugin registry; register what the test needs on it."""
    registry = reset_plugin_registry(autoload=False)
    saved = dict(OmniConnectorFactory._registry)
    assert registry is not None
    yield registry
    OmniConnectorFactory._registry.clear()
    OmniConnectorFactory._registry.update(saved)
    reset_plugin_registry(autoload=True)
