"""Where the TransferEngine connector's memory pool lives: device names, the NPU check, allocation, sync."""

from __future__ import annotations

import importlib
import re
from typing import Any

from .te_engine import ASCEND_REQUIREMENT

AUTO_DEVICE_VALUES = frozenset({"", "auto"})
#: Protocols whose engine device is an NPU (``device_name`` auto -> ``npu:<local rank>``).
NPU_PROTOCOLS = frozenset({"ascend", "hccl", "npu"})
HOST_POOL_DEVICE = "cpu"
_NPU_DEVICE = re.compile(r"^npu(?::\d+)?$")


class NPUUnavailableError(RuntimeError):
    """The connector needs an Ascend NPU and this host has none usable."""


def resolve_device_name(value: str, protocol: str, local_rank: int) -> str:
    """The engine's ``device_name``: as given, or ``npu:<local_rank>`` for NPU protocols when auto."""
    if value.strip().lower() not in AUTO_DEVICE_VALUES:
        return value
    return f"npu:{local_rank}" if protocol.lower() in NPU_PROTOCOLS else ""


def resolve_pool_device(value: str, *, allow_host: bool) -> str:
    """``npu`` or ``npu:N`` (auto -> ``npu``); ``cpu`` only when ``allow_host`` (an injected test engine).

    The real engine moves NPU memory only: a host pool registers fine but every
    transfer from it fails (upstream saw HCCL/QP errors), so it is refused.
    """
    device = value.strip().lower()
    if device in AUTO_DEVICE_VALUES:
        return "npu"
    if _NPU_DEVICE.match(device) or (allow_host and device == HOST_POOL_DEVICE):
        return device
    allowed = "'npu', 'npu:N'" + (" or 'cpu'" if allow_host else "")
    extra = "" if allow_host else " ('cpu' is accepted only with an injected engine, for tests)"
    raise ValueError(f"YuanrongTransferEngineConnector memory_pool_device must be {allowed}, got {value!r}{extra}")


def require_npu(device: str) -> None:
    """Check that ``device`` is a usable Ascend NPU (torch_npu loaded); raise NPUUnavailableError otherwise."""
    import torch

    try:
        importlib.import_module("torch_npu")
    except ImportError as exc:
        raise NPUUnavailableError(
            f"memory_pool_device {device!r} needs torch_npu (the Ascend PyTorch adapter), which is not "
            f"importable: {exc}; {ASCEND_REQUIREMENT}"
        ) from exc
    npu = getattr(torch, "npu", None)
    if npu is None or not npu.is_available() or npu.device_count() == 0:
        raise NPUUnavailableError(f"memory_pool_device {device!r}: torch_npu sees no NPU; {ASCEND_REQUIREMENT}")


def allocate_pool(device: str, size: int) -> Any:
    """A 1-D uint8 tensor of ``size`` bytes on ``device`` (an NPU only after :func:`require_npu`)."""
    import torch

    return torch.empty(size, dtype=torch.uint8, device=device)


def synchronize(tensor: Any) -> None:
    """Wait until queued copies to or from ``tensor``'s device are done (no-op on the CPU)."""
    import torch

    kind = tensor.device.type
    if kind != "cpu":
        getattr(torch, kind).synchronize(tensor.device)
