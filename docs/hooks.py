"""mkdocs hooks: the pages generated from the code, and the repository files the docs link to.

- ``<!-- omni:config-reference -->`` becomes one table per connector of the registered ``ConfigKey``s, and
  ``<!-- omni:capabilities -->`` the registered capabilities: one source of truth, the plugins' registrations
  (every installed plugin; a plugin that fails to load fails the build).
- The plugin READMEs, ``SECURITY.md``, ``RELIABILITY.md`` and whatever they link to inside the repository
  (benchmark plots and results) are served at their repository paths, so every relative link in them works
  as it does on the repository.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

from omni_core.plugins import get_plugin_registry

ROOT = Path(__file__).resolve().parents[1]
#: Repository files served as pages, at their repository paths.
PAGES = ["core/README.md", *sorted(str(p.relative_to(ROOT)) for p in ROOT.glob("plugins/*/README.md")),
         "SECURITY.md", "RELIABILITY.md"]
_LINK = re.compile(r"\]\(([^)\s#]+)(?:#[^)]*)?\)")


def on_files(files: Files, config: Any) -> Files:
    """Add :data:`PAGES` and, transitively, the repository files their relative links point at."""
    pending, seen = list(PAGES), set()
    while pending:
        path = pending.pop()
        if path in seen or not (ROOT / path).is_file():
            continue
        seen.add(path)
        files.append(File.generated(config, path, abs_src_path=str(ROOT / path)))
        if path.endswith(".md"):
            base = Path(path).parent
            for target in _LINK.findall((ROOT / path).read_text()):
                if "://" not in target and not target.startswith("mailto:"):
                    pending.append(_normalize(base / target))
    return files


def _normalize(path: Path) -> str:
    """``path`` without ``.`` and ``..`` parts, as a repository-relative POSIX path."""
    parts: list[str] = []
    for part in path.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    if "<!-- omni:config-reference -->" in markdown:
        markdown = markdown.replace("<!-- omni:config-reference -->", config_reference())
    if "<!-- omni:capabilities -->" in markdown:
        markdown = markdown.replace("<!-- omni:capabilities -->", capabilities_table())
    return markdown


def _connectors() -> list[tuple[Any, Any]]:
    registry = get_plugin_registry()
    broken = [f"{r.label}: {'; '.join(r.errors)}" for r in registry.plugins.values() if r.status == "broken"]
    if broken:
        raise RuntimeError("plugins failed to load, the generated pages would miss them: " + "; ".join(broken))
    return sorted(((reg, record) for record in registry.plugins.values() for reg in record.connectors),
                  key=lambda item: item[0].name)


def _cell(text: object) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def config_reference() -> str:
    """One section per connector: its plugin, install hint and a table of its keys."""
    from omni_core.registration import CORE_KEYS

    out = []
    for reg, record in _connectors():
        aliases = f" (alias {', '.join(f'`{a}`' for a in reg.aliases)})" if reg.aliases else ""
        out += [f"## `{reg.name}`", "", f"From `{record.distribution}` {record.version}{aliases}; "
                f"capabilities: `{reg.capabilities.summary()}`." + (f" Install: `{reg.install_hint}`." if
                                                                     reg.install_hint else ""), ""]
        if reg.config_keys is None:
            out += ["Accepts any key (unchecked).", ""]
            continue
        out += ["| key | type | default | meaning |", "| --- | --- | --- | --- |"]
        out += [f"| `{k.name}` | `{_cell(k.type_names)}` | `{_cell(repr(k.default))}` | {_cell(k.help)} |"
                for k in reg.config_keys]
        out.append("")
    out += ["## Keys core injects", "", "Every connector also accepts these; core fills them in when it wires a "
            "stage's edges.", "", "| key | type | meaning |", "| --- | --- | --- |"]
    out += [f"| `{k.name}` | `{_cell(k.type_names)}` | {_cell(k.help)} |" for k in CORE_KEYS]
    return "\n".join(out) + "\n"


def capabilities_table() -> str:
    """A row per connector: delivery and the capability flags, as registered."""
    rows = ["| connector | plugin | delivery | raw data | endpoint | cross-host | device memory |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for reg, record in _connectors():
        caps = reg.capabilities
        flags = ["yes" if flag else "no" for flag in (caps.raw_data, caps.needs_endpoint, caps.cross_host,
                                                       caps.device_memory)]
        rows.append(f"| `{reg.name}` | `{record.distribution}` | {caps.delivery.value} | " + " | ".join(flags) + " |")
    return "\n".join(rows) + "\n"
