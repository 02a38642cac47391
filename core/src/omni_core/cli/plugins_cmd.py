"""``omni plugins``: what each installed plugin provides and whether it works."""

from __future__ import annotations

import argparse

from ..plugins import PluginRecord, get_plugin_registry, missing_requirements
from .table import render_table


def _connector_status(record: PluginRecord) -> list[tuple[str, str, str]]:
    out = []
    for reg in record.connectors:
        missing = missing_requirements(reg)
        status = f"missing dependency {', '.join(missing)}: {reg.install_hint}" if missing else "loaded"
        names = reg.name + (f" (alias {', '.join(reg.aliases)})" if reg.aliases else "")
        out.append((names, reg.capabilities.summary(), status))
    return out


def run(args: argparse.Namespace) -> int:
    registry = get_plugin_registry()
    rows = []
    problems = 0
    for record in sorted(registry.plugins.values(), key=lambda r: r.name):
        base = [record.name, record.distribution, record.version]
        if record.status != "loaded":
            problems += record.status == "broken"
            detail = "; ".join(record.errors) if record.errors else "disabled by OMNI_PLUGINS/OMNI_DISABLED_PLUGINS"
            rows.append([*base, "-", "-", f"{record.status}: {detail}"])
        connectors = _connector_status(record)
        for names, caps, status in connectors:
            problems += status != "loaded"
            rows.append([*base, names, caps, status])
        extras = [
            *(f"policy {p.name}" for p in record.load_balancers),
            *(f"command {c.name}" for c in record.cli_commands),
            *(f"launcher {launcher.name}" for launcher in record.launchers),
            *(f"coordinator {c.name}" for c in record.coordinators),
        ]
        if record.status == "loaded" and (extras or not connectors):
            rows.append([*base, ", ".join(extras) or "-", "-", "loaded"])
    for name, providers in registry.conflicts().items():
        problems += 1
        rows.append(["-", "-", "-", name, "-", "conflict: provided by " + " and ".join(p.label for p in providers)])
    if not rows:
        print("no omni plugins installed (pip install 'omni-core[shm]' for the shared-memory connector)")
        return 1
    print(render_table(["plugin", "distribution", "version", "provides", "capabilities", "status"], rows))
    return 1 if problems else 0
