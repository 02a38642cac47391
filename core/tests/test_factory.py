"""OmniConnectorFactory: lazy creation by name, errors that keep their type and name the fix."""

from __future__ import annotations

import pytest
from support import DICT, FAILING, InProcessDictConnector, Plugin, registration

from omni_core import ConfigError, ConnectorSpec, OmniConnectorFactory


def test_create_by_name_passes_validated_extra(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    connector = OmniConnectorFactory.create_connector(ConnectorSpec("DictConnector", {"label": "x"}))
    assert isinstance(connector, InProcessDictConnector) and connector.config == {"label": "x"}


def test_unknown_name_lists_available(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    with pytest.raises(ValueError, match=r"unknown connector 'Nope'; available: DictConnector"):
        OmniConnectorFactory.create_connector(ConnectorSpec("Nope"))


def test_a_typo_in_a_connector_name_gets_the_closest_name(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    with pytest.raises(ValueError, match=r"unknown connector 'DictConectr' \(did you mean 'DictConnector'\?\)"):
        OmniConnectorFactory.create_connector(ConnectorSpec("DictConectr"))
    with pytest.raises(ValueError, match=r"unknown connector 'dictconnector' \(did you mean 'DictConnector'\?\)"):
        OmniConnectorFactory.create_connector(ConnectorSpec("dictconnector"))


def test_unknown_extra_key_lists_valid_keys(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    with pytest.raises(ConfigError, match=r"unknown key 'labl' \(did you mean 'label'\?\).*valid keys: label"):
        OmniConnectorFactory.create_connector(ConnectorSpec("DictConnector", {"labl": "x"}))


def test_missing_module_stays_module_not_found_and_names_the_extra(plugin_registry) -> None:
    reg = registration(
        "GhostConnector", "omni_ghost_backend.connector:Ghost", install_hint="pip install 'omni-ghost[cpu]'"
    )
    plugin_registry.register_plugin(Plugin(reg), name="ghost")
    with pytest.raises(ModuleNotFoundError, match=r"pip install 'omni-ghost\[cpu\]'") as info:
        OmniConnectorFactory.create_connector(ConnectorSpec("GhostConnector"))
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


@pytest.mark.parametrize("kind, exc_type", [("key", KeyError), ("os", OSError)])
def test_constructor_errors_keep_their_type(plugin_registry, kind: str, exc_type: type) -> None:
    plugin_registry.register_plugin(Plugin(FAILING), name="failing")
    with pytest.raises(exc_type) as info:
        OmniConnectorFactory.create_connector(ConnectorSpec("FailingConnector", {"raise": kind}))
    assert any("FailingConnector" in note for note in info.value.__notes__)


def test_constructor_import_error_names_the_fix(plugin_registry) -> None:
    reg = registration(
        "FailingConnector",
        "support:FailingConnector",
        install_hint="pip install omni-failing",
        config_keys=FAILING.config_keys,
    )
    plugin_registry.register_plugin(Plugin(reg), name="failing")
    with pytest.raises(ImportError, match="pip install omni-failing"):
        OmniConnectorFactory.create_connector(ConnectorSpec("FailingConnector", {"raise": "import"}))


def test_target_that_is_not_a_connector_is_rejected(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(registration("Bad", "support:registration")), name="bad")
    with pytest.raises(TypeError, match="not an OmniConnectorBase subclass"):
        OmniConnectorFactory.create_connector(ConnectorSpec("Bad"))


def test_register_and_unregister_in_process_constructors(plugin_registry) -> None:
    OmniConnectorFactory.register_connector("Local", InProcessDictConnector)
    assert "Local" in OmniConnectorFactory.list_registered_connectors()
    with pytest.raises(ValueError, match="already registered"):
        OmniConnectorFactory.register_connector("Local", InProcessDictConnector)
    assert isinstance(OmniConnectorFactory.create_connector(ConnectorSpec("Local", {"any": 1})), InProcessDictConnector)
    OmniConnectorFactory.unregister_connector("Local")
    assert "Local" not in OmniConnectorFactory.list_registered_connectors()


def test_in_process_name_may_not_shadow_a_plugin(plugin_registry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    with pytest.raises(ValueError, match="already provided by plugin 'dict'"):
        OmniConnectorFactory.register_connector("DictConnector", InProcessDictConnector)


def test_env_values_are_expanded_strictly_for_numbers(plugin_registry, monkeypatch) -> None:
    from support import ENDPOINT

    plugin_registry.register_plugin(Plugin(ENDPOINT), name="ep")
    monkeypatch.setenv("OMNI_TEST_PORT", "6000")
    connector = OmniConnectorFactory.create_connector(
        ConnectorSpec("EndpointConnector", {"zmq_port": "${OMNI_TEST_PORT}"})
    )
    assert connector.config["zmq_port"] == "6000" or connector.config["zmq_port"] == 6000
