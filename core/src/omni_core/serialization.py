"""The central object serializer: msgpack with typed extension types, tensors out of band, never pickle.

Wire format (a *frame*; integers little-endian)::

    offset  size      field
    0       4         magic b"OMS1"
    4       4         u32 meta_len
    8       4         u32 n_buffers
    12      8         u64 frame_len (bytes past frame_len are ignored, e.g. a page-rounded mmap)
    20      16 * n    buffer table: n x (u64 offset, u64 length); offsets count from the frame start
    ...     meta_len  meta: msgpack encoding of the object tree
    ...               buffers: each starts at the next multiple of 64, zero padding in between

In the tree, None/bool/int/float/str/bytes/list/dict are plain msgpack.  A tuple is an array whose first
element is ``ExtType(1, b"")``.  ``ExtType(2, [dtype_name, shape, index])`` is a torch tensor,
``ExtType(3, [dtype.str, shape, index])`` a numpy array (ext payloads are msgpack too); ``index`` names
the buffer holding its C-contiguous bytes, and every buffer is referenced exactly once.
``ExtType(4, [dtype.str, raw_bytes])`` is a numpy scalar.  Dict keys are str/int/float/bool/None/bytes.

torch and numpy stay optional: they are only touched when a value of theirs is met.  Decoding checks
every length, offset, dtype name and shape against the frame and :class:`DecodeLimits`, which also caps the
containers in a frame, so the decoded objects take at most ~40x the bytes of the meta section
(a negative fixint is one byte and a 40-byte int object; see SECURITY.md).  Encoding checks
dict keys and the 64-bit int range, but not ``max_depth``: a payload nested deeper than the reader's
limit encodes (up to msgpack's 511 levels) and is then refused by the reader.
"""

from __future__ import annotations

import functools
import importlib.util
import re
import struct
import sys
import warnings
from dataclasses import dataclass
from itertools import compress
from typing import Any

import msgpack
from msgpack import ExtType

from .errors import SerializationError
from .host_copies import private_copy

__all__ = [
    "MAGIC",
    "DecodeLimits",
    "OmniSerde",
    "OmniSerializer",
    "SerializedPayload",
    "deserialize_obj",
    "serialize_obj",
]

MAGIC = b"OMS1"
ALIGN = 64
_HEADER = struct.Struct("<4sIIQ")
_TUPLE, _TENSOR, _NDARRAY, _NPSCALAR = 1, 2, 3, 4
_TUPLE_EXT = ExtType(_TUPLE, b"")
_TUPLE_MARK = object()  # what the tuple ext decodes to before list_hook folds the array into a tuple
_KEY_TYPES = frozenset({str, int, float, bool, type(None), bytes})
_CONTAINERS = frozenset({dict, list, tuple})
_NP_KINDS = "biufcmMSU"  # plain fixed-size dtypes; object and void/structured ones are refused
_NP_DTYPE = re.compile(r"[<>|](?:[biufc]\d{1,2}|[mM]8(?:\[\d*[A-Za-z]{1,2}\])?|[SU]\d{1,9})")
_ZEROS = bytes(ALIGN)
_DECODE_ERRORS = (
    ValueError,
    TypeError,
    KeyError,
    IndexError,
    OverflowError,
    RecursionError,
    RuntimeError,
    ImportError,
    struct.error,
    msgpack.UnpackException,
)


@dataclass(frozen=True)
class DecodeLimits:
    """Bounds a decoded frame must respect; anything beyond them raises :class:`SerializationError`."""

    max_depth: int = 64
    max_frame_bytes: int = 16 << 30
    max_meta_bytes: int = 64 << 20
    max_items: int = 1_000_000  # length of one array or map
    max_containers: int = 1 << 20  # arrays, maps and tuples in one frame (an empty one costs ~70x its byte)
    max_buffers: int = 100_000
    max_ndim: int = 32


class SerializedPayload:
    """An encoded frame of ``nbytes`` bytes whose tensor/array bytes still live in their source objects."""

    __slots__ = ("_buffers", "_head", "nbytes")

    def __init__(self, head: bytes, buffers: list[tuple[int, int, Any, _BufferIO]], nbytes: int) -> None:
        self.nbytes = nbytes
        self._head = head
        self._buffers = buffers

    def write_into(self, dest: Any) -> int:
        """Write the frame into ``dest[:nbytes]``, copying each tensor/array once; return ``nbytes``."""
        mv = _byte_view(dest)
        if mv.readonly:
            raise TypeError("destination buffer is read-only")
        if len(mv) < self.nbytes:
            raise ValueError(f"destination has {len(mv)} bytes, the frame needs {self.nbytes}")
        pos = len(self._head)
        mv[:pos] = self._head
        for off, nbytes, src, io in self._buffers:
            mv[pos:off] = _ZEROS[: off - pos]
            if nbytes:
                io.copy_into(mv, off, nbytes, src)
            pos = off + nbytes
        return self.nbytes

    def to_bytes(self) -> bytes:
        """Return the frame as ``bytes``; contiguous CPU tensors/arrays are copied once, straight in."""
        parts = [self._head]
        pos = len(self._head)
        for off, nbytes, src, io in self._buffers:
            data = io.as_bytes(src)
            if data is None:  # no flat byte view without numpy: go through one bytearray instead
                out = bytearray(self.nbytes)
                self.write_into(out)
                return bytes(out)
            parts += (_ZEROS[: off - pos], data)
            pos = off + nbytes
        return b"".join(parts)


class OmniSerde:
    """msgpack serializer for plain values, tuples, torch tensors and numpy arrays; thread-safe."""

    def __init__(self, limits: DecodeLimits | None = None) -> None:
        self.limits = limits or DecodeLimits()

    def prepare(self, obj: Any) -> SerializedPayload:
        """Encode ``obj``'s structure; tensor/array bytes are copied later, by ``write_into``."""
        enc = _Encoder()
        packer = msgpack.Packer(default=enc.default, use_bin_type=True, strict_types=True)
        try:
            meta = packer.pack(obj)
        except TypeError as exc:
            if enc.bad is None:
                raise
            raise TypeError(f"{exc} at {_locate(obj, enc.bad)}") from None
        except ValueError as exc:  # msgpack's nesting limit, hit by deep or self-referencing structures
            raise ValueError(f"cannot serialize payload: {exc} (nested too deeply or self-referencing)") from None
        if enc.hashable_seen and (problem := _scan(obj, sys.maxsize)):
            message, key = problem
            raise TypeError(f"{message} at {_locate(obj, key)}")
        limits = self.limits
        if len(meta) > limits.max_meta_bytes or len(enc.buffers) > limits.max_buffers:
            raise ValueError(f"payload too large: {len(meta)} meta bytes, {len(enc.buffers)} tensors/arrays")
        if not enc.buffers:  # the common small message: header and meta only
            nbytes = _HEADER.size + len(meta)
            return SerializedPayload(_HEADER.pack(MAGIC, len(meta), 0, nbytes) + meta, [], nbytes)
        pos = _HEADER.size + 16 * len(enc.buffers) + len(meta)
        table: list[int] = []
        placed = []
        for src, nbytes, io in enc.buffers:
            off = -(-pos // ALIGN) * ALIGN
            table += (off, nbytes)
            placed.append((off, nbytes, src, io))
            pos = off + nbytes
        if pos > limits.max_frame_bytes:
            raise ValueError(f"payload too large: frame of {pos} bytes exceeds {limits.max_frame_bytes}")
        head = _HEADER.pack(MAGIC, len(meta), len(placed), pos)
        if table:
            head += struct.pack(f"<{len(table)}Q", *table)
        return SerializedPayload(head + meta, placed, pos)

    def serialize(self, obj: Any) -> bytes:
        """Encode ``obj`` into one frame."""
        return self.prepare(obj).to_bytes()

    def deserialize(self, data: Any, *, zero_copy: bool = False, device: str | None = None) -> Any:
        """Decode a frame from any buffer.

        With ``zero_copy`` tensors and arrays are views into ``data`` (keep it alive; they are read-only
        when ``data`` is); otherwise they own writable memory.  Tensors land on ``device`` (default CPU).
        """
        mv = _byte_view(data)
        try:
            return self._decode(mv, zero_copy, device)
        except SerializationError:
            raise
        except msgpack.StackError as exc:
            raise SerializationError(f"nesting deeper than {self.limits.max_depth}") from exc
        except _DECODE_ERRORS as exc:
            raise SerializationError(f"corrupt frame: {type(exc).__name__}: {exc}") from exc

    def _decode(self, mv: memoryview, zero_copy: bool, device: str | None) -> Any:
        limits = self.limits
        if len(mv) < _HEADER.size:
            raise SerializationError(f"truncated frame: header needs {_HEADER.size} bytes, {len(mv)} available")
        magic, meta_len, n_buffers, frame_len = _HEADER.unpack_from(mv)
        if magic != MAGIC:
            raise SerializationError(f"bad magic {magic!r}, expected {MAGIC!r}")
        if meta_len > limits.max_meta_bytes or n_buffers > limits.max_buffers or frame_len > limits.max_frame_bytes:
            raise SerializationError(
                f"frame exceeds limits: {meta_len} meta bytes, {n_buffers} buffers, {frame_len} bytes ({limits})"
            )
        if frame_len > len(mv):
            raise SerializationError(f"truncated frame: header says {frame_len} bytes, {len(mv)} available")
        meta_start = _HEADER.size + 16 * n_buffers
        pos = meta_start + meta_len
        if pos > frame_len:
            raise SerializationError(f"truncated frame: meta ends at byte {pos}, frame has {frame_len}")
        meta = mv[meta_start:pos]
        if not n_buffers and _plain_decode_is_bounded(meta, limits):
            try:
                return msgpack.unpackb(
                    meta,
                    ext_hook=_no_ext,
                    strict_map_key=False,
                    max_array_len=limits.max_items,
                    max_map_len=limits.max_items,
                )
            except _ExtFound:
                pass  # tuples or numpy scalars: decoded below, with the hooks that rebuild and check them
        table = _buffer_table(mv, n_buffers, pos, frame_len) if n_buffers else []
        dec = _Decoder(mv, table, zero_copy, device, limits)
        tree = msgpack.unpackb(
            meta,
            ext_hook=dec.ext_hook,
            list_hook=dec.list_hook,
            object_hook=dec.object_hook,
            strict_map_key=False,
            max_array_len=limits.max_items,
            max_map_len=limits.max_items,
        )
        if dec.tuple_marks:
            raise SerializationError("tuple marker outside the first slot of an array")
        if 0 in dec.used:
            raise SerializationError(f"buffer {dec.used.index(0)} is never referenced")
        if dec.containers > limits.max_depth and (problem := _scan(tree, limits.max_depth)):
            raise SerializationError(problem[0])
        return tree


#: msgpack's first byte of every array and map (fixarray, fixmap, array 16/32, map 16/32).
_CONTAINER_BYTES = bytes([*range(0x80, 0xA0), 0xDC, 0xDD, 0xDE, 0xDF])


class _ExtFound(Exception):
    """Raised by the plain decode on the first ext type: the frame needs the full decode."""


def _no_ext(code: int, data: bytes) -> Any:
    raise _ExtFound


def _plain_decode_is_bounded(meta: memoryview, limits: DecodeLimits) -> bool:
    """Whether decoding ``meta`` without hooks must stay within the container and depth limits.

    Each array or map takes at least one byte of the meta section, and its first byte is one of
    ``_CONTAINER_BYTES``: the meta's length bounds how many there are, and its count of those bytes
    bounds how deep they nest.  Without ext types (the plain decode stops at the first), nothing
    else can be a container or a map key of a forbidden type (an array key is unhashable: an error).
    """
    if len(meta) > limits.max_containers:
        return False
    raw = bytes(meta)
    return len(raw) - len(raw.translate(None, _CONTAINER_BYTES)) <= limits.max_depth


class _Encoder:
    """Per-call msgpack ``default`` hook: collects tensors/arrays as out-of-band buffers."""

    __slots__ = ("bad", "buffers", "hashable_seen")

    def __init__(self) -> None:
        self.buffers: list[tuple[Any, int, _BufferIO]] = []
        self.bad: Any = None  # the unsupported object, to name its path in the error
        self.hashable_seen = False  # met a tuple/tensor/numpy scalar, which could sit in a dict key

    def default(self, obj: Any) -> Any:
        t = type(obj)
        if t is tuple:
            self.hashable_seen = True
            return [_TUPLE_EXT, *obj]
        torch = sys.modules.get("torch")  # a tensor cannot exist unless torch is imported
        if torch is not None and isinstance(obj, torch.Tensor):
            if obj.layout is not torch.strided or obj.is_quantized or obj.is_meta or obj.is_nested:
                self.bad = obj
                raise TypeError(f"cannot serialize {obj.layout} tensor (quantized={obj.is_quantized}, {obj.device})")
            self.hashable_seen = True
            src = obj.detach().resolve_conj().resolve_neg()
            return self._buffer(_TENSOR, _torch_dtype_name(src.dtype), src, src.numel() * src.element_size(), _TensorIO)
        np = sys.modules.get("numpy")
        if np is not None and isinstance(obj, np.generic) and obj.dtype.kind in _NP_KINDS:
            self.hashable_seen = True
            return ExtType(_NPSCALAR, msgpack.packb([obj.dtype.str, obj.tobytes()]))
        if np is not None and t is np.ndarray and obj.dtype.kind in _NP_KINDS and obj.dtype.itemsize:
            return self._buffer(_NDARRAY, obj.dtype.str, obj, obj.nbytes, _NdarrayIO)
        self.bad = obj
        if t is int:
            raise TypeError(f"int {obj} is outside the 64-bit range")
        detail = f" with dtype {obj.dtype}" if np is not None and t is np.ndarray else ""
        raise TypeError(f"cannot serialize object of type {_type_name(t)}{detail}")

    def _buffer(self, code: int, dtype_name: str, src: Any, nbytes: int, io: _BufferIO) -> ExtType:
        self.buffers.append((src, nbytes, io))
        return ExtType(code, msgpack.packb([dtype_name, list(src.shape), len(self.buffers) - 1]))


class _Decoder:
    """Per-call msgpack hooks: rebuild tuples, tensors and arrays; count containers; check keys."""

    __slots__ = (
        "containers", "device", "max_containers", "max_ndim", "mv", "table", "tuple_marks", "used", "zero_copy",
    )  # fmt: skip

    def __init__(
        self, mv: memoryview, table: list[tuple[int, int]], zero_copy: bool, device: str | None, limits: DecodeLimits
    ) -> None:
        self.mv = mv
        self.table = table
        self.used = bytearray(len(table))
        self.zero_copy = zero_copy
        self.device = device
        self.max_ndim = limits.max_ndim
        self.max_containers = limits.max_containers
        self.containers = 0
        self.tuple_marks = 0

    def _count_container(self) -> None:
        self.containers += 1
        if self.containers > self.max_containers:
            raise SerializationError(f"more than {self.max_containers} arrays/maps/tuples in one frame")

    def list_hook(self, items: list) -> list | tuple:
        self._count_container()
        if items and items[0] is _TUPLE_MARK:
            self.tuple_marks -= 1
            return tuple(items[1:])
        return items

    def object_hook(self, obj: dict) -> dict:
        self._count_container()
        if not _KEY_TYPES.issuperset(map(type, obj)):
            key = next(k for k in obj if type(k) not in _KEY_TYPES)
            raise SerializationError(f"map key of type {_type_name(type(key))} is not allowed")
        return obj

    def ext_hook(self, code: int, data: bytes) -> Any:
        if code == _TUPLE and not data:
            self.tuple_marks += 1
            return _TUPLE_MARK
        if code == _TENSOR:
            return self._tensor(*_fields(data, 3))
        if code == _NDARRAY:
            return self._ndarray(*_fields(data, 3))
        if code == _NPSCALAR:
            dtype_str, raw = _fields(data, 2)
            np, dtype = _np_dtype(dtype_str)
            if type(raw) is not bytes or len(raw) != dtype.itemsize:
                raise SerializationError(f"numpy scalar of {dtype} needs {dtype.itemsize} bytes, got {raw!r:.40}")
            return np.frombuffer(raw, dtype=dtype)[0]
        raise SerializationError(f"unknown ext type {code} ({len(data)} bytes)")

    def _claim(self, index: Any, shape: Any, itemsize: int, what: str) -> tuple[int, int]:
        """Validate a buffer reference and its shape; return the buffer's ``(offset, length)``."""
        if type(index) is not int or not 0 <= index < len(self.table):
            raise SerializationError(f"buffer index {index!r} out of range (frame has {len(self.table)})")
        if self.used[index]:
            raise SerializationError(f"buffer {index} referenced twice")
        self.used[index] = 1
        if type(shape) is not list or len(shape) > self.max_ndim:
            raise SerializationError(f"bad shape {shape!r:.200} (at most {self.max_ndim} dims)")
        nbytes = itemsize
        for dim in shape:
            if type(dim) is not int or dim < 0:
                raise SerializationError(f"bad dimension {dim!r} in shape {shape!r:.200}")
            nbytes *= dim
        off, length = self.table[index]
        if nbytes != length:
            raise SerializationError(
                f"shape {tuple(shape)!r:.200} of {what} needs {nbytes} bytes, buffer {index} has {length}"
            )
        return off, length

    def _tensor(self, name: Any, shape: Any, index: Any) -> Any:
        torch, dtypes, _ = _torch()
        dtype = dtypes.get(name) if type(name) is str else None
        if dtype is None:
            raise SerializationError(f"unknown torch dtype {name!r:.100}")
        off, nbytes = self._claim(index, shape, dtype.itemsize, name)
        if nbytes:
            raw = torch.frombuffer(self.mv, dtype=torch.uint8, count=nbytes, offset=off)
        else:
            raw = torch.empty(0, dtype=torch.uint8)
        copy = not self.zero_copy or raw.data_ptr() % dtype.itemsize != 0  # misaligned views get a copy
        if copy and self.device in (None, "cpu") and nbytes >= _NUMPY_COPY_MIN and _has_numpy():
            # into reused (warm) numpy memory: a copy into fresh memory pays for every page it touches
            owned = private_copy(self.mv[off : off + nbytes])
            return torch.from_numpy(owned).view(dtype).view(shape)
        return raw.to(self.device or "cpu", copy=copy).view(dtype).view(shape)

    def _ndarray(self, dtype_str: Any, shape: Any, index: Any) -> Any:
        _, dtype = _np_dtype(dtype_str)
        off, nbytes = self._claim(index, shape, dtype.itemsize, dtype_str)
        arr = _numpy().frombuffer(self.mv, dtype=dtype, count=nbytes // dtype.itemsize, offset=off).reshape(shape)
        if self.zero_copy and arr.flags.aligned:
            return arr
        if nbytes >= _NUMPY_COPY_MIN:
            return private_copy(self.mv[off : off + nbytes]).view(dtype).reshape(shape)
        return arr.copy()


def _buffer_table(mv: memoryview, n_buffers: int, pos: int, frame_len: int) -> list[tuple[int, int]]:
    """Read and check the table: buffers 64-aligned, in order, after the meta ``pos`` and within the frame."""
    flat = struct.unpack_from(f"<{2 * n_buffers}Q", mv, _HEADER.size)
    table = list(zip(flat[::2], flat[1::2], strict=True))
    for i, (off, length) in enumerate(table):
        if off % ALIGN or off < pos or off + length > frame_len:
            raise SerializationError(
                f"buffer {i} [{off}, {length}] out of bounds or misaligned (data from {pos} to {frame_len})"
            )
        pos = off + length
    return table


def _fields(data: bytes, n: int) -> list:
    fields = msgpack.unpackb(data)
    if type(fields) is not list or len(fields) != n:
        raise SerializationError(f"malformed ext payload {data!r:.60}")
    return fields


def _byte_view(buf: Any) -> memoryview:
    mv = memoryview(buf)
    return mv if mv.format == "B" and mv.ndim == 1 else mv.cast("B")


class _TensorIO:
    """How a torch tensor's bytes get into a frame."""

    @staticmethod
    def copy_into(mv: memoryview, off: int, nbytes: int, src: Any) -> None:
        """Copy ``src`` (any strides, any device) into ``mv[off:off+nbytes]`` as C-contiguous bytes."""
        torch, _, carriers = _torch()
        # reinterpret both sides as a same-size integer type: copy_ then works for every dtype (float8, bits, ...)
        carrier = carriers.get(src.element_size(), src.dtype)
        dest = torch.frombuffer(mv, dtype=torch.uint8, count=nbytes, offset=off).view(carrier).view(src.shape)
        if src.device.type == "cpu" and _has_numpy():
            # numpy copies on this thread; torch's copy_ fans out to its intra-op threads, which spin-wait
            # and stall on a busy host (a 16 MiB copy took 6 ms instead of 1.4 ms with 2 threads on 2 cores)
            _numpy().copyto(dest.numpy(), src.view(carrier).numpy(), casting="no")
        else:
            dest.copy_(src.view(carrier))

    @staticmethod
    def as_bytes(src: Any) -> Any:
        """A flat byte buffer of ``src`` (no copy when contiguous on the CPU), or None without numpy."""
        if not _has_numpy():
            return None
        torch, _, carriers = _torch()
        flat = src.view(carriers.get(src.element_size(), src.dtype)).contiguous().cpu()
        return flat.reshape(-1).view(torch.uint8).numpy()


class _NdarrayIO:
    """How a numpy array's bytes get into a frame."""

    @staticmethod
    def copy_into(mv: memoryview, off: int, nbytes: int, src: Any) -> None:
        """Copy ``src`` (any strides) into ``mv[off:off+nbytes]`` as C-contiguous bytes."""
        _numpy().frombuffer(mv, dtype=src.dtype, count=src.size, offset=off).reshape(src.shape)[...] = src

    @staticmethod
    def as_bytes(src: Any) -> Any:
        """A flat byte buffer of ``src`` (no copy when C-contiguous)."""
        np = _numpy()
        return np.ascontiguousarray(src).reshape(-1).view(np.uint8)


_BufferIO = type[_TensorIO] | type[_NdarrayIO]


#: Decoded tensors and arrays at least this large are copied into reused numpy memory (see ``host_copies``).
_NUMPY_COPY_MIN = 1 << 20


def _numpy() -> Any:
    import numpy

    return numpy


@functools.cache
def _has_numpy() -> bool:
    return importlib.util.find_spec("numpy") is not None


def _np_dtype(dtype_str: Any) -> tuple[Any, Any]:
    """Return numpy and the dtype named by a whitelisted ``dtype.str`` such as ``'<f4'``."""
    if type(dtype_str) is not str or not _NP_DTYPE.fullmatch(dtype_str):
        raise SerializationError(f"unknown numpy dtype {dtype_str!r:.100}")
    np = _numpy()
    dtype = np.dtype(dtype_str)
    if dtype.kind not in _NP_KINDS or not dtype.itemsize:
        raise SerializationError(f"unsupported numpy dtype {dtype_str!r}")
    return np, dtype


def _torch_dtype_name(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


@functools.cache
def _torch() -> tuple[Any, dict[str, Any], dict[int, Any]]:
    """Import torch; return it, the decodable dtypes by name and same-size integer dtypes by itemsize."""
    import torch

    dtypes = {
        _torch_dtype_name(d): d
        for d in vars(torch).values()
        if isinstance(d, torch.dtype) and not _torch_dtype_name(d).startswith(("qint", "quint"))
    }
    carriers = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}
    with warnings.catch_warnings():  # torch warns once per process about read-only buffers: spend it here
        warnings.simplefilter("ignore")
        torch.frombuffer(b"\0", dtype=torch.uint8)
    return torch, dtypes, carriers


def _scan(root: Any, max_depth: int) -> tuple[str, Any] | None:
    """Breadth-first, without recursion: return ``(problem, culprit)`` for a bad dict key or too deep nesting."""
    level = [root] if type(root) in _CONTAINERS else []
    depth = 0
    is_container = _CONTAINERS.__contains__
    while level:
        depth += 1
        if depth > max_depth:
            return f"nesting deeper than {max_depth}", level[0]
        deeper: list = []
        for node in level:
            if type(node) is dict:
                if not _KEY_TYPES.issuperset(map(type, node)):
                    key = next(k for k in node if type(k) not in _KEY_TYPES)
                    return f"dict key of type {_type_name(type(key))} is not supported", key
                node = node.values()
            if not _CONTAINERS.isdisjoint(map(type, node)):
                deeper += compress(node, map(is_container, map(type, node)))
        level = deeper
    return None


def _locate(root: Any, target: Any) -> str:
    """Return the path, e.g. ``payload['a'][2]``, of ``target`` (by identity) within ``root``."""
    stack = [("payload", root)]
    seen: set[int] = set()
    while stack:
        path, node = stack.pop()
        if node is target:
            return path
        if type(node) not in _CONTAINERS or id(node) in seen:
            continue
        seen.add(id(node))
        if type(node) is dict:
            for key in node:
                if key is target:
                    return f"key {key!r:.100} of {path}"
            children = [(f"{path}[{key!r:.100}]", value) for key, value in node.items()]
        else:
            children = [(f"{path}[{i}]", value) for i, value in enumerate(node)]
        stack += reversed(children)
    return "payload"


def _type_name(t: type) -> str:
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


OmniSerializer = OmniSerde()
serialize_obj = OmniSerializer.serialize
deserialize_obj = OmniSerializer.deserialize
