"""Connector settings: ``extra`` validated against the declared keys, with their defaults filled in."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from omni_core import ConnectorRegistration


def resolve_settings(registration: ConnectorRegistration, config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Every declared key of ``registration`` with its configured (validated) or default value.

    Keys core injects (role, stage_id, from_stage, to_stage) are kept when present.
    Raises ConfigError naming an unknown key or a value of the wrong type.
    """
    given = registration.validate_extra(config or {}, f"connector {registration.name!r}")
    defaults = {key.name: key.default for key in registration.config_keys or ()}
    return {**defaults, **given}
