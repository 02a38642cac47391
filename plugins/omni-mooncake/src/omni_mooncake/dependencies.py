"""Lazy imports of the Mooncake wheel, with errors that name the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

CPU_HINT = "pip install 'omni-mooncake[cpu]'"
CUDA_HINT = "pip install 'omni-mooncake[cuda]' (CUDA 12) or 'omni-mooncake[cuda13]' (CUDA 13)"


def _import(module: str) -> ModuleType:
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if isinstance(exc, ModuleNotFoundError) and exc.name in ("mooncake", module):
            why = "the Mooncake wheel is not installed"
        else:  # e.g. the CUDA wheel on a host without libcudart/libcuda, or missing libibverbs/libnuma
            why = f"the installed Mooncake wheel failed to load ({exc})"
        raise ImportError(
            f"cannot import {module}: {why}. Install the CPU build with {CPU_HINT} "
            f"(Debian also needs: apt-get install libibverbs1 libnuma1), or on CUDA hosts {CUDA_HINT}; "
            "never install two of these wheels"
        ) from exc


def import_store() -> ModuleType:
    """``mooncake.store`` (MooncakeDistributedStore, ReplicateConfig)."""
    return _import("mooncake.store")


def import_engine() -> ModuleType:
    """``mooncake.engine`` (TransferEngine)."""
    return _import("mooncake.engine")
