"""``${VAR}`` expansion for config values."""

from __future__ import annotations

import os
import re
from typing import Any

from .errors import EnvVarExpansionError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")

#: Host values meaning "pick this machine's address".
AUTO_HOST_VALUES = frozenset({"", "auto", "*", "0.0.0.0", "::"})


def expand_env_value(value: Any, *, strict: bool = False, field_name: str = "value") -> Any:
    """Expand ``$VAR`` / ``${VAR}`` in a string value; non-strings pass through.

    With ``strict`` an unset variable raises :class:`EnvVarExpansionError`
    naming the field and every unset variable; otherwise it is left as written.
    """
    if not isinstance(value, str) or "$" not in value:
        return value
    missing: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name in os.environ:
            return os.environ[name]
        missing.append(name)
        return match.group(0)

    expanded = _VAR.sub(substitute, value)
    if strict and missing:
        names = ", ".join(sorted(set(missing)))
        raise EnvVarExpansionError(f"{field_name}: environment variable(s) not set: {names} (in {value!r})")
    return expanded


def expand_env_int(value: Any, *, field_name: str) -> int:
    """Strictly expand ``value`` and convert it to int, naming the field on failure."""
    expanded = expand_env_value(value, strict=True, field_name=field_name)
    if isinstance(expanded, bool):
        raise EnvVarExpansionError(f"{field_name}: expected an integer, got bool {expanded!r}")
    try:
        return int(expanded)
    except (TypeError, ValueError):
        raise EnvVarExpansionError(f"{field_name}: expected an integer, got {expanded!r}") from None
