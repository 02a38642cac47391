"""Tests of ``omni_core.config_loader``: schemas, auto-SHM, extra validation and error reporting."""

from __future__ import annotations

import contextlib
import copy
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni_core import hookimpl
from omni_core.config_loader import ConfigErrors, load_config_document, load_omni_transfer_config
from omni_core.errors import ConfigError
from omni_core.factory import OmniConnectorFactory
from omni_core.plugins import PluginRegistry
from omni_core.registration import ConfigKey, ConnectorRegistration
from omni_core.spec import ConnectorSpec

CONFIGS = Path(__file__).parent / "configs"
TE_EXTRA = {"host": "127.0.0.1", "zmq_port": 50051}
SHM = "SharedMemoryConnector"


class _TestConnectors:
    """A plugin providing an SHM-like and a transfer-engine-like connector (never imported)."""

    @hookimpl
    def omni_register_connectors(self) -> list[ConnectorRegistration]:
        return [
            ConnectorRegistration(
                SHM, "fake_shm:SharedMemoryConnector",
                config_keys=(ConfigKey("namespace", str, ""), ConfigKey("readers", int, 1)),
            ),
            ConnectorRegistration(
                "TestTEConnector", "fake_te:TestTEConnector",
                config_keys=(ConfigKey("host", str), ConfigKey("zmq_port", int), ConfigKey("role", (str, type(None)))),
            ),
        ]


@pytest.fixture(autouse=True)
def connectors(plugin_registry: PluginRegistry) -> None:
    plugin_registry.register_plugin(_TestConnectors(), name="test-connectors")


def _doc(*stages: dict, connectors: dict | None = None, edges: list | None = None) -> dict:
    """A new-schema document; the global table holds ``te`` unless ``connectors`` is given."""
    doc: dict[str, Any] = {
        "connectors": {"te": _te(TE_EXTRA)} if connectors is None else connectors,
        "stages": list(stages),
    }
    if edges is not None:
        doc["edges"] = edges
    return doc


def _te(extra: dict) -> dict:
    """An inline ``TestTEConnector`` entry."""
    return {"name": "TestTEConnector", "extra": dict(extra)}


def _pair(out_value: Any = "te", in_value: Any = "te") -> dict:
    """Stages 0 -> 1, each side declaring the edge."""
    return _doc(
        {"stage_id": 0, "output_connectors": {"to_stage_1": out_value}},
        {"stage_id": 1, "input_connectors": {"from_stage_0": in_value}},
    )


def _sender_only(value: Any) -> dict:
    """Stages 0 -> 1, only stage 0 declaring the edge."""
    return _doc({"stage_id": 0, "output_connectors": {"to_stage_1": value}}, {"stage_id": 1})


def _errors(doc: Any) -> ConfigErrors:
    with pytest.raises(ConfigErrors) as info:
        load_omni_transfer_config(config_dict=doc)
    return info.value


EXPECTED = {
    ("0", "1"): ConnectorSpec("TestTEConnector", TE_EXTRA),
    ("1", "2"): ConnectorSpec(SHM, {"namespace": "omni", "readers": 2}),
    ("2", "3"): ConnectorSpec(SHM, {}),
    ("0", "3"): ConnectorSpec(SHM, {}),
}


# -- positive results ---------------------------------------------------------------------------------


def test_no_input_returns_none() -> None:
    assert load_omni_transfer_config() is None
    assert load_config_document() is None


@pytest.mark.parametrize("name", ["pipeline.yaml", "pipeline.json", "pipeline_legacy.yml"])
def test_sample_files_load(name: str) -> None:
    config = load_omni_transfer_config(CONFIGS / name)
    assert config.connectors == EXPECTED
    assert config.default_connector is None


def test_json_yaml_parity_and_schema_equivalence() -> None:
    names = ("pipeline.yaml", "pipeline.json", "pipeline_legacy.yml")
    configs = [load_omni_transfer_config(str(CONFIGS / n)) for n in names]
    assert configs[0] == configs[1] == configs[2]


def test_legacy_dict_equals_new_dict() -> None:
    new = _pair()
    legacy = {"runtime": {"connectors": new["connectors"]}, "stage_args": new["stages"]}
    assert load_omni_transfer_config(config_dict=new) == load_omni_transfer_config(config_dict=legacy)


def test_refs_and_inline_specs() -> None:
    inline = {"name": "TestTEConnector", "extra": dict(TE_EXTRA)}
    doc = _doc(
        {"stage_id": 0, "output_connectors": {"to_stage_1": "te", "to_stage_2": inline}},
        {"stage_id": 1, "input_connectors": {"from_stage_0": inline}},
        {"stage_id": 2},
    )
    config = load_omni_transfer_config(config_dict=doc)
    assert config.connectors == {("0", "1"): ConnectorSpec("TestTEConnector", TE_EXTRA),
                                 ("0", "2"): ConnectorSpec("TestTEConnector", TE_EXTRA)}
    assert config.get_connector_for_edge(0, 1).name == "TestTEConnector"


def test_ref_specs_do_not_share_extra() -> None:
    doc = _doc({"stage_id": 0, "output_connectors": {"to_stage_1": "te", "to_stage_2": "te"}},
               {"stage_id": 1}, {"stage_id": 2})
    config = load_omni_transfer_config(config_dict=doc)
    config.connectors[("0", "1")].extra["role"] = "sender"
    assert "role" not in config.connectors[("0", "2")].extra


def test_specs_are_role_neutral() -> None:
    config = load_omni_transfer_config(config_dict=_pair())
    assert config.connectors == {("0", "1"): ConnectorSpec("TestTEConnector", TE_EXTRA)}


def test_auto_shm_for_edges() -> None:
    doc = _doc({"stage_id": 0}, {"stage_id": 1}, edges=[{"from": 0, "to": 1}])
    assert load_omni_transfer_config(config_dict=doc).connectors == {("0", "1"): ConnectorSpec(SHM, {})}


def test_auto_shm_for_engine_input_source() -> None:
    doc = _doc({"stage_id": 0}, {"stage_id": 1}, {"stage_id": 2, "engine_input_source": [0, 1]})
    config = load_omni_transfer_config(config_dict=doc, default_shm_threshold=1)
    assert config.connectors == {("0", "2"): ConnectorSpec(SHM, {}), ("1", "2"): ConnectorSpec(SHM, {})}


def test_declared_connector_is_not_replaced_by_auto_shm() -> None:
    doc = _pair()
    doc["stages"][1]["engine_input_source"] = [0]
    doc["edges"] = [{"from": 0, "to": 1}]
    assert load_omni_transfer_config(config_dict=doc).connectors[("0", "1")].name == "TestTEConnector"


def test_identical_duplicate_declarations_are_fine() -> None:
    inline = {"name": "TestTEConnector", "extra": {"zmq_port": 50051, "host": "127.0.0.1"}}
    config = load_omni_transfer_config(config_dict=_pair("te", inline))
    assert config.connectors[("0", "1")] == ConnectorSpec("TestTEConnector", TE_EXTRA)


def test_env_var_expanded_to_int(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "6001")
    doc = _sender_only({"name": "TestTEConnector", "extra": {"zmq_port": "${PORT}"}})
    assert load_omni_transfer_config(config_dict=doc).connectors[("0", "1")].extra == {"zmq_port": 6001}


def test_in_process_connector_is_not_validated() -> None:
    OmniConnectorFactory.register_connector("InProc", lambda extra: None)
    doc = _sender_only({"name": "InProc", "extra": {"anything": [1]}})
    assert load_omni_transfer_config(config_dict=doc).connectors[("0", "1")].extra == {"anything": [1]}


def test_input_dict_is_not_mutated() -> None:
    doc = _pair()
    before = copy.deepcopy(doc)
    load_omni_transfer_config(config_dict=doc)
    assert doc == before


def test_document_keeps_other_sections_and_normalises() -> None:
    doc = load_config_document(CONFIGS / "pipeline.yaml")
    assert doc["workload"] == {"requests": 8}
    assert doc["stage_args"] == doc["stages"]
    assert set(doc["runtime"]) == {"connectors", "edges"}


# -- file faults --------------------------------------------------------------------------------------


def test_missing_file_names_path(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_omni_transfer_config(tmp_path / "nope.yaml")


def test_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.toml"
    path.write_text("x = 1")
    with pytest.raises(ConfigError, match=r"unsupported suffix '\.toml'.*\.json, \.yaml, \.yml"):
        load_omni_transfer_config(path)


@pytest.mark.parametrize(("name", "text"), [("a.yaml", ""), ("b.yml", "# only a comment\n\n"), ("c.json", "  \n")])
def test_empty_file(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"config file .*{name} is empty"):
        load_omni_transfer_config(path)


@pytest.mark.parametrize(("name", "text"), [("a.yaml", "- 1\n- 2\n"), ("b.json", "[1, 2]"), ("c.yaml", "just text")])
def test_top_level_not_a_mapping(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_omni_transfer_config(path)


@pytest.mark.parametrize(("name", "text", "line"), [
    ("bad.json", '{\n  "stages": [\n    {"stage_id": 0,}\n  ]\n}', 3),
    ("bad.yaml", "stages:\n  - stage_id: 0\n    input_connectors: {from_stage_0: [\n", 4),
])
def test_malformed_file_names_file_and_line(tmp_path: Path, name: str, text: str, line: int) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=rf"{name}: invalid (JSON|YAML) at line {line}"):
        load_omni_transfer_config(path)


def test_file_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("stages: [{stage_id: x}]")
    with pytest.raises(ConfigErrors, match=r"stages\[0\]: 'stage_id'.*\(.*p\.yaml\)") as info:
        load_omni_transfer_config(path)
    assert info.value.source == str(path)


# -- structural faults --------------------------------------------------------------------------------


def test_undefined_ref_lists_defined_refs() -> None:
    err = _errors(_pair("te", "nope"))
    assert str(err) == ("stage 1: input_connectors key 'from_stage_0': undefined connector reference 'nope'; "
                        "defined: 'te'")


def test_two_connectors_on_one_edge() -> None:
    err = _errors(_pair("te", {"name": SHM}))
    assert str(err) == ("edge 0->1: two connectors declared: 'TestTEConnector' by stage 0 "
                        "output_connectors['to_stage_1'] (ref 'te') and 'SharedMemoryConnector' by "
                        "stage 1 input_connectors['from_stage_0']")


def test_conflicting_extra_shows_both_values() -> None:
    other = {"name": "TestTEConnector", "extra": {"host": "127.0.0.1", "zmq_port": 50052, "role": "receiver"}}
    err = _errors(_pair("te", other))
    assert str(err).startswith("edge 0->1: conflicting extra for connector 'TestTEConnector' between stage 0 "
                               "output_connectors['to_stage_1'] (ref 'te') and stage 1 input_connectors")
    assert str(err).endswith("'zmq_port': 50051 vs 50052; 'role': (unset) vs 'receiver'")


@pytest.mark.parametrize("bad", ["x", "1", -1, True, 1.0, None, [0]])
def test_bad_stage_id(bad: Any) -> None:
    err = _errors(_doc({"stage_id": 0}, {"stage_id": bad}))
    assert err.errors == [f"stages[1]: 'stage_id' must be a non-negative int, got {type(bad).__name__} {bad!r}"]


def test_missing_stage_id_legacy_label() -> None:
    err = _errors({"stage_args": [{"input_connectors": {}}]})
    assert str(err) == "stage_args[0]: missing 'stage_id'"


def test_duplicate_stage_id() -> None:
    err = _errors(_doc({"stage_id": 0}, {"stage_id": 1}, {"stage_id": 1}))
    assert str(err) == "stages[2]: duplicate stage_id 1 (first at stages[1])"


@pytest.mark.parametrize(("field", "key"), [
    ("input_connectors", "from_stage_x"),
    ("input_connectors", "from_stage_-1"),
    ("input_connectors", "from_stage_"),
    ("input_connectors", "to_stage_0"),
    ("input_connectors", "stage_0"),
    ("output_connectors", "to_stage_"),
    ("output_connectors", "to_stage_1.5"),
    ("output_connectors", "from_stage_0"),
])
def test_malformed_connector_keys(field: str, key: str) -> None:
    prefix = "from_stage_" if field == "input_connectors" else "to_stage_"
    err = _errors(_doc({"stage_id": 0}, {"stage_id": 1, field: {key: "te"}}))
    assert str(err) == f"stage 1: {field} key {key!r}: expected '{prefix}<int>'"


def test_non_string_connector_key() -> None:
    err = _errors(_doc({"stage_id": 0}, {"stage_id": 1, "input_connectors": {0: "te"}}))
    assert str(err) == "stage 1: input_connectors key 0: expected 'from_stage_<int>'"


@pytest.mark.parametrize(("item", "message"), [
    ({"to": 1}, "edges[0]: missing 'from'"),
    ({"from": 0}, "edges[0]: missing 'to'"),
    ({"from": "a", "to": 1}, "edges[0]: 'from' must be a non-negative int, got str 'a'"),
    ({"from": 0, "to": -2}, "edges[0]: 'to' must be a non-negative int, got int -2"),
    ([0, 1], "edges[0]: expected a mapping {from, to}, got list [0, 1]"),
])
def test_bad_edges_items(item: Any, message: str) -> None:
    assert _errors(_doc({"stage_id": 0}, {"stage_id": 1}, edges=[item])).errors == [message]


def test_legacy_edges_label() -> None:
    doc = {"runtime": {"edges": [{"from": 0}]}, "stage_args": [{"stage_id": 0}]}
    assert str(_errors(doc)) == "runtime.edges[0]: missing 'to'"


@pytest.mark.parametrize(("entry", "message"), [
    ({"extra": {}}, "connector 'te': missing 'name'"),
    ({"name": ""}, "connector 'te': 'name' must be a non-empty str, got str ''"),
    ({"name": "TestTEConnector", "extra": [1]}, "connector 'te': 'extra' must be a mapping, got list [1]"),
    ({"name": "TestTEConnector", "extras": {}},
     "connector 'te': unknown field 'extras' (did you mean 'extra'?); expected 'name' and optional 'extra'"),
    ("TestTEConnector", "connector 'te': expected a mapping {name, extra}, got str 'TestTEConnector'"),
])
def test_bad_connector_entries(entry: Any, message: str) -> None:
    assert _errors(_doc({"stage_id": 0}, connectors={"te": entry})).errors == [message]


def test_bad_inline_entry_names_stage_and_key() -> None:
    err = _errors(_sender_only({"extra": {}}))
    assert "stage 0: output_connectors key 'to_stage_1': missing 'name'" in err.errors


@pytest.mark.parametrize(("doc", "message"), [
    ({"connectors": ["te"], "stages": []}, "connectors: expected a mapping {ref: {name, extra}}, got list ['te']"),
    ({"stages": {"stage_id": 0}}, "stages: expected a list of stages, got dict {'stage_id': 0}"),
    ({"stages": [3]}, "stages[0]: expected a mapping, got int 3"),
    ({"stages": [{"stage_id": 0, "input_connectors": ["te"]}]},
     "stage 0: input_connectors: expected a mapping {'from_stage_<int>': connector}, got list ['te']"),
    ({"stages": [{"stage_id": 0, "engine_input_source": 1}]},
     "stage 0: engine_input_source: expected a list of stage ids, got int 1"),
    ({"stages": [{"stage_id": 0, "engine_input_source": ["0"]}]},
     "stage 0: engine_input_source[0]: expected a non-negative int stage id, got str '0'"),
    ({"stages": [], "edges": {"from": 0}}, "edges: expected a list of {from, to} items, got dict {'from': 0}"),
    ({"runtime": [1]}, "runtime: expected a mapping, got list [1]"),
    ({"connectors": {}, "runtime": {"connectors": {}}},
     "'connectors' is given both at top level and under 'runtime'; use one"),
    ({"stages": [], "stage_args": []}, "'stages' and 'stage_args' are both given; use one"),
])
def test_wrong_section_types(doc: dict, message: str) -> None:
    assert _errors(doc).errors == [message]


@pytest.mark.parametrize(("doc", "message"), [
    (_doc({"stage_id": 0, "output_connectors": {"to_stage_5": "te"}}),
     "stage 0: output_connectors key 'to_stage_5': stage 5 is not defined; defined stages: 0"),
    (_doc({"stage_id": 0}, edges=[{"from": 0, "to": 7}]), "edges[0]: stage 7 is not defined; defined stages: 0"),
    (_doc({"stage_id": 0, "engine_input_source": [4]}),
     "stage 0: engine_input_source: stage 4 is not defined; defined stages: 0"),
])
def test_edge_to_undefined_stage(doc: dict, message: str) -> None:
    assert _errors(doc).errors == [message]


def test_edges_without_stages_are_not_checked() -> None:
    config = load_omni_transfer_config(config_dict={"edges": [{"from": 0, "to": 1}]})
    assert config.connectors == {("0", "1"): ConnectorSpec(SHM, {})}


# -- extra validation ---------------------------------------------------------------------------------


def test_unknown_extra_key_lists_valid_keys() -> None:
    err = _errors(_doc({"stage_id": 0}, connectors={"te": {"name": "TestTEConnector", "extra": {"hots": "x"}}}))
    assert str(err) == ("connector 'te': unknown key 'hots' (did you mean 'host'?) for connector 'TestTEConnector'; "
                        "valid keys: host, zmq_port")


def test_wrong_extra_type_names_edge() -> None:
    inline = {"name": SHM, "extra": {"readers": "two"}}
    err = _errors(_sender_only(inline))
    assert str(err) == "edge 0->1 (connector 'SharedMemoryConnector'): key 'readers' must be int, got str 'two'"


def test_unset_env_var_in_int_key_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    err = _errors(_doc({"stage_id": 0}, connectors={"te": _te({"zmq_port": "${NOPE}"})}))
    assert str(err).startswith("connector 'te': key 'zmq_port': environment variable(s) not set: NOPE")


def test_unknown_connector_name_lists_available_and_chains() -> None:
    err = _errors(_sender_only({"name": "Bogus"}))
    assert str(err) == ("edge 0->1 (connector 'Bogus'): unknown connector 'Bogus'; "
                        "available: SharedMemoryConnector, TestTEConnector")
    assert isinstance(err.__cause__, ValueError)


def test_unknown_ref_connector_name_reported_once() -> None:
    err = _errors(_pair("bad", "bad") | {"connectors": {"bad": {"name": "Bogus"}}})
    available = "available: SharedMemoryConnector, TestTEConnector"
    assert err.errors == [f"connector 'bad': unknown connector 'Bogus'; {available}"]


def test_auto_shm_requires_the_connector(plugin_registry: PluginRegistry) -> None:
    plugin_registry.unregister_plugin("test-connectors")
    err = _errors({"stages": [{"stage_id": 0}, {"stage_id": 1, "engine_input_source": [0]}]})
    assert str(err).startswith("edge 0->1 (auto-inserted): unknown connector 'SharedMemoryConnector'")


# -- error collection ---------------------------------------------------------------------------------


def test_all_faults_reported_at_once_sorted() -> None:
    doc = _doc(
        {"stage_id": 0, "output_connectors": {"to_stage_1": "missing"}},
        {"stage_id": 10, "input_connectors": {"from_stage_x": "te"}},
        {"stage_id": 2, "input_connectors": {"from_stage_0": {"name": SHM, "extra": {"readers": "many"}}}},
        {"stage_id": -1},
        connectors={"te": {"name": "TestTEConnector", "extra": {"zmq_port": "p"}}},
        edges=[{"from": 0}],
    )
    err = _errors(doc)
    assert err.errors == [
        "connector 'te': key 'zmq_port' must be int, got str 'p'",
        "edge 0->2 (connector 'SharedMemoryConnector'): key 'readers' must be int, got str 'many'",
        "edges[0]: missing 'to'",
        "stage 0: output_connectors key 'to_stage_1': undefined connector reference 'missing'; defined: 'te'",
        "stage 10: input_connectors key 'from_stage_x': expected 'from_stage_<int>'",
        "stages[3]: 'stage_id' must be a non-negative int, got int -1",
    ]
    lines = str(err).splitlines()
    assert lines[0] == "6 config errors:"
    assert [line.strip() for line in lines[1:]] == err.errors


def test_single_error_is_one_line_and_reconstructs() -> None:
    """``__reduce__`` rebuilds the error from its parts (frameworks that ship exceptions between processes)."""
    err = _errors(_pair("te", "nope"))
    assert len(err.errors) == 1 and "\n" not in str(err)
    clone = copy.deepcopy(err)
    assert isinstance(clone, ConfigError) and clone.errors == err.errors and str(clone) == str(err)


# -- junk never escapes as another exception type ------------------------------------------------------

_WORDS = ["connectors", "stages", "stage_args", "runtime", "edges", "stage_id", "input_connectors",
          "output_connectors", "engine_input_source", "from_stage_0", "from_stage_1", "to_stage_0", "to_stage_1",
          "from", "to", "name", "extra", "te", "host", "zmq_port", "readers", "namespace", "role",
          "TestTEConnector", SHM, "${PORT}", "${NOPE}"]
_SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-3, 3), st.floats(allow_nan=True),
                     st.sampled_from(_WORDS), st.text(max_size=5))
_KEYS = st.one_of(st.sampled_from(_WORDS), st.text(max_size=5), st.integers(-2, 2))
_JUNK = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_KEYS, inner, max_size=5),
                     max_leaves=30)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=st.one_of(_JUNK, st.dictionaries(st.sampled_from(_WORDS), _JUNK, max_size=6)))
def test_junk_documents_load_or_raise_config_error(doc: Any) -> None:
    with contextlib.suppress(ConfigError):
        load_omni_transfer_config(config_dict=doc)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.lists(st.sampled_from([*"{}[]:,-# \n\"'!&*0123456789ab\t", *_WORDS]), max_size=40).map("".join),
       suffix=st.sampled_from([".json", ".yaml", ".yml", ".txt"]))
def test_junk_files_load_or_raise_config_error(text: str, suffix: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"junk{suffix}"
        path.write_text(text)
        with contextlib.suppress(ConfigError):
            load_omni_transfer_config(path)
