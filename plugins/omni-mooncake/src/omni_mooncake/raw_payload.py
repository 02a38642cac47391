"""Top-level raw payloads (tensors, arrays, byte strings) moved as bare bytes, without the object serializer.

A :class:`RawLayout` records what the bytes were (kind, dtype, shape) so the reader rebuilds the same type.
"""

from __future__ import annotations

import functools
import re
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

from omni_core import private_copy

KINDS = ("tensor", "ndarray", "bytes")
MAX_NDIM = 32
MAX_DTYPE_CHARS = 32
_NUMPY_DTYPE = re.compile(r"[<>|][biufc]\d{1,2}")


@dataclass(frozen=True)
class RawLayout:
    """What a raw payload's bytes are: ``kind`` (tensor/ndarray/bytes), ``dtype`` name and ``shape``."""

    kind: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int

    def to_wire(self) -> dict[str, Any]:
        """A msgpack/JSON-friendly dict (``nbytes`` travels separately as the payload size)."""
        return {"kind": self.kind, "dtype": self.dtype, "shape": list(self.shape)}

    @classmethod
    def from_wire(cls, obj: Any, nbytes: int) -> RawLayout:
        """Validate a dict from :meth:`to_wire` against ``nbytes``; ValueError if it does not describe them."""
        if not isinstance(obj, dict) or set(obj) != {"kind", "dtype", "shape"}:
            raise ValueError(f"raw layout must be a dict with kind, dtype and shape, got {obj!r:.200}")
        kind, dtype, shape = obj["kind"], obj["dtype"], obj["shape"]
        if type(kind) is not str or kind not in KINDS or type(dtype) is not str or len(dtype) > MAX_DTYPE_CHARS:
            raise ValueError(f"bad raw layout {obj!r:.200}")
        if not isinstance(shape, (list, tuple)) or type(nbytes) is not int or nbytes < 0:
            raise ValueError(f"bad raw layout {obj!r:.200} for {nbytes!r:.40} bytes")
        if len(shape) > MAX_NDIM or any(type(d) is not int or d < 0 for d in shape):
            raise ValueError(f"bad shape {shape!r:.200} in raw layout")
        count = 1
        for dim in shape:
            count *= dim
        if count * _itemsize(kind, dtype) != nbytes:
            raise ValueError(f"raw layout {obj!r:.200} does not describe {nbytes} bytes")
        return cls(kind, dtype, tuple(shape), nbytes)


def _itemsize(kind: str, dtype: str) -> int:
    if kind == "bytes":
        if dtype != "uint8":
            raise ValueError(f"bytes payloads have dtype uint8, got {dtype!r:.40}")
        return 1
    if kind == "ndarray":
        return numpy_dtype(dtype).itemsize
    return torch_dtype(dtype).itemsize


def numpy_dtype(name: str) -> np.dtype:
    """The plain numeric numpy dtype named by ``dtype.str`` (e.g. ``"<f4"``); ValueError otherwise."""
    try:
        dtype = np.dtype(name) if _NUMPY_DTYPE.fullmatch(name) else None
    except TypeError:  # well-formed but no such type, e.g. "<f5"
        dtype = None
    if dtype is None or dtype.str != name:
        raise ValueError(f"unsupported numpy dtype {name!r:.40}")
    return dtype


def torch_dtype(name: str) -> Any:
    """The torch dtype named ``name`` (e.g. ``"bfloat16"``); ValueError for anything else."""
    dtype = _torch_dtypes().get(name)
    if dtype is None:
        raise ValueError(f"unsupported torch dtype {name!r:.40}")
    return dtype


@functools.cache
def _torch_dtypes() -> dict[str, Any]:
    """Every non-quantized torch dtype by name (a fixed table: wire data never reaches ``getattr(torch, ...)``)."""
    import torch

    names = {
        str(value).removeprefix("torch."): value for value in vars(torch).values() if isinstance(value, torch.dtype)
    }
    return {name: dtype for name, dtype in names.items() if not name.startswith(("qint", "quint"))}


def layout_of(data: Any, *, arrays: bool) -> RawLayout | None:
    """The layout of ``data`` if it is a non-empty top-level raw payload, else None.

    Raw payloads are strided torch tensors and bytes-like objects, plus numeric numpy
    arrays when ``arrays`` is true.  Empty ones return None (they go through the serializer).
    """
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):
        if data.layout is not torch.strided or data.is_quantized or data.is_meta or data.is_nested:
            return None
        nbytes = data.numel() * data.element_size()
        name = str(data.dtype).removeprefix("torch.")
        return RawLayout("tensor", name, tuple(data.shape), nbytes) if nbytes else None
    if isinstance(data, (bytes, bytearray, memoryview)):
        nbytes = memoryview(data).nbytes
        return RawLayout("bytes", "uint8", (nbytes,), nbytes) if nbytes else None
    if arrays and type(data) is np.ndarray and data.nbytes and _NUMPY_DTYPE.fullmatch(data.dtype.str):
        return RawLayout("ndarray", data.dtype.str, data.shape, data.nbytes)
    return None


def flat_bytes(data: Any) -> Any:
    """A flat C-contiguous uint8 view of a raw payload (torch tensor or numpy array; copies only if strided)."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):
        src = data.detach().resolve_conj().resolve_neg().contiguous()
        return src.reshape(-1).view(torch.uint8)
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data).reshape(-1).view(np.uint8)
    return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)


def host_address(data: Any) -> tuple[int, Any] | None:
    """``(address, keepalive)`` of a raw payload's bytes when they are contiguous in host memory, else None."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(data, torch.Tensor):
        return (data.data_ptr(), data) if data.device.type == "cpu" and data.is_contiguous() else None
    if isinstance(data, np.ndarray):
        return (data.ctypes.data, data) if data.flags.c_contiguous else None
    view = memoryview(data)
    if not view.c_contiguous:
        return None
    array = np.frombuffer(view.cast("B"), dtype=np.uint8)
    return array.ctypes.data, array


def rebuild(layout: RawLayout, flat: Any, *, copy: bool) -> Any:
    """The payload ``layout`` describes, from ``flat`` (uint8 torch tensor or numpy array of ``nbytes``).

    With ``copy=False`` tensors and arrays are views of ``flat``; bytes are always a copy.
    """
    if layout.kind == "bytes":
        return flat.cpu().numpy().tobytes() if not isinstance(flat, np.ndarray) else flat.tobytes()
    if layout.kind == "ndarray":
        array = flat if isinstance(flat, np.ndarray) else flat.cpu().numpy()
        out = array.view(numpy_dtype(layout.dtype)).reshape(layout.shape)
        return out.copy() if copy else out
    import torch

    if copy and (isinstance(flat, np.ndarray) or not flat.is_cuda):  # copied here, without intra-op threads
        flat, copy = private_copy(flat if isinstance(flat, np.ndarray) else flat.numpy()), False
    tensor = torch.from_numpy(flat) if isinstance(flat, np.ndarray) else flat
    out = tensor.view(torch_dtype(layout.dtype)).view(layout.shape)
    return out.clone() if copy else out
