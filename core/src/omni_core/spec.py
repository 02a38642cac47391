"""``ConnectorSpec`` and ``OmniTransferConfig``: which connector serves which edge."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class ConnectorSpec:
    """A connector name plus the backend-specific ``extra`` dict handed to its constructor."""

    name: str
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class OmniTransferConfig:
    """Connector specs keyed by ``(from_stage, to_stage)``, plus an optional default."""

    connectors: dict[tuple[str, str], ConnectorSpec] = field(default_factory=dict)
    default_connector: ConnectorSpec | None = None

    def get_connector_for_edge(self, from_stage: str, to_stage: str) -> ConnectorSpec | None:
        """Return the spec for the edge, else the default connector (or None)."""
        return self.connectors.get((str(from_stage), str(to_stage)), self.default_connector)

    def has_connector_for_edge(self, from_stage: str, to_stage: str) -> bool:
        """True if the edge has its own spec or a default connector exists."""
        return self.get_connector_for_edge(from_stage, to_stage) is not None
