"""omni_ray's top level: cheap to import, every public name resolves, the connector is exported."""

from __future__ import annotations

from omni_core import OmniConnectorFactory
from omni_core.testing import assert_package_surface


def test_package_surface() -> None:
    assert_package_surface("omni_ray")


def test_registration_declares_every_setting() -> None:
    from omni_ray.connector import RaySettings

    registration = OmniConnectorFactory.registration("RayConnector")
    assert registration is not None and registration.config_keys is not None
    declared = {key.name: key.default for key in registration.config_keys}
    assert declared == {name: getattr(RaySettings(), name) for name in RaySettings.__dataclass_fields__}
    assert registration.capabilities.cross_host and not registration.capabilities.raw_data
