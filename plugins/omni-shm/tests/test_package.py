"""Package surface: `from omni_shm import SharedMemoryConnector`, and importing omni_shm loads nothing heavy."""

from omni_core.testing import assert_package_surface


def test_connector_is_exported_lazily() -> None:
    assert_package_surface("omni_shm")
