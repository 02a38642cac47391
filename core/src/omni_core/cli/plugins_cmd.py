"""``omni plugins``: what each installed plugin provides and whether it works (``--json``: one JSON document)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..plugins import PluginRecord, PluginRegistry, get_plugin_registry, missing_requirements
from .table import print_table

HEADERS = ["plugin", "distribution", "version", "provides", "capabilities", "status"]
#: What else a plugin may provide besides connectors: (JSON key, record attribute, label in the table).
PROVIDES = (("policies", "load_balancers", "policy"), ("commands", "cli_commands", "command"),
            ("launchers", "launchers", "launcher"), ("coordinators", "coordinators", "coordinator"),
            ("services", "services", "service"))


def _connector(reg: Any) -> dict[str, Any]:
    missing = missing_requirements(reg)
    return {"name": reg.name, "aliases": list(reg.aliases), "capabilities": reg.capabilities.to_dict(),
            "status": "missing dependency" if missing else "loaded", "missing": missing,
            "install_hint": reg.install_hint}


def describe(registry: PluginRegistry) -> dict[str, Any]:
    """The document ``omni plugins --json`` prints (its keys are listed in the docs' CLI page)."""
    plugins = []
    for record in sorted(registry.plugins.values(), key=lambda r: r.name):
        entry: dict[str, Any] = {"name": record.name, "distribution": record.distribution, "version": record.version,
                                 "status": record.status, "errors": list(record.errors),
                                 "connectors": [_connector(reg) for reg in record.connectors]}
        entry.update({key: [item.name for item in getattr(record, attr)] for key, attr, _ in PROVIDES})
        plugins.append(entry)
    conflicts = {name: [p.label for p in providers] for name, providers in registry.conflicts().items()}
    problems = (sum(p["status"] == "broken" for p in plugins) + len(conflicts)
                + sum(c["status"] != "loaded" for p in plugins for c in p["connectors"]))
    return {"plugins": plugins, "conflicts": conflicts, "problems": problems}


def _rows(record: PluginRecord, entry: dict[str, Any]) -> list[list[str]]:
    base = [entry["name"], entry["distribution"], entry["version"]]
    rows = []
    if entry["status"] != "loaded":
        detail = "; ".join(entry["errors"]) or "disabled by OMNI_PLUGINS/OMNI_DISABLED_PLUGINS"
        rows.append([*base, "-", "-", f"{entry['status']}: {detail}"])
    for reg, connector in zip(record.connectors, entry["connectors"], strict=True):
        names = reg.name + (f" (alias {', '.join(reg.aliases)})" if reg.aliases else "")
        status = (f"missing dependency {', '.join(connector['missing'])}: {reg.install_hint}" if connector["missing"]
                  else "loaded")
        rows.append([*base, names, reg.capabilities.summary(), status])
    extras = [f"{label} {name}" for key, _, label in PROVIDES if key != "services" for name in entry[key]]
    if entry["status"] == "loaded" and (extras or not entry["connectors"]):
        rows.append([*base, ", ".join(extras) or "-", "-", "loaded"])
    return rows


def run(args: argparse.Namespace) -> int:
    registry = get_plugin_registry()
    doc = describe(registry)
    code = 1 if doc["problems"] or not doc["plugins"] else 0
    if getattr(args, "json", False):
        print(json.dumps(doc, indent=2))
        return code
    rows = [row for entry in doc["plugins"] for row in _rows(registry.plugins[entry["name"]], entry)]
    rows += [["-", "-", "-", name, "-", "conflict: provided by " + " and ".join(labels)]
             for name, labels in doc["conflicts"].items()]
    if not rows:
        print("no omni plugins installed (pip install 'omni-core[shm]' for the shared-memory connector)")
        return 1
    print_table(HEADERS, rows)
    return code
