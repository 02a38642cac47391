"""Test doubles for core tests: in-process connectors and a plugin factory."""

from __future__ import annotations

from typing import Any

from omni_core import Capabilities, ConfigKey, ConnectorRegistration, OmniConnectorBase, hookimpl, validate_key


class InProcessDictConnector(OmniConnectorBase):
    """Consume-once dict in one process; records the extra it was built with."""

    instances: list[InProcessDictConnector] = []

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.store: dict[str, bytes] = {}
        self.close_calls = 0
        InProcessDictConnector.instances.append(self)

    def put(self, from_stage: str, to_stage: str, put_key: str, data: Any) -> tuple[bool, int, dict[str, Any] | None]:
        blob = self.serialize_obj(data)
        self.store[validate_key(put_key)] = blob
        return True, len(blob), None

    def get(
        self, from_stage: str, to_stage: str, get_key: str, metadata: dict[str, Any] | None = None
    ) -> tuple[Any, int] | None:
        blob = self.store.pop(get_key, None)
        return None if blob is None else (self.deserialize_obj(blob), len(blob))

    def cleanup(self, request_id: str) -> None:
        self.store.pop(request_id, None)

    def health(self) -> dict[str, Any]:
        return {"status": "unhealthy" if self.closed else "healthy", "puts": 0, "gets": 0, "errors": 0}

    def close(self) -> None:
        self.close_calls += 1


class InProcessEndpointConnector(InProcessDictConnector):
    """Like InProcessDictConnector but declares that it needs roles and ports."""

    capabilities = Capabilities(raw_data=True, needs_endpoint=True, cross_host=True)


class FailingConnector(InProcessDictConnector):
    """Its constructor raises the exception type named in ``extra['raise']``."""

    def __init__(self, config: dict[str, Any]) -> None:
        raise {"key": KeyError, "os": OSError, "import": ImportError}[config["raise"]]("boom from constructor")


ENDPOINT_KEYS = (
    ConfigKey("host", (str, type(None)), "auto", "host"),
    ConfigKey("zmq_port", (int, str), 50051, "base port"),
    ConfigKey("sender_host", (str, type(None)), None, "sender host"),
    ConfigKey("sender_zmq_port", (int, type(None)), None, "sender port"),
)


def registration(name: str, target: str, **kwargs: Any) -> ConnectorRegistration:
    return ConnectorRegistration(name=name, target=target, **kwargs)


class Plugin:
    """A hook-implementing object returning the given registrations."""

    def __init__(self, *registrations: ConnectorRegistration) -> None:
        self.registrations = list(registrations)

    @hookimpl
    def omni_register_connectors(self) -> list[ConnectorRegistration]:
        return self.registrations


DICT = registration(
    "DictConnector", "support:InProcessDictConnector", config_keys=(ConfigKey("label", str, "", "a label"),)
)
ENDPOINT = registration(
    "EndpointConnector",
    "support:InProcessEndpointConnector",
    capabilities=InProcessEndpointConnector.capabilities,
    config_keys=ENDPOINT_KEYS,
)
FAILING = registration(
    "FailingConnector", "support:FailingConnector", config_keys=(ConfigKey("raise", str, "key", "exception to raise"),)
)
