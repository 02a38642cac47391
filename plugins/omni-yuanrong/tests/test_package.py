"""Package surface: both connectors at top level, and importing omni_yuanrong loads nothing heavy."""

from omni_core.testing import assert_package_surface


def test_connectors_are_exported_lazily() -> None:
    assert_package_surface("omni_yuanrong")
