"""Package surface: both connectors (and the old name) at top level, and importing omni_mooncake loads nothing heavy."""

import omni_mooncake
from omni_core.testing import assert_package_surface


def test_connectors_are_exported_lazily() -> None:
    assert_package_surface("omni_mooncake")
    assert omni_mooncake.MooncakeConnector is omni_mooncake.MooncakeStoreConnector
