"""Plugin discovery: isolation of broken plugins, conflicts, API versions, allow/deny lists."""

from __future__ import annotations

import sys
import types
from importlib.metadata import EntryPoint

import pytest
from support import DICT, ENDPOINT, Plugin, registration

from omni_core import (
    ConfigError,
    ConnectorRegistration,
    CoordinatorRegistration,
    LauncherRegistration,
    OmniConnectorFactory,
    PluginError,
    hookimpl,
)
from omni_core import plugins as plugins_module
from omni_core.plugins import PluginRegistry


@pytest.fixture
def fake_entry_points(monkeypatch: pytest.MonkeyPatch):
    """Install modules as if they were plugins published under the ``omni`` group."""

    def install(**modules: types.ModuleType | str) -> list[EntryPoint]:
        eps = []
        for name, module in modules.items():
            if isinstance(module, types.ModuleType):
                monkeypatch.setitem(sys.modules, module.__name__, module)
                value = module.__name__
            else:
                value = module
            eps.append(EntryPoint(name=name, value=value, group="omni"))
        monkeypatch.setattr(plugins_module, "entry_points", lambda group: eps if group == "omni" else [])
        return eps

    return install


def _hooks_module(name: str, *regs: ConnectorRegistration) -> types.ModuleType:
    module = types.ModuleType(name)

    @hookimpl
    def omni_register_connectors() -> list[ConnectorRegistration]:
        return list(regs)

    module.omni_register_connectors = omni_register_connectors  # type: ignore[attr-defined]
    return module


def test_entry_points_are_loaded_and_listed(fake_entry_points) -> None:
    fake_entry_points(good=_hooks_module("fake_good_hooks", DICT))
    registry = PluginRegistry()
    registry.load_entry_points()
    assert registry.plugins["good"].status == "loaded"
    assert registry.connector_names() == ["DictConnector"]


def test_broken_plugin_is_recorded_and_others_still_work(fake_entry_points) -> None:
    fake_entry_points(good=_hooks_module("fake_good_hooks2", DICT), broken="no_such_module_for_omni_tests")
    registry = PluginRegistry()
    registry.load_entry_points()
    broken = registry.plugins["broken"]
    assert broken.status == "broken" and "no_such_module_for_omni_tests" in broken.errors[0]
    assert isinstance(broken.cause, ModuleNotFoundError)
    assert registry.connector_names() == ["DictConnector"]


def test_hook_that_raises_is_isolated(plugin_registry: PluginRegistry) -> None:
    class Exploding:
        @hookimpl
        def omni_register_connectors(self) -> list[ConnectorRegistration]:
            raise RuntimeError("kaboom")

    plugin_registry.register_plugin(Exploding(), name="exploding")
    plugin_registry.register_plugin(Plugin(DICT), name="fine")
    assert plugin_registry.plugins["exploding"].status == "broken"
    assert "kaboom" in plugin_registry.plugins["exploding"].errors[0]
    assert plugin_registry.connector_names() == ["DictConnector"]


def test_selecting_an_unknown_name_reports_broken_plugins_with_their_cause(plugin_registry: PluginRegistry) -> None:
    class Exploding:
        @hookimpl
        def omni_register_connectors(self) -> list[ConnectorRegistration]:
            raise RuntimeError("kaboom")

    plugin_registry.register_plugin(Exploding(), name="exploding")
    with pytest.raises(PluginError, match="exploding.*kaboom") as info:
        OmniConnectorFactory.create_connector(__import__("omni_core").ConnectorSpec("WhateverConnector"))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_same_name_from_two_plugins_is_an_error_naming_both(plugin_registry: PluginRegistry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="first", distribution="omni-first", version="1.0")
    plugin_registry.register_plugin(
        Plugin(registration("DictConnector", "support:InProcessDictConnector")),
        name="second",
        distribution="omni-second",
        version="2.0",
    )
    with pytest.raises(PluginError, match="omni-first.*omni-second"):
        OmniConnectorFactory.registration("DictConnector")
    assert "DictConnector" in plugin_registry.conflicts()


def test_alias_conflict_is_detected(plugin_registry: PluginRegistry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="first")
    plugin_registry.register_plugin(
        Plugin(registration("Other", "support:InProcessDictConnector", aliases=("DictConnector",))), name="second"
    )
    with pytest.raises(PluginError, match="more than one plugin"):
        OmniConnectorFactory.registration("DictConnector")


def test_incompatible_api_version_is_refused(plugin_registry: PluginRegistry) -> None:
    future = registration("FutureConnector", "support:InProcessDictConnector", api_version=99)
    record = plugin_registry.register_plugin(Plugin(future, DICT), name="future")
    assert record.status == "broken"
    assert "API 99" in record.errors[0] and "supports API version(s) 1" in record.errors[0]
    assert plugin_registry.connector_names() == ["DictConnector"]


def test_registration_validates_its_fields() -> None:
    with pytest.raises(ValueError, match="target"):
        ConnectorRegistration(name="X", target="not a target")
    with pytest.raises(ValueError, match="name"):
        ConnectorRegistration(name="", target="a:B")


def test_deny_list_disables_a_plugin(fake_entry_points, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_entry_points(good=_hooks_module("fake_good_hooks3", DICT), other=_hooks_module("fake_other", ENDPOINT))
    monkeypatch.setenv("OMNI_DISABLED_PLUGINS", "other")
    registry = PluginRegistry()
    registry.load_entry_points()
    assert registry.plugins["other"].status == "disabled"
    assert registry.connector_names() == ["DictConnector"]


def test_allow_list_loads_only_named_plugins_and_warns_on_unknown(fake_entry_points, monkeypatch) -> None:
    fake_entry_points(good=_hooks_module("fake_good_hooks4", DICT), other=_hooks_module("fake_other2", ENDPOINT))
    monkeypatch.setenv("OMNI_PLUGINS", "other, nonexistent-plugin")
    registry = PluginRegistry()
    with pytest.warns(UserWarning, match="nonexistent-plugin"):
        registry.load_entry_points()
    assert registry.connector_names() == ["EndpointConnector"]
    assert registry.plugins["good"].status == "disabled"


def test_discovery_happens_once_per_process(fake_entry_points, monkeypatch) -> None:
    calls = []
    eps = fake_entry_points(good=_hooks_module("fake_good_hooks5", DICT))
    monkeypatch.setattr(plugins_module, "entry_points", lambda group: calls.append(group) or eps)
    plugins_module.reset_plugin_registry(autoload=True)
    plugins_module.get_plugin_registry()
    plugins_module.get_plugin_registry()
    assert calls == ["omni"]


def test_unregister_removes_connectors(plugin_registry: PluginRegistry) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="temp")
    plugin_registry.unregister_plugin("temp")
    assert plugin_registry.connector_names() == []


def test_select_finds_one_registration_by_kind_and_name(plugin_registry: PluginRegistry) -> None:
    class Launchers:
        @hookimpl
        def omni_register_launchers(self):
            return [LauncherRegistration("local", "pkg.launch:Local"), LauncherRegistration("ray", "pkg.ray:Ray")]

    plugin_registry.register_plugin(Launchers(), name="launchers", distribution="omni-launchers", version="1.0")
    registration, record = plugin_registry.select("launcher", "ray")
    assert registration.target == "pkg.ray:Ray" and record.distribution == "omni-launchers"
    unknown = r"unknown launcher 'rey' \(did you mean 'ray'\?\); valid launchers: local, ray"
    with pytest.raises(ConfigError, match=unknown):
        plugin_registry.select("launcher", "rey")
    with pytest.raises(ConfigError, match=r"unknown coordinator 'omni'; valid coordinators: \(none registered\)"):
        plugin_registry.select("coordinator", "omni")


def test_select_refuses_a_name_two_plugins_provide(plugin_registry: PluginRegistry) -> None:
    class Local:
        @hookimpl
        def omni_register_launchers(self):
            return [LauncherRegistration("local", "pkg.launch:Local")]

    plugin_registry.register_plugin(Local(), name="one", distribution="omni-one")
    plugin_registry.register_plugin(Local(), name="two", distribution="omni-two")
    with pytest.raises(ConfigError, match="launcher 'local' is provided by more than one plugin: .*omni-one.*omni-two"):
        plugin_registry.select("launcher", "local")


def test_a_hook_returning_the_wrong_record_type_breaks_only_its_plugin(plugin_registry: PluginRegistry) -> None:
    class Wrong:
        @hookimpl
        def omni_register_launchers(self):
            return [ConnectorRegistration("NotALauncher", "pkg.mod:Class")]

    record = plugin_registry.register_plugin(Wrong(), name="wrong")
    assert record.status == "broken" and record.launchers == []
    assert "omni_register_launchers returned ConnectorRegistration, expected LauncherRegistration" in record.errors[0]


def test_coordinator_registration_checks_each_target() -> None:
    with pytest.raises(ValueError, match="coordinator 'omni' 'hub_client': target must look like 'package.module:"):
        CoordinatorRegistration("omni", "pkg.c:Runtime", "nope", "pkg.c:stage", "pkg.c:policy")
