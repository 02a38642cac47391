"""Import the openYuanrong datasystem bindings and read their error codes.

The PyPI distribution ``openyuanrong-datasystem`` installs the import package
``yr.datasystem``; some source builds install a plain ``datasystem`` package
instead, which is tried second.
"""

from __future__ import annotations

import importlib
import re
from types import ModuleType

INSTALL_HINT = "pip install omni-yuanrong  (it installs openyuanrong-datasystem, imported as yr.datasystem)"
MODULE_NAMES = ("yr.datasystem", "datasystem")

#: Status codes (the ``code: [...]`` prefix of the bindings' RuntimeError messages).
KEY_NOT_FOUND = "Key not found"
RPC_UNAVAILABLE = "RPC unavailable"

_STATUS_CODE = re.compile(r"^\s*code: \[([^\]]*)\]")


def import_datasystem(*, submodule: str = "", names: tuple[str, ...] = ()) -> ModuleType:
    """Return ``yr.datasystem[.submodule]`` (else ``datasystem[.submodule]``) holding every name in ``names``.

    Raises ImportError naming the pip command, chained to the first import failure.
    """
    first_error: ImportError | None = None
    for package in MODULE_NAMES:
        try:
            module = importlib.import_module(f"{package}.{submodule}" if submodule else package)
        except ImportError as exc:
            first_error = first_error or exc
            continue
        missing = [name for name in names if not hasattr(module, name)]
        if not missing:
            return module
        first_error = first_error or ImportError(f"{module.__name__} has no {', '.join(missing)}")
    wanted = f" ({', '.join(names)})" if names else ""
    raise ImportError(
        f"the openYuanrong datasystem Python bindings{wanted} are not importable as "
        f"{' or '.join(MODULE_NAMES)}: {first_error}; install them with: {INSTALL_HINT}"
    ) from first_error


def status_code(exc: BaseException) -> str | None:
    """The datasystem status code carried by an exception from the bindings (``"Key not found"``, ...)."""
    match = _STATUS_CODE.match(str(exc))
    return match.group(1) if match else None
