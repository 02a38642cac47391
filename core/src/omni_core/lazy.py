"""Lazy public names: a package's names are imported from their modules on first access."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any


def lazy_names(package: str, names: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Module ``__getattr__`` and ``__dir__`` for ``package``, whose name ``n`` lives in ``.{names[n]}``.

    A value ``"module:attr"`` exports ``attr`` of ``.module`` under another name (an alias).  Use as
    ``__getattr__, __dir__ = lazy_names(__name__, _LAZY)``; a loaded name is cached in the package.
    """
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        where = names.get(name)
        if where is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, _, attr = where.partition(":")
        value = getattr(importlib.import_module(f".{module}", package), attr or name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(namespace["__all__"])

    return __getattr__, __dir__
