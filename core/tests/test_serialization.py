"""OmniSerializer: exact round-trips, zero-copy views, type errors and hostile-frame handling."""

from __future__ import annotations

import dataclasses
import mmap
import random
import struct
import subprocess
import sys
import threading
import time
import warnings
from collections import OrderedDict
from typing import Any

import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omni_core.errors import SerializationError
from omni_core.serialization import (
    DecodeLimits,
    OmniSerde,
    OmniSerializer,
    SerializedPayload,
    deserialize_obj,
    serialize_obj,
)

S = OmniSerializer
HEADER = struct.Struct("<4sIIQ")  # magic, meta_len, n_buffers, frame_len (see the module docstring)

TORCH_DTYPES = sorted(
    {
        d
        for d in vars(torch).values()
        if isinstance(d, torch.dtype) and not str(d).startswith(("torch.qint", "torch.quint"))
    },
    key=str,
)
NUMPY_DTYPES = [
    "?", "i1", "i2", "i4", "i8", "u1", "u2", "u4", "u8", "f2", "f4", "f8", "g", "c8", "c16",
    ">i4", ">f8", "M8[ns]", "m8[s]", "S5", "U3",
]  # fmt: skip
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def bits(t: torch.Tensor) -> torch.Tensor:
    """The tensor's bit pattern as a same-shape integer tensor (works for every dtype and any strides)."""
    if t.element_size() == 16:
        t = torch.view_as_real(t)
    return t.view(_INT_OF_SIZE[t.element_size()])


def random_tensor(dtype: torch.dtype, rows: int = 3, row_bytes: int = 64) -> torch.Tensor:
    raw = torch.randint(0, 256, (rows, row_bytes), dtype=torch.uint8)
    if dtype == torch.bool:
        raw = raw % 2
    return raw.view(dtype)


def assert_same(a: Any, b: Any) -> None:
    """Same type and value, recursively; tensors and arrays compared bit for bit."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device)
        assert torch.equal(bits(a.cpu()), bits(b.cpu()))
    elif isinstance(a, np.ndarray):
        assert (a.dtype, a.shape) == (b.dtype, b.shape)
        assert np.ascontiguousarray(a).tobytes() == np.ascontiguousarray(b).tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            assert type(key) is type(next(k for k in b if k == key))
            assert_same(a[key], b[key])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    else:
        assert a == b or (a != a and b != b)  # NaN


def roundtrip(obj: Any, **kwargs: Any) -> Any:
    data = S.serialize(obj)
    assert S.prepare(obj).nbytes == len(data)
    out = S.deserialize(data, **kwargs)
    assert_same(obj, out)
    return out


def frame(meta: bytes, buffers: list[bytes] = (), *, offsets: list[int] | None = None) -> bytes:
    """Hand-build a frame from a raw meta and buffers (64-aligned unless ``offsets`` is given)."""
    meta_end = HEADER.size + 16 * len(buffers) + len(meta)
    table, pos = [], meta_end
    for i, buf in enumerate(buffers):
        off = offsets[i] if offsets else -(-pos // 64) * 64
        table.append((off, len(buf)))
        pos = off + len(buf)
    out = bytearray(max(pos, meta_end))
    for (off, _), buf in zip(table, buffers, strict=True):
        out[off : off + len(buf)] = buf
    out[:meta_end] = b"".join(
        [HEADER.pack(b"OMS1", len(meta), len(buffers), len(out)), *(struct.pack("<QQ", *e) for e in table), meta]
    )
    return bytes(out)


def tensor_ext(dtype: Any, shape: Any, index: Any) -> msgpack.ExtType:
    return msgpack.ExtType(2, msgpack.packb([dtype, shape, index]))


# -- plain values ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "obj",
    [
        None, True, False, 0, -1, 2**63 - 1, -(2**63), 2**64 - 1, 1.5, -0.0, float("inf"), float("nan"),
        "", "héllo ✓", b"", b"\x00\xff", [], (), (1,), [1, (2, [3, (4, ())])], {"a": {"b": (1, [2.5, None])}},
        {1: "one", -2: "minus two", 2**40: "big"}, {1.5: 1, None: 2, b"k": 3, "s": 4}, {True: "t", False: "f"},
        ((),), [[], {}, ()], {"__tensor__": True, "dtype": "float32", "shape": [2], "data": b"\x00" * 8},
        {"__tuple__": [1, 2]},
    ],
)  # fmt: skip
def test_plain_values_roundtrip_exactly(obj: Any) -> None:
    roundtrip(obj)


def test_bytes_like_encode_as_bytes() -> None:
    out = S.deserialize(S.serialize([bytearray(b"ab"), memoryview(b"cd")]))
    assert out == [b"ab", b"cd"] and all(type(x) is bytes for x in out)


def test_tuples_nested_in_lists_in_dicts() -> None:
    obj = {"a": [(1, (2, [3, (4,)])), ("x", b"y")], 7: ((),)}
    out = roundtrip(obj)
    assert type(out["a"][0][1]) is tuple and type(out["a"][0][1][1]) is list and out[7] == ((),)


def test_module_level_helpers_and_base_class_share_the_format() -> None:
    from omni_core.base import OmniConnectorBase

    obj = {"t": torch.arange(4), "x": (1, 2)}
    data = serialize_obj(obj)
    assert_same(obj, deserialize_obj(data))
    assert_same(obj, OmniConnectorBase.deserialize_obj(OmniConnectorBase.serialize_obj(obj)))


# -- torch ---------------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:ComplexHalf support is experimental")
@pytest.mark.parametrize("dtype", TORCH_DTYPES, ids=str)
def test_every_torch_dtype_roundtrips(dtype: torch.dtype) -> None:
    t = random_tensor(dtype)
    roundtrip(t)
    roundtrip({"t": t.t(), "s": t[:, ::2], "z": t[1, 1], "e": t[:0]})


@pytest.mark.parametrize("shape", [(), (0,), (3, 0, 2), (0, 5), (1,), (2, 3, 4)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.complex128, torch.bool])
def test_zero_dim_empty_and_regular_shapes(shape: tuple[int, ...], dtype: torch.dtype) -> None:
    out = roundtrip(torch.ones(shape, dtype=dtype))
    assert out.is_contiguous() and out.shape == shape


def test_non_contiguous_tensors_decode_contiguous() -> None:
    base = torch.randn(6, 8, 4)
    for t in (base.transpose(0, 2), base[::2, 1::3], base[:, :, 1], base.expand(2, 6, 8, 4), base.conj()):
        out = roundtrip(t)
        assert out.is_contiguous()
    z = torch.randn(3, 4, dtype=torch.complex64)
    assert torch.equal(S.deserialize(S.serialize(z.conj())), z.conj().resolve_conj())


def test_requires_grad_tensors_are_detached() -> None:
    p = torch.nn.Parameter(torch.randn(3, 3))
    out = S.deserialize(S.serialize({"w": p, "y": p * 2}))
    assert not out["w"].requires_grad and torch.equal(out["w"], p.detach())
    assert type(out["w"]) is torch.Tensor and torch.equal(out["y"], (p * 2).detach())


def test_tensor_decoded_to_device_cpu() -> None:
    out = S.deserialize(S.serialize(torch.arange(5)), device="cpu")
    assert out.device.type == "cpu" and torch.equal(out, torch.arange(5))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_tensors() -> None:
    t = torch.randn(64, 32, device="cuda").t()
    payload = S.prepare({"t": t})
    dest = bytearray(payload.nbytes)
    payload.write_into(dest)
    assert torch.equal(S.deserialize(dest)["t"], t.cpu())
    assert torch.equal(S.deserialize(S.serialize(t), device="cuda:0"), t)
    assert S.deserialize(dest, zero_copy=True, device="cuda")["t"].is_cuda


# -- numpy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", NUMPY_DTYPES)
def test_every_numpy_dtype_roundtrips(dtype: str) -> None:
    a = np.frombuffer(np.random.default_rng(0).bytes(np.dtype(dtype).itemsize * 24), dtype=dtype).reshape(4, 6)
    if np.dtype(dtype).kind == "b":
        a = a.view(np.uint8) % 2 == 1
    out = roundtrip({"a": a, "t": a.T, "s": a[::2, 1::2], "z": a[0, 0, ...], "e": a[:0]})
    assert out["a"].dtype == np.dtype(dtype) and out["t"].flags.c_contiguous and out["a"].flags.writeable
    assert out["z"].shape == ()


def test_numpy_scalars_roundtrip_with_their_type() -> None:
    roundtrip([np.float32(1.5), np.float64(2.5), np.int64(-3), np.uint8(7), np.bool_(True), np.complex64(1j)])
    roundtrip([np.str_("hé"), np.bytes_(b"ab"), np.datetime64("2024-01-02", "D"), np.float16(np.nan)])


# -- zero copy -----------------------------------------------------------------------------------


def test_zero_copy_views_share_memory_with_the_source() -> None:
    t = torch.arange(16, dtype=torch.float32)
    a = np.arange(8, dtype=np.int64)
    data = bytearray(S.serialize({"t": t, "a": a}))
    out = S.deserialize(data, zero_copy=True)
    at = data.find(t.numpy().tobytes())
    data[at : at + 4] = struct.pack("<f", 42.0)
    assert out["t"][0].item() == 42.0
    assert np.shares_memory(out["a"], np.frombuffer(data, dtype=np.uint8))
    out["a"][1] = 99
    assert S.deserialize(data)["a"][1] == 99


def test_copies_are_independent_and_writable() -> None:
    data = bytearray(S.serialize({"t": torch.arange(4.0), "a": np.arange(4.0)}))
    out = S.deserialize(data)
    data[:] = bytes(len(data))
    assert out["t"].tolist() == [0.0, 1.0, 2.0, 3.0] and out["a"].tolist() == [0.0, 1.0, 2.0, 3.0]
    out["t"] += 1
    out["a"] += 1
    assert out["a"].flags.writeable and out["a"].flags.owndata


def test_zero_copy_from_read_only_source() -> None:
    data = S.serialize({"t": torch.arange(4.0), "a": np.arange(4.0)})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = S.deserialize(data, zero_copy=True)
        out2 = S.deserialize(mmap_of(data), zero_copy=True)
    assert not out["a"].flags.writeable and out["t"].tolist() == [0.0, 1.0, 2.0, 3.0]
    assert out2["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


def mmap_of(data: bytes) -> mmap.mmap:
    m = mmap.mmap(-1, len(data) + 4096)  # page-rounded, like a shared-memory segment
    m[: len(data)] = data
    return m


def test_misaligned_source_still_decodes() -> None:
    data = S.serialize(torch.arange(8, dtype=torch.float64))
    shifted = memoryview(bytearray(b"x" + data))[1:]
    assert torch.equal(S.deserialize(shifted, zero_copy=True), torch.arange(8, dtype=torch.float64))


# -- prepare / write_into ------------------------------------------------------------------------


def test_prepare_write_into_larger_buffers() -> None:
    obj = {"t": torch.randn(5, 7).t(), "a": np.arange(10)[::3], "x": [1, "two", (3.0,)]}
    payload = S.prepare(obj)
    assert isinstance(payload, SerializedPayload) and payload.nbytes == len(S.serialize(obj))
    dest = bytearray(b"\xee" * (payload.nbytes + 100))
    assert payload.write_into(dest) == payload.nbytes
    assert dest[payload.nbytes :] == b"\xee" * 100 and bytes(dest[: payload.nbytes]) == S.serialize(obj)
    assert_same(obj, S.deserialize(dest))  # bytes past the frame are ignored
    m = mmap.mmap(-1, payload.nbytes + 10)
    payload.write_into(m)
    assert_same(obj, S.deserialize(m))
    with pytest.raises(ValueError, match="needs"):
        payload.write_into(bytearray(payload.nbytes - 1))
    with pytest.raises(TypeError, match="read-only"):
        payload.write_into(bytes(payload.nbytes))


def test_frames_without_tensors_have_no_padding() -> None:
    assert len(S.serialize(None)) == HEADER.size + 1


def test_serializer_is_thread_safe() -> None:
    errors: list[BaseException] = []

    def work(seed: int) -> None:
        try:
            for i in range(200):
                obj = {"seed": seed, "i": i, "t": torch.full((3,), float(i)), "tup": (seed, (i,))}
                assert_same(obj, S.deserialize(S.serialize(obj)))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors


# -- unsupported values ---------------------------------------------------------------------------


@dataclasses.dataclass
class Point:
    x: int


@pytest.mark.parametrize(
    ("obj", "match"),
    [
        ({1, 2}, r"type set at payload$"),
        (object(), r"type object"),
        ({"a": [1, 2, {3}]}, r"type set at payload\['a'\]\[2\]"),
        ([Point(1)], r"test_serialization\.Point at payload\[0\]"),
        ({"n": 2**64}, r"int 18446744073709551616 .*64-bit.* at payload\['n'\]"),
        (-(2**63) - 1, r"64-bit"),
        (np.array([None, 1]), r"numpy\.ndarray with dtype object"),
        (np.zeros(2, dtype="i4,f4"), r"numpy\.ndarray with dtype"),
        ({(1, 2): "x"}, r"dict key of type tuple .* at key \(1, 2\) of payload"),
        ({"a": {frozenset(): 1}}, r"frozenset"),
        ({"t": {torch.ones(1): 1}}, r"dict key of type torch\.Tensor"),
        (OrderedDict(a=1), r"OrderedDict"),
        (torch.ones(2).to_sparse(), r"sparse"),
        (torch.ones(2, device="meta"), r"meta"),
        (np.ma.masked_array([1, 2]), r"MaskedArray"),
    ],
)
def test_unsupported_values_raise_type_error_naming_type_and_path(obj: Any, match: str) -> None:
    with pytest.raises(TypeError, match=match):
        S.serialize(obj)


def test_self_referencing_payload_raises() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="self-referencing"):
        S.serialize(loop)


# -- hostile / corrupt frames --------------------------------------------------------------------


HOSTILE_FRAMES = [
    (b"", "truncated frame: header needs 20 bytes, 0 available"),
    (b"XXXX" + bytes(16), "bad magic"),
    (HEADER.pack(b"OMS1", 1, 0, 120) + b"\xc0", "truncated frame: header says 120 bytes, 21 available"),
    (HEADER.pack(b"OMS1", 5, 0, 21) + b"\xc0", "meta ends at byte 25"),
    (HEADER.pack(b"OMS1", 1, 10**6, 21) + b"\xc0", "exceeds limits"),
    (frame(b"\xc1"), "corrupt frame"),
    (frame(b"\x92\x01"), "corrupt frame"),
    (frame(msgpack.packb([1, 2]) + b"\x01"), "corrupt frame"),
    (frame(msgpack.packb("\udcff", unicode_errors="surrogatepass")), "corrupt frame"),
    (frame(msgpack.packb(msgpack.ExtType(9, b"x"))), "unknown ext type 9"),
    (frame(msgpack.packb(tensor_ext("foo", [2], 0)), [bytes(8)]), "unknown torch dtype 'foo'"),
    (frame(msgpack.packb(tensor_ext("__class__", [2], 0)), [bytes(8)]), "unknown torch dtype"),
    (frame(msgpack.packb(tensor_ext("qint8", [2], 0)), [bytes(2)]), "unknown torch dtype"),
    (frame(msgpack.packb(tensor_ext("float32", [3, 4], 0)), [bytes(40)]), r"shape \(3, 4\) of float32 needs 48"),
    (frame(msgpack.packb(tensor_ext("float32", [10**12], 0)), [bytes(40)]), "needs 4000000000000 bytes"),
    (frame(msgpack.packb(tensor_ext("float32", [-1], 0)), [bytes(4)]), "bad dimension -1"),
    (frame(msgpack.packb(tensor_ext("float32", [True], 0)), [bytes(4)]), "bad dimension True"),
    (frame(msgpack.packb(tensor_ext("float32", [1] * 33, 0)), [bytes(4)]), "bad shape"),
    (frame(msgpack.packb(tensor_ext("float32", [1], 1)), [bytes(4)]), "buffer index 1 out of range"),
    (frame(msgpack.packb(tensor_ext("float32", [1], 0)), [bytes(4)], offsets=[90]), r"buffer 0 \[90, 4\]"),
    (frame(msgpack.packb(tensor_ext("float32", [1], 0)), [bytes(4)], offsets=[0]), "out of bounds"),
    (frame(msgpack.packb([tensor_ext("int8", [1], 0)] * 2), [bytes(1)]), "buffer 0 referenced twice"),
    (frame(msgpack.packb(None), [bytes(1)]), "buffer 0 is never referenced"),
    (frame(msgpack.packb(msgpack.ExtType(2, b"\x01"))), "malformed ext payload"),
    (frame(msgpack.packb(msgpack.ExtType(3, msgpack.packb(["|O8", [1], 0]))), [bytes(8)]), "numpy dtype"),
    (frame(msgpack.packb(msgpack.ExtType(3, msgpack.packb(["<f4", [3], 0]))), [bytes(8)]), "needs 12 bytes"),
    (frame(msgpack.packb(msgpack.ExtType(4, msgpack.packb(["<f8", b"ab"])))), "needs 8 bytes"),
    (frame(msgpack.packb([1, msgpack.ExtType(1, b"")])), "tuple marker"),
    (frame(msgpack.packb({"k": msgpack.ExtType(1, b"")})), "tuple marker"),
    (frame(b"\x81" + msgpack.packb([msgpack.ExtType(1, b""), 1]) + b"\x01"), "map key of type tuple"),
    (frame(b"\x81" + msgpack.packb(tensor_ext("int8", [1], 0)) + b"\x01", [b"x"]), "map key of type torch"),
    (frame(b"\x91" * 65 + b"\xc0"), "nesting deeper than 64"),
    (frame(b"\x81\xa1k" * 65 + b"\xc0"), "nesting deeper than 64"),
    (frame(b"\x91" * 10_000 + b"\xc0"), "nesting deeper than 64"),
    (frame(b"\xdd\xff\xff\xff\xff"), "exceeds max_array_len"),
]


@pytest.mark.parametrize(("data", "match"), HOSTILE_FRAMES, ids=[match for _, match in HOSTILE_FRAMES])
def test_hostile_frames_raise_serialization_error(data: bytes, match: str) -> None:
    with pytest.raises(SerializationError, match=match):
        S.deserialize(data)


def test_nesting_up_to_the_limit_decodes() -> None:
    nested: Any = None
    for _ in range(64):
        nested = [nested]
    assert S.deserialize(S.serialize(nested)) == nested
    with pytest.raises(SerializationError, match="nesting deeper than 3"):
        OmniSerde(DecodeLimits(max_depth=3)).deserialize(S.serialize([[[[1]]]]))
    assert OmniSerde(DecodeLimits(max_depth=3)).deserialize(S.serialize([[(1,)], [[2]], {"a": [3]}])) is not None


def test_custom_limits() -> None:
    small = OmniSerde(DecodeLimits(max_items=3, max_buffers=1, max_ndim=2, max_meta_bytes=100, max_frame_bytes=500))
    with pytest.raises(SerializationError, match="max_array_len"):
        small.deserialize(S.serialize([1, 2, 3, 4]))
    with pytest.raises(SerializationError, match="exceeds limits"):
        small.deserialize(S.serialize([torch.ones(1), torch.ones(1)]))
    with pytest.raises(SerializationError, match="bad shape"):
        small.deserialize(S.serialize(torch.ones(1, 1, 1)))
    with pytest.raises(SerializationError, match="exceeds limits"):
        small.deserialize(S.serialize("x" * 200))
    with pytest.raises(ValueError, match="payload too large"):
        small.serialize(torch.ones(200))


def test_tensor_data_read_only_needs_no_torch_warning() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        S.deserialize(S.serialize(torch.ones(3)))


# -- fuzzing -------------------------------------------------------------------------------------

FUZZ_PAYLOADS = [
    None,
    {"a": [1, 2.5, "x", b"y", None, True], 3: (4, (5,))},
    {"t": torch.arange(6, dtype=torch.float16).view(2, 3), "n": np.arange(3, dtype=np.int32), "s": np.float32(1)},
    [torch.zeros((0, 2)), torch.tensor(True), ((), [], {})],
]


def decode_or_reject(data: Any) -> None:
    try:
        S.deserialize(data)
        S.deserialize(data, zero_copy=True)
    except SerializationError:
        pass


@pytest.mark.parametrize("obj", FUZZ_PAYLOADS, ids=range(len(FUZZ_PAYLOADS)))
def test_every_truncation_and_random_mutations(obj: Any) -> None:
    data = S.serialize(obj)
    start = time.monotonic()
    for n in range(len(data)):
        with pytest.raises(SerializationError):
            S.deserialize(data[:n])
    _, meta_len, n_buffers, _ = HEADER.unpack_from(data)
    meta_start = HEADER.size + 16 * n_buffers
    rng = random.Random(1234)
    for _ in range(1500):
        mutated = bytearray(data)
        for _ in range(rng.randint(1, 4)):  # mostly hit the msgpack meta, where the parsing is
            pos = rng.randrange(meta_start, meta_start + meta_len) if rng.random() < 0.7 else rng.randrange(len(data))
            mutated[pos] = rng.randrange(256) if rng.random() < 0.8 else mutated[pos] ^ (1 << rng.randrange(8))
        decode_or_reject(mutated)
    assert time.monotonic() - start < 30


def test_random_bytes_after_a_valid_header() -> None:
    rng = random.Random(99)
    start = time.monotonic()
    for _ in range(2000):
        meta = rng.randbytes(rng.randint(0, 64))
        buffers = [rng.randbytes(rng.choice((0, 1, 4, 8))) for _ in range(rng.randint(0, 2))]
        decode_or_reject(frame(meta, buffers))
    assert time.monotonic() - start < 30


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=200))
def test_arbitrary_bytes_decode_or_raise(data: bytes) -> None:
    decode_or_reject(data)
    decode_or_reject(b"OMS1" + data)


# -- property test -------------------------------------------------------------------------------

_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=20)
)
_tensors = st.builds(
    lambda dtype, shape, seed: torch.randn(shape, generator=torch.Generator().manual_seed(seed)).to(dtype),
    st.sampled_from([torch.float32, torch.float16, torch.bfloat16, torch.int64, torch.bool]),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.integers(0, 2**31),
)
_keys = st.text(max_size=8) | st.integers(min_value=-(2**63), max_value=2**63 - 1)
payloads = st.recursive(
    _scalars | _tensors,
    lambda children: (
        st.lists(children, max_size=4)
        | st.lists(children, max_size=4).map(tuple)
        | st.dictionaries(_keys, children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payloads)
def test_nested_payloads_roundtrip(obj: Any) -> None:
    assert_same(obj, S.deserialize(S.serialize(obj)))
    assert_same(obj, S.deserialize(S.serialize(obj), zero_copy=True))


# -- import hygiene ------------------------------------------------------------------------------


def test_import_and_plain_use_do_not_import_torch_or_numpy() -> None:
    code = (
        "import sys\n"
        "from omni_core.serialization import OmniSerializer as S\n"
        "obj = {'a': [1, (2, 3)], 'b': b'x', 4: None}\n"
        "assert S.deserialize(S.serialize(obj)) == obj\n"
        "print(sorted(m for m in ('torch', 'numpy') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"
