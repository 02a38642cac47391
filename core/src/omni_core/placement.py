"""Where each stage replica runs: the ``launcher``, ``hosts`` and ``placement`` sections of a pipeline config.

One concept for every launcher (the local one, Ray, ...)::

    launcher: local            # the plugin launcher that starts stage replicas (``omni run --launcher`` overrides)
    hosts:                     # named hosts: an address and, for the local launcher, the command prefix
      h1: {address: 198.18.0.1, exec: [ssh, h1]}        #   that runs a process there
    placement:
      strategy: SPREAD         # one placement group with a bundle per replica (PACK, SPREAD, STRICT_*)
      stages:
        0: {host: h1}                                   # every replica of stage 0 on host h1
        1: {resources: {host_b: 1}, num_gpus: 1}        # on a node offering these resources; GPUs per replica
        2: {labels: {zone: b}, num_cpus: 2}             # on a node with these labels

A replica placed on a host gets ``OMNI_HOST_IP`` (so ``host: auto`` resolves to that host's address).  Each
launcher declares the placement keys it honours (``LauncherRegistration.placement_keys``); a config that uses
another is refused before anything starts, by :meth:`Placement.require`.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config_loader import ConfigErrors, _Problems, _show, load_config_document
from .suggest import did_you_mean

__all__ = ["PLACEMENT_KEYS", "STRATEGIES", "HostSpec", "Placement", "StagePlacement", "load_placement"]

#: Ray's placement-group strategies.
STRATEGIES = ("PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD")
#: Keys of one stage's entry under ``placement.stages``.
STAGE_KEYS = ("host", "resources", "labels", "num_gpus", "num_cpus")
#: Every placement key a launcher may honour (``LauncherRegistration.placement_keys``).
PLACEMENT_KEYS = (*STAGE_KEYS, "strategy")
DEFAULT_LAUNCHER = "local"
_HOST_KEYS = ("address", "exec")
_SECTION_KEYS = ("strategy", "stages")


@dataclass(frozen=True)
class HostSpec:
    """A named host: its IP ``address`` and ``exec``, the command prefix that runs a process there (``()``: here)."""

    name: str
    address: str
    exec: tuple[str, ...] = ()


@dataclass(frozen=True)
class StagePlacement:
    """Where every replica of one stage runs (each field unset by default)."""

    host: HostSpec | None = None
    resources: Mapping[str, float] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    num_gpus: float | None = None
    num_cpus: float | None = None

    def keys(self) -> list[str]:
        """The placement keys this stage sets."""
        return [key for key in STAGE_KEYS if getattr(self, key) not in (None, {})]


@dataclass(frozen=True)
class Placement:
    """A run's launcher, hosts and per-stage placement (stage ids as strings)."""

    launcher: str = DEFAULT_LAUNCHER
    hosts: Mapping[str, HostSpec] = field(default_factory=dict)
    strategy: str | None = None
    stages: Mapping[str, StagePlacement] = field(default_factory=dict)

    def for_stage(self, stage_id: str | int) -> StagePlacement:
        """Stage ``stage_id``'s placement (an empty one if the config places it nowhere in particular)."""
        return self.stages.get(str(stage_id), StagePlacement())

    def require(self, launcher: str, honoured: Collection[str]) -> None:
        """Raise :class:`ConfigErrors` naming every stage and key ``launcher`` cannot honour (all at once)."""
        faults = [(f"placement.stages.{sid}.{key}", key) for sid, stage in sorted(self.stages.items())
                  for key in stage.keys() if key not in honoured]
        if self.strategy is not None and "strategy" not in honoured:
            faults.append(("placement.strategy", "strategy"))
        if faults:
            can = ", ".join(honoured) or "nothing"
            raise ConfigErrors([
                f"{where}: the {launcher!r} launcher cannot honour {key!r} (it honours: {can}); "
                "choose a launcher that does (launcher: NAME, or omni run --launcher NAME)"
                for where, key in faults
            ])


def load_placement(
    config_path: str | Path | None = None, config_dict: Mapping[str, Any] | None = None
) -> Placement:
    """Read ``launcher``, ``hosts`` and ``placement`` from a pipeline config; all three are optional.

    Raises FileNotFoundError for a missing file and :class:`ConfigErrors` listing every fault, each naming its key
    (``hosts.h1.address``, ``placement.stages.1.resources``, ...) and, for an unknown key or host, the closest
    valid one.
    """
    doc = load_config_document(config_path, config_dict) or {}
    problems = _Problems()
    launcher = doc.get("launcher", DEFAULT_LAUNCHER)
    if not isinstance(launcher, str) or not launcher.strip():
        problems.add(f"launcher: must be a launcher name (str), got {_show(launcher)}")
        launcher = DEFAULT_LAUNCHER
    hosts = _hosts(doc.get("hosts"), problems)
    section = _mapping(doc.get("placement"), "placement", _SECTION_KEYS, problems)
    strategy = section.get("strategy")
    if strategy is not None and strategy not in STRATEGIES:
        hint = did_you_mean(strategy, STRATEGIES)
        problems.add(f"placement.strategy: must be one of {', '.join(STRATEGIES)}, got {_show(strategy)}{hint}")
        strategy = None
    stages = _stages(section.get("stages"), hosts, _defined_stages(doc), problems)
    problems.raise_if_any(str(config_path) if config_path is not None else None)
    return Placement(launcher=launcher, hosts=hosts, strategy=strategy, stages=stages)


def _mapping(raw: Any, where: str, keys: tuple[str, ...], problems: _Problems) -> Mapping[str, Any]:
    """``raw`` as a mapping holding only ``keys`` (``{}`` for None); reports what is not."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(f"{where}: expected a mapping with keys {', '.join(keys)}, got {_show(raw)}")
        return {}
    for key in raw:
        if key not in keys:
            problems.add(f"{where}: unknown key {key!r}{did_you_mean(key, keys)}; valid keys: {', '.join(keys)}")
    return {key: value for key, value in raw.items() if key in keys}


def _hosts(raw: Any, problems: _Problems) -> dict[str, HostSpec]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(f"hosts: expected a mapping {{NAME: {{address, exec}}}}, got {_show(raw)}")
        return {}
    hosts = {}
    for name, entry in raw.items():
        where = f"hosts.{name}"
        if not isinstance(name, str) or not name:
            problems.add(f"hosts: host names must be non-empty str, got {_show(name)}")
            continue
        if not isinstance(entry, Mapping):
            problems.add(f"{where}: expected a mapping with keys {', '.join(_HOST_KEYS)}, got {_show(entry)}")
            continue
        fields = _mapping(entry, where, _HOST_KEYS, problems)
        address = fields.get("address")
        try:
            address = str(ipaddress.ip_address(address)) if isinstance(address, str) else None
        except ValueError:
            address = None
        if address is None:
            problems.add(f"{where}.address: must be an IP address, got {_show(fields.get('address'))}")
        prefix = fields.get("exec", [])
        if not isinstance(prefix, (list, tuple)) or not all(isinstance(p, str) and p for p in prefix):
            problems.add(f"{where}.exec: must be a list of non-empty str (a command prefix), got {_show(prefix)}")
            prefix = []
        if address is not None:
            hosts[name] = HostSpec(name, address, tuple(prefix))
    return hosts


def _defined_stages(doc: Mapping[str, Any]) -> set[str] | None:
    """The stage ids the config defines (as str), or None if its stages cannot be read (the loader reports it)."""
    stages = doc.get("stage_args")
    if not isinstance(stages, (list, tuple)):
        return None
    ids = {s.get("stage_id") for s in stages if isinstance(s, Mapping)}
    return {str(i) for i in ids if isinstance(i, int) and not isinstance(i, bool)} or None


def _stages(
    raw: Any, hosts: Mapping[str, HostSpec], defined: set[str] | None, problems: _Problems
) -> dict[str, StagePlacement]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(f"placement.stages: expected a mapping {{STAGE_ID: placement}}, got {_show(raw)}")
        return {}
    out = {}
    for key, entry in raw.items():
        sid = str(key)
        where = f"placement.stages.{sid}"
        if isinstance(key, bool) or not sid.isdigit():
            problems.add(f"placement.stages: {_show(key)} is not a stage id (a non-negative int)")
            continue
        sid = str(int(sid))
        if defined is not None and sid not in defined:
            problems.add(f"{where}: stage {sid} is not defined; defined stages: {', '.join(sorted(defined, key=int))}")
        if not isinstance(entry, Mapping):
            problems.add(f"{where}: expected a mapping with keys {', '.join(STAGE_KEYS)}, got {_show(entry)}")
            continue
        out[sid] = _stage(entry, where, hosts, problems)
    return out


def _stage(entry: Mapping[str, Any], where: str, hosts: Mapping[str, HostSpec], problems: _Problems) -> StagePlacement:
    fields = _mapping(entry, where, STAGE_KEYS, problems)
    host = None
    if "host" in fields:
        name = fields["host"]
        host = hosts.get(name) if isinstance(name, str) else None
        if host is None:
            defined = ", ".join(hosts) or "(none: add a hosts section)"
            hint = did_you_mean(name, hosts)
            problems.add(f"{where}.host: undefined host {_show(name)}{hint}; defined hosts: {defined}")
    resources = _named_values(fields.get("resources"), f"{where}.resources", _number, "a non-negative number", problems)
    labels = _named_values(fields.get("labels"), f"{where}.labels", _text, "a str", problems)
    gpus, cpus = (_count(fields.get(key), f"{where}.{key}", problems) for key in ("num_gpus", "num_cpus"))
    return StagePlacement(host=host, resources=resources, labels=labels, num_gpus=gpus, num_cpus=cpus)


def _number(value: Any) -> float | None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0
    return float(value) if ok else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _named_values(raw: Any, where: str, convert: Any, kind: str, problems: _Problems) -> dict[str, Any]:
    """A ``{name: value}`` mapping whose values ``convert`` accepts (it returns None for a bad one)."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        problems.add(f"{where}: expected a mapping {{name: value}}, got {_show(raw)}")
        return {}
    out = {}
    for name, value in raw.items():
        converted = convert(value)
        if not isinstance(name, str) or not name or converted is None:
            problems.add(f"{where}.{name}: must map a non-empty name to {kind}, got {_show(value)}")
        else:
            out[name] = converted
    return out


def _count(value: Any, where: str, problems: _Problems) -> float | None:
    if value is None:
        return None
    number = _number(value)
    if number is None:
        problems.add(f"{where}: must be a non-negative number, got {_show(value)}")
    return number
