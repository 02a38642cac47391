"""Typo hints for unknown names: the closest valid name, if one is close."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(name: object, choices: Iterable[str]) -> str:
    """``" (did you mean 'X'?)"`` for the valid name closest to ``name`` (case-insensitive), or ``""``."""
    by_folded = {choice.casefold(): choice for choice in choices}
    close = difflib.get_close_matches(str(name).casefold(), list(by_folded), n=1, cutoff=0.6)
    return f" (did you mean {by_folded[close[0]]!r}?)" if close else ""
