"""Load a pipeline's transfer config (JSON/YAML, legacy or new schema) into an ``OmniTransferConfig``.

Two schemas are accepted and give the same result:

* legacy: ``runtime: {connectors: {...}, edges: [...]}`` plus ``stage_args: [...]``;
* new: top-level ``connectors``, ``stages`` and optional ``edges``.

Every fault is reported as a :class:`ConfigErrors` (a :class:`ConfigError`) whose
``errors`` attribute lists all problems found, each naming the stage, edge or key
at fault; the message holds them one per line, sorted.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError, PluginError
from .factory import OmniConnectorFactory
from .spec import ConnectorSpec, OmniTransferConfig
from .suggest import did_you_mean

__all__ = ["ConfigErrors", "load_config_document", "load_omni_transfer_config"]

AUTO_CONNECTOR = "SharedMemoryConnector"
SUPPORTED_SUFFIXES = (".json", ".yaml", ".yml")
#: Most values (scalars and containers) a document may hold once YAML aliases are expanded: a few
#: hundred bytes of aliases can otherwise stand for billions of values ("billion laughs").
MAX_DOCUMENT_VALUES = 100_000
#: Longest run of digits read as a stage id (longer ones are refused, not converted).
_MAX_ID_DIGITS = 18
_ENTRY_FIELDS = ("name", "extra")
_STAGE_FIELDS = (("input_connectors", "from_stage_"), ("output_connectors", "to_stage_"))

Edge = tuple[int, int]


class ConfigErrors(ConfigError):
    """One or more config faults; ``errors`` lists each message, ``source`` names the file (if any)."""

    def __init__(self, errors: Iterable[str], source: str | None = None) -> None:
        self.errors = list(errors)
        self.source = source
        where = f" in {source}" if source else ""
        if len(self.errors) == 1:
            message = self.errors[0] + (f" ({source})" if source else "")
        else:
            message = "\n".join([f"{len(self.errors)} config errors{where}:", *(f"  {e}" for e in self.errors)])
        super().__init__(message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.errors, self.source))


class _Problems:
    """Collects error messages (deduplicated) and the first underlying exception."""

    def __init__(self) -> None:
        self.messages: dict[str, None] = {}
        self.cause: BaseException | None = None

    def add(self, message: str, cause: BaseException | None = None) -> None:
        self.messages.setdefault(message)
        self.cause = self.cause or cause

    def raise_if_any(self, source: str | None) -> None:
        if self.messages:
            raise ConfigErrors(sorted(self.messages, key=_natural_key), source) from self.cause


@dataclass
class _Decl:
    """One declaration of an edge's connector and where it was written."""

    spec: ConnectorSpec
    origin: str


# -- reading and schema normalisation ----------------------------------------------------------------


def load_config_document(
    config_path: str | Path | None = None, config_dict: Mapping[str, Any] | None = None
) -> dict | None:
    """Read (or take) a config document and normalise the new schema to the legacy one.

    Returns a new dict (the input is not mutated) holding every top-level section,
    with ``runtime.connectors``, ``runtime.edges`` and ``stage_args`` filled from
    ``connectors``, ``edges`` and ``stages``; ``None`` if both arguments are None.
    """
    if config_path is not None:
        source = str(config_path)
        doc = _read_file(Path(config_path))
    elif config_dict is not None:
        source, doc = None, config_dict
    else:
        return None
    if not isinstance(doc, Mapping):
        raise ConfigErrors([f"config top level must be a mapping, got {_show(doc)}"], source)
    return _normalise_schema(doc, source)


def _read_file(path: Path) -> Any:
    if not path.exists():
        raise FileNotFoundError(f"config file not found: {path}")
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        supported = ", ".join(SUPPORTED_SUFFIXES)
        raise ConfigErrors([f"config file {path}: unsupported suffix {path.suffix!r}; supported: {supported}"])
    try:
        text = path.read_text(encoding="utf-8")
    except (IsADirectoryError, UnicodeDecodeError) as exc:
        raise ConfigErrors([f"config file {path} cannot be read: {exc}"]) from exc
    doc = _parse(text, path, suffix)
    if doc is None:
        raise ConfigErrors([f"config file {path} is empty"])
    if _count_values(doc, MAX_DOCUMENT_VALUES) > MAX_DOCUMENT_VALUES:
        raise ConfigErrors([
            f"config file {path}: more than {MAX_DOCUMENT_VALUES} values once YAML aliases are expanded "
            "(an alias that refers to itself, or aliases nested to multiply the document)"
        ])
    return doc


def _count_values(doc: Any, limit: int) -> int:
    """Values in ``doc``, each shared (aliased) one counted wherever it appears; stops past ``limit``."""
    count = 0
    stack = [doc]
    while stack and count <= limit:
        node = stack.pop()
        count += 1
        if isinstance(node, Mapping):
            stack += node.keys()
            stack += node.values()
        elif isinstance(node, (list, tuple)):
            stack += node
    return count


def _parse(text: str, path: Path, suffix: str) -> Any:
    if not text.strip():
        return None
    try:
        return json.loads(text) if suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno}, column {exc.colno}"
        raise ConfigErrors([f"config file {path}: invalid JSON at {at}: {exc.msg}"]) from exc
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigErrors([f"config file {path}: invalid YAML{at}: {exc.problem or exc.context}"]) from exc
    except (yaml.YAMLError, RecursionError, ValueError) as exc:  # ValueError: e.g. an int of over 4300 digits
        raise ConfigErrors([f"config file {path}: cannot parse: {type(exc).__name__}: {exc}"]) from exc


def _normalise_schema(doc: Mapping[str, Any], source: str | None) -> dict:
    """Copy ``doc``, moving new-schema ``connectors``/``edges``/``stages`` to their legacy places."""
    out = dict(doc)
    runtime = out.get("runtime")
    runtime = {} if runtime is None else runtime
    if not isinstance(runtime, Mapping):
        raise ConfigErrors([f"runtime: expected a mapping, got {_show(runtime)}"], source)
    runtime = dict(runtime)
    both = [key for key in ("connectors", "edges") if key in out and key in runtime]
    clashes = [f"'{key}' is given both at top level and under 'runtime'; use one" for key in both]
    if "stages" in out and "stage_args" in out:
        clashes.append("'stages' and 'stage_args' are both given; use one")
    if clashes:
        raise ConfigErrors(clashes, source)
    for key in ("connectors", "edges"):
        if key in out:
            runtime[key] = out[key]
    if "stages" in out:
        out["stage_args"] = out["stages"]
    out["runtime"] = runtime
    return out


# -- building the transfer config --------------------------------------------------------------------


def load_omni_transfer_config(
    config_path: str | Path | None = None,
    config_dict: Mapping[str, Any] | None = None,
    default_shm_threshold: int = 65536,
) -> OmniTransferConfig | None:
    """Load the connector spec of every edge; ``None`` if both arguments are None.

    Edges a stage expects (``edges``, ``engine_input_source``) but no connector
    covers get ``ConnectorSpec("SharedMemoryConnector", {})``.  Every ``extra`` is
    validated against its connector's registration (``${VAR}`` expanded).
    ``default_shm_threshold`` is accepted for upstream compatibility and unused:
    auto-inserted specs carry an empty ``extra``.

    Raises FileNotFoundError for a missing file and :class:`ConfigErrors` listing
    every other fault.
    """
    doc = load_config_document(config_path, config_dict)
    if doc is None:
        return None
    problems = _Problems()
    connectors = _build_connectors(doc, problems)
    problems.raise_if_any(str(config_path) if config_path is not None else None)
    return OmniTransferConfig(connectors={(str(f), str(t)): spec for (f, t), spec in connectors.items()})


def _build_connectors(doc: dict, problems: _Problems) -> dict[Edge, ConnectorSpec]:
    """The spec of every declared or expected edge of a normalised document."""
    runtime = doc["runtime"]
    table = _connector_table(runtime.get("connectors"), _label(doc, "connectors"), problems)
    stages, known = _parse_stages(doc.get("stage_args"), "stages" if "stages" in doc else "stage_args", problems)
    declared: dict[Edge, list[_Decl]] = {}
    for sid, stage in stages:
        for edge, decl in _stage_declarations(sid, stage, table, known, problems):
            declared.setdefault(edge, []).append(decl)
    connectors = {edge: _merge(edge, decls, problems) for edge, decls in declared.items()}
    expected = _expected_edges(runtime.get("edges"), _label(doc, "edges"), known, problems)
    for sid, stage in stages:
        expected += _input_source_edges(sid, stage, known, problems)
    for edge in expected:
        if edge not in connectors:
            where = f"edge {edge[0]}->{edge[1]} (auto-inserted)"
            auto = _validate(ConnectorSpec(AUTO_CONNECTOR, {}), where, problems)
            if auto is not None:
                connectors[edge] = auto
    return connectors


def _connector_table(raw: Any, label: str, problems: _Problems) -> dict[str, ConnectorSpec | None]:
    """Parse and validate the global ``{ref: {name, extra}}`` table; None marks a broken entry."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(f"{label}: expected a mapping {{ref: {{name, extra}}}}, got {_show(raw)}")
        return {}
    table: dict[str, ConnectorSpec | None] = {}
    for ref, entry in raw.items():
        where = f"connector {ref!r}"
        if not isinstance(ref, str):
            problems.add(f"{label}: {where}: reference names must be str")
            continue
        spec = _parse_entry(entry, where, problems)
        table[ref] = spec and _validate(spec, where, problems)
    return table


def _parse_stages(raw: Any, label: str, problems: _Problems) -> tuple[list[tuple[int, Mapping]], set[int] | None]:
    """Return ``[(stage_id, stage)]`` of the valid stages and the set of ids (None if unknown)."""
    if raw is None:
        return [], None
    if not isinstance(raw, (list, tuple)):
        problems.add(f"{label}: expected a list of stages, got {_show(raw)}")
        return [], None
    stages: list[tuple[int, Mapping]] = []
    first_index: dict[int, int] = {}
    all_valid = True
    for i, stage in enumerate(raw):
        where = f"{label}[{i}]"
        if not isinstance(stage, Mapping):
            problems.add(f"{where}: expected a mapping, got {_show(stage)}")
            all_valid = False
            continue
        sid = _required_id(stage, "stage_id", where, problems)
        if sid is None:
            all_valid = False
        elif sid in first_index:
            problems.add(f"{where}: duplicate stage_id {sid} (first at {label}[{first_index[sid]}])")
        else:
            first_index[sid] = i
            stages.append((sid, stage))
    return stages, (set(first_index) if all_valid and first_index else None)


def _stage_declarations(
    sid: int, stage: Mapping, table: dict[str, ConnectorSpec | None], known: set[int] | None, problems: _Problems
) -> list[tuple[Edge, _Decl]]:
    """The edges a stage's ``input_connectors``/``output_connectors`` declare."""
    out: list[tuple[Edge, _Decl]] = []
    for field, prefix in _STAGE_FIELDS:
        entries = stage.get(field)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            shape = f"{{'{prefix}<int>': connector}}"
            problems.add(f"stage {sid}: {field}: expected a mapping {shape}, got {_show(entries)}")
            continue
        for key, value in entries.items():
            where = f"stage {sid}: {field} key {key!r}"
            match = re.fullmatch(prefix + f"([0-9]{{1,{_MAX_ID_DIGITS}}})", key) if isinstance(key, str) else None
            if match is None:
                problems.add(f"{where}: expected '{prefix}<int>'")
                continue
            other = int(match.group(1))
            edge = (other, sid) if field == "input_connectors" else (sid, other)
            _check_known(edge, where, known, problems)
            spec = _resolve_entry(value, edge, where, table, problems)
            if spec is not None:
                ref = f" (ref {value!r})" if isinstance(value, str) else ""
                out.append((edge, _Decl(spec, f"stage {sid} {field}[{key!r}]{ref}")))
    return out


def _resolve_entry(
    value: Any, edge: Edge, where: str, table: dict[str, ConnectorSpec | None], problems: _Problems
) -> ConnectorSpec | None:
    """A reference into the global table, or an inline ``{name, extra}`` validated for ``edge``."""
    if isinstance(value, str):
        if value not in table:
            defined = ", ".join(repr(r) for r in table) or "(none)"
            problems.add(f"{where}: undefined connector reference {value!r}; defined: {defined}")
            return None
        spec = table[value]
        return ConnectorSpec(spec.name, copy.deepcopy(spec.extra)) if spec else None
    if not isinstance(value, Mapping):
        problems.add(f"{where}: expected a connector reference (str) or {{name, extra}}, got {_show(value)}")
        return None
    spec = _parse_entry(value, where, problems)
    return spec and _validate(spec, f"edge {edge[0]}->{edge[1]} (connector {spec.name!r})", problems)


def _parse_entry(entry: Any, where: str, problems: _Problems) -> ConnectorSpec | None:
    """Check the shape of a ``{name, extra}`` entry (extra unvalidated)."""
    if not isinstance(entry, Mapping):
        problems.add(f"{where}: expected a mapping {{name, extra}}, got {_show(entry)}")
        return None
    ok = True
    for key in entry:
        if key not in _ENTRY_FIELDS:
            hint = did_you_mean(key, _ENTRY_FIELDS)
            problems.add(f"{where}: unknown field {key!r}{hint}; expected 'name' and optional 'extra'")
            ok = False
    name, extra = entry.get("name"), entry.get("extra")
    if not isinstance(name, str) or not name.strip():
        fault = "missing 'name'" if name is None else f"'name' must be a non-empty str, got {_show(name)}"
        problems.add(f"{where}: {fault}")
        ok = False
    if extra is not None and not isinstance(extra, Mapping):
        problems.add(f"{where}: 'extra' must be a mapping, got {_show(extra)}")
        ok = False
    return ConnectorSpec(name, dict(extra or {})) if ok and isinstance(name, str) else None


def _validate(spec: ConnectorSpec, where: str, problems: _Problems) -> ConnectorSpec | None:
    """Check the connector exists and its ``extra`` against its registration (if a plugin provides it)."""
    try:
        reg = OmniConnectorFactory.registration(spec.name)
    except (ValueError, PluginError) as exc:
        problems.add(f"{where}: {exc}", exc)
        return None
    if reg is None:
        return spec
    try:
        return ConnectorSpec(spec.name, reg.validate_extra(spec.extra, where=where))
    except ConfigError as exc:
        problems.add(str(exc), exc)
        return None


def _merge(edge: Edge, decls: list[_Decl], problems: _Problems) -> ConnectorSpec:
    """The edge's single spec; report declarations that disagree with the first one."""
    first = decls[0]
    for other in decls[1:]:
        at = f"edge {edge[0]}->{edge[1]}"
        if other.spec.name != first.spec.name:
            problems.add(f"{at}: two connectors declared: {first.spec.name!r} by {first.origin} "
                         f"and {other.spec.name!r} by {other.origin}")
        elif other.spec.extra != first.spec.extra:
            problems.add(f"{at}: conflicting extra for connector {first.spec.name!r} between {first.origin} "
                         f"and {other.origin}: {_extra_diff(first.spec.extra, other.spec.extra)}")
    return first.spec


def _extra_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> str:
    """``'key': A vs B`` for every key whose value differs between ``a`` and ``b``."""
    missing = object()

    def show(d: Mapping[str, Any], key: str) -> str:
        return repr(d[key]) if key in d else "(unset)"

    keys = [k for k in dict.fromkeys([*a, *b]) if a.get(k, missing) != b.get(k, missing)]
    return "; ".join(f"{k!r}: {show(a, k)} vs {show(b, k)}" for k in keys)


def _expected_edges(raw: Any, label: str, known: set[int] | None, problems: _Problems) -> list[Edge]:
    """The edges listed under ``edges`` as ``{from: F, to: T}`` items."""
    if raw is None:
        return []
    if not isinstance(raw, (list, tuple)):
        problems.add(f"{label}: expected a list of {{from, to}} items, got {_show(raw)}")
        return []
    out: list[Edge] = []
    for i, item in enumerate(raw):
        where = f"{label}[{i}]"
        if not isinstance(item, Mapping):
            problems.add(f"{where}: expected a mapping {{from, to}}, got {_show(item)}")
            continue
        src, dst = (_required_id(item, key, where, problems) for key in ("from", "to"))
        if src is not None and dst is not None:
            _check_known((src, dst), where, known, problems)
            out.append((src, dst))
    return out


def _input_source_edges(sid: int, stage: Mapping, known: set[int] | None, problems: _Problems) -> list[Edge]:
    """The edges ``F -> sid`` for each ``F`` in the stage's ``engine_input_source``."""
    raw = stage.get("engine_input_source")
    if raw is None:
        return []
    where = f"stage {sid}: engine_input_source"
    if not isinstance(raw, (list, tuple)):
        problems.add(f"{where}: expected a list of stage ids, got {_show(raw)}")
        return []
    out: list[Edge] = []
    for i, src in enumerate(raw):
        if _stage_id(src) is None:
            problems.add(f"{where}[{i}]: expected a non-negative int stage id, got {_show(src)}")
        else:
            _check_known((src, sid), where, known, problems)
            out.append((src, sid))
    return out


# -- small helpers ---------------------------------------------------------------------------------


def _stage_id(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def _required_id(item: Mapping, key: str, where: str, problems: _Problems) -> int | None:
    """``item[key]`` as a stage id, reporting a missing or invalid value."""
    if key not in item:
        problems.add(f"{where}: missing {key!r}")
        return None
    sid = _stage_id(item[key])
    if sid is None:
        problems.add(f"{where}: {key!r} must be a non-negative int, got {_show(item[key])}")
    return sid


def _check_known(edge: Edge, where: str, known: set[int] | None, problems: _Problems) -> None:
    if known is None:
        return
    for sid in dict.fromkeys(edge):
        if sid not in known:
            defined = ", ".join(map(str, sorted(known)))
            problems.add(f"{where}: stage {sid} is not defined; defined stages: {defined}")


def _label(doc: Mapping[str, Any], key: str) -> str:
    """How the user spelled a runtime section: top-level ``key`` or ``runtime.key``."""
    return key if key in doc else f"runtime.{key}"


def _show(value: Any, limit: int = 60) -> str:
    text = repr(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return f"{type(value).__name__} {text}"


def _natural_key(message: str) -> list[Any]:
    """Sort key ordering embedded numbers numerically ('stage 2' before 'stage 10'), however long they are."""
    return [(len(part.lstrip("0")), part.lstrip("0")) if i % 2 else part
            for i, part in enumerate(re.split(r"([0-9]+)", message))]
