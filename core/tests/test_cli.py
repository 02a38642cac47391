"""The ``omni`` CLI: exit codes 0 ok / 1 problems / 2 usage, and what each command prints."""

from __future__ import annotations

import json

import pytest
from support import DICT, Plugin

from omni_core import (
    CliCommand,
    ConfigError,
    ConnectorRegistration,
    CoordinatorRegistration,
    LauncherRegistration,
    hookimpl,
)
from omni_core.cli.main import main

GOOD = """
connectors:
  d: {name: DictConnector, extra: {label: x}}
stages:
  - {stage_id: 0, output_connectors: {to_stage_1: d}}
  - {stage_id: 1, input_connectors: {from_stage_0: d}}
"""

BAD = """
connectors:
  d: {name: DictConnector, extra: {labl: x}}
stages:
  - {stage_id: 0, output_connectors: {to_stage_1: nope}}
  - {stage_id: 1, input_connectors: {from_stage_x: d}}
"""


@pytest.fixture
def with_dict(plugin_registry):
    plugin_registry.register_plugin(Plugin(DICT), name="dict", distribution="omni-dict", version="1.2")
    return plugin_registry


def test_config_validate_prints_the_edge_table(with_dict, tmp_path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "0 -> 1" in out and "DictConnector" in out and "label='x'" in out


def test_config_validate_lists_every_error(with_dict, tmp_path, capsys) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(BAD)
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "labl" in err and "nope" in err and "from_stage_x" in err


def test_config_validate_missing_file(with_dict, tmp_path, capsys) -> None:
    assert main(["config", "validate", str(tmp_path / "missing.yaml")]) == 1
    assert "missing.yaml" in capsys.readouterr().err


def test_plugins_lists_connectors_and_status(with_dict, capsys) -> None:
    assert main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "omni-dict" in out and "1.2" in out and "DictConnector" in out and "loaded" in out


def test_plugins_reports_missing_dependency_with_install_command(plugin_registry, capsys) -> None:
    reg = ConnectorRegistration("NeedsGhost", "support:InProcessDictConnector", requires=("omni_ghost_module_xyz",),
                                install_hint="pip install 'omni-ghost[cpu]'")
    plugin_registry.register_plugin(Plugin(reg), name="ghost")
    assert main(["plugins"]) == 1
    out = capsys.readouterr().out
    assert "missing dependency omni_ghost_module_xyz: pip install 'omni-ghost[cpu]'" in out


def test_plugins_reports_broken_plugins(plugin_registry, capsys) -> None:
    class Exploding:
        @hookimpl
        def omni_register_connectors(self):
            raise RuntimeError("kaboom")

    plugin_registry.register_plugin(Exploding(), name="exploding")
    assert main(["plugins"]) == 1
    assert "broken: hook omni_register_connectors raised RuntimeError: kaboom" in capsys.readouterr().out


def test_usage_errors_exit_2(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
    assert main([]) == 2


def test_plugin_commands_are_dispatched(plugin_registry, capsys) -> None:
    class WithCommand:
        @hookimpl
        def omni_register_cli_commands(self):
            return [CliCommand("echo", "echo the arguments", "test_cli:echo_command")]

    plugin_registry.register_plugin(WithCommand(), name="echoer")
    assert main(["echo", "a", "b"]) == 3
    assert capsys.readouterr().out.strip() == "echo a b"


def echo_command(argv: list[str]) -> int:
    print("echo", *argv)
    return 3


def test_doctor_reports_and_exits_with_problem_count(with_dict, capsys) -> None:
    code = main(["doctor"])
    out = capsys.readouterr().out
    assert "python" in out and "/dev/shm" in out and "libnuma" in out
    assert code == (0 if "all checks passed" in out else 1)


def test_a_missing_plugin_command_names_what_installs_it(plugin_registry, capsys) -> None:
    assert main(["run", "pipeline.yaml"]) == 2
    assert "omni run: no installed plugin provides this command; install it with: pip install " \
           "'omni-core[pipeline]'" in capsys.readouterr().err


def test_plugins_lists_launchers_and_coordinators(plugin_registry, capsys) -> None:
    class Runner:
        @hookimpl
        def omni_register_launchers(self):
            return [LauncherRegistration("local", "pkg.launch:Local", placement_keys=("host",))]

        @hookimpl
        def omni_register_coordinators(self):
            return [CoordinatorRegistration("omni", "pkg.c:Runtime", "pkg.c:Hub", "pkg.c:stage", "pkg.c:policy")]

    plugin_registry.register_plugin(Runner(), name="runner", distribution="omni-runner", version="0.3")
    assert main(["plugins"]) == 0
    assert "launcher local, coordinator omni" in capsys.readouterr().out


def test_plugins_json_is_one_document(with_dict, plugin_registry, capsys) -> None:
    reg = ConnectorRegistration("NeedsGhost", "support:InProcessDictConnector", requires=("omni_ghost_module_xyz",),
                                install_hint="pip install 'omni-ghost[cpu]'")
    plugin_registry.register_plugin(Plugin(reg), name="ghost", distribution="omni-ghost", version="0.9")
    assert main(["plugins", "--json"]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {"plugins", "conflicts", "problems"} and doc["problems"] == 1
    by_name = {p["name"]: p for p in doc["plugins"]}
    dict_plugin = by_name["dict"]
    assert [dict_plugin[k] for k in ("distribution", "version", "status")] == ["omni-dict", "1.2", "loaded"]
    assert dict_plugin["connectors"][0]["name"] == "DictConnector"
    assert dict_plugin["connectors"][0]["capabilities"]["delivery"] == "consume-once"
    ghost = by_name["ghost"]["connectors"][0]
    assert ghost["status"] == "missing dependency" and ghost["missing"] == ["omni_ghost_module_xyz"]
    assert ghost["install_hint"] == "pip install 'omni-ghost[cpu]'"


def test_doctor_json_lists_every_check(with_dict, capsys) -> None:
    code = main(["doctor", "--json"])
    doc = json.loads(capsys.readouterr().out)
    checks = {c["check"]: c for c in doc["checks"]}
    assert {"python", "/dev/shm", "libnuma", "torch"} <= set(checks)
    assert all(set(c) == {"check", "ok", "problem", "result", "note"} for c in doc["checks"])
    assert checks["python"]["ok"] and checks["python"]["result"].count(".") == 2
    assert doc["problems"] == sum(c["problem"] for c in doc["checks"]) and code == (1 if doc["problems"] else 0)


def test_a_plugin_command_raising_config_error_prints_one_line(plugin_registry, capsys) -> None:
    class WithCommand:
        @hookimpl
        def omni_register_cli_commands(self):
            return [CliCommand("bad", "always a bad config", "test_cli:bad_config_command")]

    plugin_registry.register_plugin(WithCommand(), name="bad")
    assert main(["bad"]) == 1
    err = capsys.readouterr().err
    assert err == "omni bad: stages[0]: unknown key 'stagez' [x]\n"  # literal brackets; no traceback


def bad_config_command(argv: list[str]) -> int:
    raise ConfigError("stages[0]: unknown key 'stagez' [x]")
