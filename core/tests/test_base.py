"""OmniConnectorBase: the contract every connector inherits."""

from __future__ import annotations

import time

import pytest
from support import InProcessDictConnector, InProcessEndpointConnector

from omni_core import Capabilities, OmniConnectorBase, validate_key


def test_abstract_methods_are_the_seed_contract() -> None:
    assert OmniConnectorBase.__abstractmethods__ == {"put", "get", "cleanup", "health", "close"}
    with pytest.raises(TypeError):
        OmniConnectorBase()  # type: ignore[abstract]


def test_close_is_made_idempotent_for_every_subclass() -> None:
    connector = InProcessDictConnector({})
    connector.close()
    connector.close()
    assert connector.close_calls == 1 and connector.closed


def test_context_manager_closes() -> None:
    with InProcessDictConnector({}) as connector:
        assert not connector.closed
    assert connector.closed and connector.close_calls == 1


def test_capabilities_and_supports_raw_data_agree() -> None:
    assert InProcessDictConnector.supports_raw_data is False
    assert InProcessEndpointConnector.supports_raw_data is True

    class Legacy(InProcessDictConnector):
        supports_raw_data = True

    assert Legacy.capabilities == Capabilities(raw_data=True)


@pytest.mark.parametrize("bad", ["", "a/b", "x\x00y", "k" * 201, 7])
def test_validate_key_names_the_key(bad: object) -> None:
    with pytest.raises(ValueError, match="key"):
        validate_key(bad)


def test_get_with_deadline_waits_for_a_late_put() -> None:
    connector = InProcessDictConnector({})
    assert connector.get_with_deadline("0", "1", "late", deadline=time.monotonic() + 0.05) is None
    connector.put("0", "1", "late", {"v": 1})
    assert connector.get_with_deadline("0", "1", "late", deadline=time.monotonic() + 1) == (
        {"v": 1},
        len(connector.serialize_obj({"v": 1})),
    )


def test_make_key_matches_upstream_format() -> None:
    assert OmniConnectorBase._make_key("req1", "0", "1") == "req1@0_1"
    assert OmniConnectorBase._make_key("req1", "0", "1", ":") == "req1:0_1"
