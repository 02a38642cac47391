"""The ``launcher``, ``hosts`` and ``placement`` sections: one placement concept for every launcher."""

from __future__ import annotations

import pytest
from support import DICT, Plugin

from omni_core import ConfigError, HostSpec, LauncherRegistration, StagePlacement, load_placement
from omni_core.cli.main import main

GRAPH = """
connectors: {d: {name: DictConnector}}
stages:
  - {stage_id: 0, output_connectors: {to_stage_1: d}}
  - {stage_id: 1, input_connectors: {from_stage_0: d}, output_connectors: {to_stage_2: d}}
  - {stage_id: 2, input_connectors: {from_stage_1: d}}
"""

PLACED = GRAPH + """
launcher: ray
hosts:
  h1: {address: 198.18.0.1, exec: [ip, netns, exec, omni-h1]}
  h2: {address: 198.18.0.2}
placement:
  strategy: STRICT_SPREAD
  stages:
    0: {host: h1}
    "1": {resources: {host_b: 1}, num_gpus: 1, num_cpus: 2}
    2: {labels: {zone: b}, host: h2}
"""


def test_a_full_placement_loads() -> None:
    placement = load_placement(config_dict=_yaml(PLACED))
    assert placement.launcher == "ray" and placement.strategy == "STRICT_SPREAD"
    h1 = HostSpec("h1", "198.18.0.1", ("ip", "netns", "exec", "omni-h1"))
    assert placement.hosts == {"h1": h1, "h2": HostSpec("h2", "198.18.0.2")}
    assert placement.for_stage(0) == StagePlacement(host=h1)
    assert placement.for_stage("1") == StagePlacement(resources={"host_b": 1.0}, num_gpus=1.0, num_cpus=2.0)
    assert placement.for_stage(2).keys() == ["host", "labels"]


def test_without_sections_every_stage_is_placed_nowhere_in_particular() -> None:
    placement = load_placement(config_dict=_yaml(GRAPH))
    assert placement.launcher == "local" and placement.hosts == {} and placement.strategy is None
    assert placement.for_stage(1) == StagePlacement() and placement.for_stage(1).keys() == []


def test_every_fault_is_named_at_once_with_the_closest_valid_name() -> None:
    bad = GRAPH + """
launcher: ""
hosts:
  h1: {address: not-an-ip, exc: [ssh, h1]}
  h2: {address: 198.18.0.2, exec: ssh h2}
  h3: [198.18.0.3]
placement:
  strategy: spread
  stagez: {}
  stages:
    0: {host: h22}
    1: {resorces: {gpu: 1}, num_gpus: -1}
    2: {resources: {host_b: many}, labels: {zone: 3}}
    7: {host: h2}
    x: {}
"""
    with pytest.raises(ConfigError) as info:
        load_placement(config_dict=_yaml(bad))
    errors = info.value.errors
    expected = [
        "launcher: must be a launcher name (str), got str ''",
        "hosts.h1: unknown key 'exc' (did you mean 'exec'?); valid keys: address, exec",
        "hosts.h1.address: must be an IP address, got str 'not-an-ip'",
        "hosts.h2.exec: must be a list of non-empty str (a command prefix), got str 'ssh h2'",
        "hosts.h3: expected a mapping with keys address, exec, got list ['198.18.0.3']",
        "placement.strategy: must be one of PACK, SPREAD, STRICT_PACK, STRICT_SPREAD, got str 'spread' "
        "(did you mean 'SPREAD'?)",
        "placement: unknown key 'stagez' (did you mean 'stages'?); valid keys: strategy, stages",
        "placement.stages.0.host: undefined host str 'h22' (did you mean 'h2'?); defined hosts: h2",
        "placement.stages.1: unknown key 'resorces' (did you mean 'resources'?); valid keys: host, resources, "
        "labels, num_gpus, num_cpus",
        "placement.stages.1.num_gpus: must be a non-negative number, got int -1",
        "placement.stages.2.resources.host_b: must map a non-empty name to a non-negative number, got str 'many'",
        "placement.stages.2.labels.zone: must map a non-empty name to a str, got int 3",
        "placement.stages.7: stage 7 is not defined; defined stages: 0, 1, 2",
        "placement.stages: str 'x' is not a stage id (a non-negative int)",
    ]
    assert sorted(errors) == sorted(expected)


def test_a_launcher_refuses_what_it_cannot_honour_naming_stage_and_key() -> None:
    placement = load_placement(config_dict=_yaml(PLACED))
    with pytest.raises(ConfigError) as info:
        placement.require("local", ("host",))
    assert info.value.errors == [
        "placement.stages.1.resources: the 'local' launcher cannot honour 'resources' (it honours: host); "
        "choose a launcher that does (launcher: NAME, or omni run --launcher NAME)",
        *(f"placement.stages.{where}: the 'local' launcher cannot honour {key!r} (it honours: host); "
          "choose a launcher that does (launcher: NAME, or omni run --launcher NAME)"
          for where, key in (("1.num_gpus", "num_gpus"), ("1.num_cpus", "num_cpus"), ("2.labels", "labels"))),
        "placement.strategy: the 'local' launcher cannot honour 'strategy' (it honours: host); "
        "choose a launcher that does (launcher: NAME, or omni run --launcher NAME)",
    ]
    placement.require("ray", ("host", "resources", "labels", "num_gpus", "num_cpus", "strategy"))


def test_launcher_registration_names_only_known_placement_keys() -> None:
    assert LauncherRegistration("local", "pkg.mod:Local", placement_keys=["host"]).placement_keys == ("host",)
    with pytest.raises(ValueError, match=r"launcher 'odd': unknown placement key\(s\) \['zone'\]"):
        LauncherRegistration("odd", "pkg.mod:Odd", placement_keys=("host", "zone"))
    with pytest.raises(ValueError, match="launcher 'odd': target must look like 'package.module:Class'"):
        LauncherRegistration("odd", "not a target")


def test_config_validate_shows_the_placement(plugin_registry, tmp_path, capsys) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    path = tmp_path / "placed.yaml"
    path.write_text(PLACED)
    assert main(["config", "validate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "launcher ray, strategy STRICT_SPREAD" in out
    assert "host h1 (198.18.0.1)" in out and "resources host_b=1; num_gpus 1; num_cpus 2" in out
    assert "host h2 (198.18.0.2); labels zone=b" in out


def test_config_validate_lists_placement_and_connector_faults_together(plugin_registry, tmp_path, capsys) -> None:
    plugin_registry.register_plugin(Plugin(DICT), name="dict")
    path = tmp_path / "bad.yaml"
    path.write_text(GRAPH.replace("name: DictConnector", "name: DictConnector, extra: {labl: x}")
                    + "placement: {stages: {1: {host: h9}}}\n")
    assert main(["config", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "placement.stages.1.host: undefined host str 'h9'" in err
    assert "unknown key 'labl'" in err


def _yaml(text: str) -> dict:
    import yaml

    return yaml.safe_load(text)
