"""Fuzzing the config loader with hostile YAML and JSON files: every file loads or raises ConfigError.

Hypothesis writes files from the loader's own vocabulary (sections, stage keys, anchors and aliases,
numbers of thousands of digits, tags); the regressions below are what the reliability campaign found:
ints past Python's 4300-digit limit escaped as bare ValueErrors, and a few hundred bytes of nested
aliases made the loader build (and print) billions of values.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni_core import hookimpl
from omni_core.config_loader import MAX_DOCUMENT_VALUES, ConfigErrors, load_omni_transfer_config
from omni_core.errors import ConfigError
from omni_core.plugins import PluginRegistry
from omni_core.registration import ConfigKey, ConnectorRegistration


class _Shm:
    @hookimpl
    def omni_register_connectors(self) -> list[ConnectorRegistration]:
        keys = (ConfigKey("namespace", str, "omni"), ConfigKey("readers", int, 1))
        return [ConnectorRegistration("SharedMemoryConnector", "fake_shm:SharedMemoryConnector", config_keys=keys)]


@pytest.fixture(autouse=True)
def connectors(plugin_registry: PluginRegistry) -> None:
    plugin_registry.register_plugin(_Shm(), name="fuzz-connectors")


_TOKENS = [
    "connectors:\n", "  shm: ", "stages:\n", "  - ", "stage_id: ", "runtime:\n", "stage_args:\n", "edges: ",
    "input_connectors: ", "output_connectors: ", "from_stage_0", "to_stage_1", "engine_input_source: ",
    "{name: SharedMemoryConnector, extra: {readers: 2}}", "name: ", "extra: ", "&a ", "*a", "&b [*a, *a, *a]",
    "!!python/object/apply:os.system ['true']", "!!binary aGk=", "${OMNI_FUZZ_UNSET}", "9" * 4301, "1e999", "-1",
    ".nan", "[", "]", "{", "}", ":", ",", "\n", "  ", "\t", '"', "'", "#", "\x00", "\ud800",
]
_texts = st.lists(st.sampled_from(_TOKENS) | st.text(max_size=3), max_size=40).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=_texts, suffix=st.sampled_from([".yaml", ".json"]))
def test_hostile_files_load_or_raise_config_error(tmp_path: Path, text: str, suffix: str) -> None:
    path = tmp_path / f"pipeline{suffix}"
    path.write_bytes(text.encode("utf-8", "surrogatepass"))
    try:
        load_omni_transfer_config(path)
    except ConfigError as exc:
        assert str(exc).strip(), "a rejection must say why"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_alias_bomb_is_refused(tmp_path: Path) -> None:
    """Nine levels of nine aliases: 9^9 values from 400 bytes.  It used to take a minute and gigabytes."""
    levels = ["l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, 9)]
    path = _write(tmp_path, "bomb.yaml", "\n".join(levels) + "\nconnectors: *l8\n")
    with pytest.raises(ConfigErrors, match=f"more than {MAX_DOCUMENT_VALUES} values once YAML aliases are expanded"):
        load_omni_transfer_config(path)


def test_an_alias_that_contains_itself_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigErrors, match="aliases are expanded"):
        load_omni_transfer_config(_write(tmp_path, "loop.yaml", "a: &a [*a]\nstages: *a\n"))


def test_aliases_within_the_limit_still_work(tmp_path: Path) -> None:
    text = (
        "connectors:\n  shm: &s {name: SharedMemoryConnector, extra: {readers: 2}}\n"
        "stages:\n  - {stage_id: 0, output_connectors: {to_stage_1: *s}}\n"
        "  - {stage_id: 1, input_connectors: {from_stage_0: *s}}\n"
    )
    config = load_omni_transfer_config(_write(tmp_path, "ok.yaml", text))
    assert config is not None and config.connectors[("0", "1")].extra["readers"] == 2


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_an_int_of_5000_digits_is_a_config_error_naming_the_file(tmp_path: Path, suffix: str) -> None:
    text = "stages:\n  - stage_id: " + "9" * 5000 + "\n"
    if suffix == ".json":
        text = '{"stages": [{"stage_id": ' + "9" * 5000 + "}]}"
    path = _write(tmp_path, "big" + suffix, text)
    with pytest.raises(ConfigErrors, match=f"{path}: cannot parse: ValueError: Exceeds the limit"):
        load_omni_transfer_config(path)


def test_a_stage_key_of_5000_digits_is_a_config_error(tmp_path: Path) -> None:
    doc = {"stages": [{"stage_id": 1, "input_connectors": {"from_stage_" + "9" * 5000: "shm"}}]}
    with pytest.raises(ConfigErrors, match="expected 'from_stage_<int>'"):
        load_omni_transfer_config(_write(tmp_path, "key.json", json.dumps(doc)))


def test_errors_with_long_numbers_still_sort_naturally(tmp_path: Path) -> None:
    doc = {"connectors": {"a" + "7" * 5000: {"name": "Nope"}, "b2": {"name": "Nope"}, "b10": {"name": "Nope"}}}
    with pytest.raises(ConfigErrors) as info:
        load_omni_transfer_config(_write(tmp_path, "sort.json", json.dumps(doc)))
    assert [e[:14] for e in info.value.errors] == ["connector 'a77", "connector 'b2'", "connector 'b10"]
