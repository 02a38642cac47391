"""The fuzz targets: each decoder that reads bytes a peer or a user controls, and what a clear rejection is.

A target takes one input and either accepts it or raises one of its ``allowed`` error types with a message
that says what is wrong.  Anything else -- another exception type, an empty or unreadable message, a hang, a
memory blow-up -- is a finding.
"""

from __future__ import annotations

import os
import struct
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from omni_coordinator import messages
from omni_core.errors import ConfigError, SerializationError
from omni_yuanrong import te_control, te_payload

#: Longest line a rejection's message may have: longer ones echo the input instead of explaining it.
MAX_LINE_CHARS = 1000


@dataclass(frozen=True)
class Target:
    """One decoder under fuzz: how to feed it, which errors are rejections, and where its inputs start from."""

    name: str
    decode: Callable[[bytes], Any]
    allowed: tuple[type[BaseException], ...]
    seeds: Callable[[], list[bytes]]
    tokens: tuple[bytes, ...] = field(default=())
    #: Known-hostile inputs, each tried once (too big to mutate): bombs that past findings were made of.
    regressions: Callable[[], list[bytes]] = list
    #: Longest line a rejection may have; None where the input is the operator's own file (echoing it is fine).
    max_line: int | None = MAX_LINE_CHARS


class Finding(AssertionError):
    """An input the target handled badly; the message says how."""


def check(target: Target, data: bytes) -> bool:
    """Feed ``data`` to ``target``; True if accepted, False if cleanly rejected, :class:`Finding` otherwise."""
    try:
        target.decode(data)
    except target.allowed as exc:
        message = str(exc)
        longest = max(map(len, message.splitlines()), default=0)
        if not message.strip() or (target.max_line is not None and longest > target.max_line):
            what = f"{type(exc).__name__}: {message[:200]!r}"
            raise Finding(f"unclear rejection (empty, or a line of {longest} chars): {what}") from exc
        return False
    except Exception as exc:
        raise Finding(f"unexpected {type(exc).__module__}.{type(exc).__qualname__}: {str(exc)[:300]}") from exc
    return True


# -- the serializer's decoder ----------------------------------------------------------------------


def _decode_frame(data: bytes) -> Any:
    from omni_core.serialization import OmniSerializer

    # odd lengths decode as zero-copy views into a writable buffer: both paths are fuzzed
    if len(data) % 2:
        return OmniSerializer.deserialize(bytearray(data), zero_copy=True)
    return OmniSerializer.deserialize(data)


def _frame_seeds() -> list[bytes]:
    import numpy as np

    from omni_core.samples import PAYLOAD_KINDS, make_payload
    from omni_core.serialization import OmniSerializer

    seeds = [OmniSerializer.serialize(make_payload(kind)) for kind in PAYLOAD_KINDS]
    seeds += [
        OmniSerializer.serialize({"deep": [[[[[[1]]]]]], "t": (1, (2,), []), "s": np.float16(1.5), "b": b"\0" * 70}),
        OmniSerializer.serialize([np.zeros(3, dtype="<U2"), np.zeros(2, dtype="<M8[s]"), np.zeros((0, 4))]),
    ]
    return seeds


def _hostile_frames() -> list[bytes]:
    """4 MB of msgpack that decodes to 4 million empty dicts, or to 4 million uncached ints (-32)."""
    from omni_core.serialization import MAGIC

    frames = []
    for unit in (b"\x80", b"\xe0"):
        meta = b"\x94" + (b"\xdd" + struct.pack(">I", 1_000_000) + unit * 1_000_000) * 4
        frames.append(struct.pack("<4sIIQ", MAGIC, len(meta), 0, 20 + len(meta)) + meta)
    return frames


_FRAME_TOKENS = (
    b"OMS1",
    b"\xc7\x00\x01",  # the tuple marker ext
    b"\xd4\x02",
    b"\xd5\x03",
    b"\xc7\x10\x04",
    b"\xdd\xff\xff\xff\xff",
    b"\xdf\x00\x10\x00\x00",
    b"\x91" * 64,
    b"\x92\xa7float32\x90",
    b"\x93\xa3<f4\x91\xce\xff\xff\xff\xff\x00",
    b"\xa6<U9999",
    b"\xa9<M8[999Y]",
    b"\xab\x62\x66\x6c\x6f\x61\x74\x31\x36",
    b"\xff\xff\xff\xff\xff\xff\xff\x7f",
    b"\x40\x00\x00\x00\x00\x00\x00\x00",
)

SERIALIZER = Target(
    "serializer decoder (OmniSerializer.deserialize)",
    _decode_frame,
    (SerializationError,),
    _frame_seeds,
    _FRAME_TOKENS,
    _hostile_frames,
)


# -- the config loader -----------------------------------------------------------------------------

_CONFIG_DIR: list[str] = []


def _load_config(data: bytes) -> Any:
    """The first byte picks the file type (even: YAML, odd: JSON); the rest is the file, loaded from disk."""
    from omni_core import load_omni_transfer_config

    if not _CONFIG_DIR:
        _CONFIG_DIR.append(tempfile.mkdtemp(prefix="omni-fuzz-config-"))
    suffix = ".json" if data[:1] and data[0] % 2 else ".yaml"
    path = os.path.join(_CONFIG_DIR[0], "pipeline" + suffix)
    with open(path, "wb") as out:
        out.write(data[1:])
    return load_omni_transfer_config(path)


def cleanup_config_dir() -> None:
    """Remove the scratch directory the config target writes its files to."""
    import shutil

    while _CONFIG_DIR:
        shutil.rmtree(_CONFIG_DIR.pop(), ignore_errors=True)


def _config_seeds() -> list[bytes]:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    files = sorted([*root.glob("examples/*.y*ml"), *root.glob("core/tests/configs/*")])
    seeds = [(b"\x01" if f.suffix == ".json" else b"\x00") + f.read_bytes() for f in files]
    seeds.append(
        b"\x00connectors:\n  shm: &s {name: SharedMemoryConnector, extra: {namespace: fz, readers: 2}}\n"
        b"stages:\n  - {stage_id: 0, output_connectors: {to_stage_1: shm}}\n"
        b"  - {stage_id: 1, input_connectors: {from_stage_0: *s}, engine_input_source: [0]}\n"
        b"edges: [{from: 0, to: 1}]\n"
    )
    return seeds


def _hostile_configs() -> list[bytes]:
    """An alias bomb (9^9 values), a self-referring alias, 5000-digit numbers."""
    levels = [b"l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        levels.append(b"l%d: &l%d [" % (i, i) + b", ".join([b"*l%d" % (i - 1)] * 9) + b"]")
    bomb = b"\n".join(levels) + b"\nconnectors: *l8\n"
    return [
        b"\x00" + bomb,
        b"\x00a: &a [*a]\nstages: *a\n",
        b"\x00stages:\n  - stage_id: " + b"9" * 5000 + b"\n",
        b'\x01{"stages": [{"stage_id": 1, "input_connectors": {"from_stage_' + b"9" * 5000 + b'": "x"}}]}',
    ]


_CONFIG_TOKENS = (
    b"stage_id: ",
    b"stages:\n  - ",
    b"connectors:\n",
    b"runtime:\n",
    b"stage_args:\n",
    b"edges: [{from: 0, to: 1}]\n",
    b"input_connectors: {from_stage_0: ",
    b"output_connectors: {to_stage_1: ",
    b"engine_input_source: [",
    b"name: SharedMemoryConnector",
    b"extra: {",
    b"readers: ",
    b"${OMNI_FUZZ_UNSET}",
    b"&a [x, x, x, x, x, x, x, x]\n",
    b"*a",
    b"&a ",
    b"!!python/object/apply:os.system ",
    b"!!binary ",
    b"9" * 5000,
    b"1e999",
    b"NaN",
    b'"\\ud800"',
    b"[" * 64,
    b"{" * 64,
    b"\t",
    b"\x00",
)

CONFIG = Target(
    "config loader (load_omni_transfer_config)",
    _load_config,
    (ConfigError,),
    _config_seeds,
    _CONFIG_TOKENS,
    _hostile_configs,
    max_line=None,
)


# -- the coordinator's wire decoders -----------------------------------------------------------------


def _decode_coordinator(data: bytes) -> Any:
    """Every decoder of the coordinator's wire: stage events, published lists, registration replies."""
    results, errors = [], []
    for decode in (messages.decode_event, messages.decode_replica_list, messages.decode_registration_reply):
        try:
            results.append(decode(data))
        except messages.MalformedMessage as exc:
            errors.append(exc)
    if not results:
        raise errors[0]
    return results


def _coordinator_seeds() -> list[bytes]:
    m = messages

    event = m.ReplicaEvent("tcp://127.0.0.1:41001", "tcp://127.0.0.1:41002", 1, "heartbeat", m.ReplicaStatus.UP, 3)
    info = m.ReplicaInfo("tcp://127.0.0.1:41001", "tcp://127.0.0.1:41002", 1, m.ReplicaStatus.UP, 3, 17.5, 12.25)
    return [
        m.encode_event(event),
        m.encode_event(m.ReplicaEvent("tcp://h:1", "", 0, "update", m.ReplicaStatus.DOWN, None)),
        m.encode_replica_list(m.ReplicaList([info, info], 18.0, epoch=1795399000123456789, seq=42)),
        m.encode_replica_list(m.ReplicaList([], 0.0)),
        m.encode_registration_reply(m.RegistrationReply(10.0, 1795399000123456789)),
    ]


_COORDINATOR_TOKENS = (
    b'"input_addr":',
    b'"output_addr":',
    b'"stage_id":',
    b'"event_type":"update"',
    b'"event_type":"heartbeat"',
    b'"event_type":"registered"',
    b'"status":"up"',
    b'"queue_length":null',
    b'"replicas":[',
    b'"timestamp":',
    b'"epoch":',
    b'"seq":',
    b'"heartbeat_timeout":',
    b"NaN",
    b"-Infinity",
    b"1e999",
    b"-1",
    b"9" * 4400,
    b"[" * 100,
    b'"\\ud800"',
    b"\xff\xfe",
)

COORDINATOR = Target(
    "coordinator wire decoders (decode_event / decode_replica_list / decode_registration_reply)",
    _decode_coordinator,
    (messages.MalformedMessage,),
    _coordinator_seeds,
    _COORDINATOR_TOKENS,
)


# -- the Yuanrong TransferEngine side channel ---------------------------------------------------------


def _decode_yuanrong_te(data: bytes) -> Any:
    """A sender's view of a request, then a receiver's view of the same bytes as a query_info reply."""
    try:
        request = te_control.decode_request(data)
    except te_control.ControlProtocolError:
        request = None
    info = te_control.decode_info(data, "req-1@0_1")
    if info is not None and info.get("is_fast_path"):
        te_payload.check_raw_fields(info)
    return request, info


def _yuanrong_te_seeds() -> list[bytes]:
    c = te_control

    info = {"request_id": "req-1@0_1", "rpc_port": 4000, "src_addrs": [4096, 8192], "lengths": [24, 40],
            "data_size": 64, "is_fast_path": True, "kind": "tensor", "dtype": "float32", "shape": [4, 4]}
    return [
        c.encode_request(c.QUERY_INFO, "req-1@0_1"),
        c.encode_request(c.CLEANUP_KEY, "req-1@0_1"),
        c.encode_info(info),
        c.encode_info({**info, "kind": "bytes", "dtype": None, "shape": None}),
        c.encode_info({**info, "is_fast_path": False}),
        c.encode_error("no such key"),
        c.INFO_NOT_FOUND,
    ]


_YUANRONG_TOKENS = (
    b"query_info",
    b"cleanup_key",
    b"ack_error",
    b"info_not_found",
    b"\xaarequest_id",
    b"\xa8rpc_port",
    b"\xa9src_addrs",
    b"\xa7lengths",
    b"\xa9data_size",
    b"\xacis_fast_path\xc3",
    b"\xa4kind\xa6tensor",
    b"\xa5dtype\xa7float32",
    b"\xa5shape\x92\x04\x04",
    b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff",
    b"\xd3\x80\x00\x00\x00\x00\x00\x00\x00",
    b"\xdd\xff\xff\xff\xff",
    b"\x91" * 64,
)

YUANRONG_TE = Target(
    "Yuanrong TE side channel (decode_request / decode_info / check_raw_fields)",
    _decode_yuanrong_te,
    (te_control.ControlProtocolError,),
    _yuanrong_te_seeds,
    _YUANRONG_TOKENS,
)


# -- the Mooncake TransferEngine side channel and store descriptors (when that plugin is installed) ---------


def _mooncake_targets() -> dict[str, Target]:
    try:
        from omni_mooncake import store_values, wire
    except ImportError:
        return {}

    def decode_wire(data: bytes) -> Any:
        """A sender's view of a request, then a receiver's view of the same bytes as a reply."""
        try:
            request = wire.decode_request(data)
        except wire.MalformedMessage:
            request = None
        return request, wire.decode_reply(data)

    def wire_seeds() -> list[bytes]:
        pull = wire.Pull("req-1@0_1", "127.0.0.1:40000", 1 << 20, 4096, 5000)
        return [
            wire.encode_request(wire.Query("req-1@0_1")),
            wire.encode_request(pull),
            wire.encode_reply({"ok": True, "size": 64, "fast": True,
                               "layout": {"kind": "tensor", "dtype": "float32", "shape": [4, 4]}}),
            wire.encode_reply(wire.error_reply(wire.NOT_FOUND, "no such key")),
        ]

    def descriptor_seeds() -> list[bytes]:
        from omni_mooncake.raw_payload import RawLayout

        return [store_values.encode_descriptor(RawLayout(kind, dtype, shape, nbytes)) for kind, dtype, shape, nbytes in
                (("tensor", "bfloat16", (4, 8), 64), ("ndarray", "<f4", (16,), 64), ("bytes", "uint8", (64,), 64))]

    tokens = (b"\xa2op", b"\xa5query", b"\xa4pull", b"\xa3key", b"\xa7session", b"\xa7address", b"\xa8capacity",
              b"\xa7wait_ms", b"\xa2ok\xc3", b"\xa6layout", b"\xa4kind\xa6tensor", b"\xa5shape", b"\xa6nbytes",
              b"OMD1", b"\xcf\xff\xff\xff\xff\xff\xff\xff\xff", b"\xdd\xff\xff\xff\xff", b"\x91" * 64)
    return {
        "mooncake-te": Target("Mooncake TE side channel (wire.decode_request / decode_reply)", decode_wire,
                              (wire.MalformedMessage,), wire_seeds, tokens),
        "mooncake-descriptor": Target("Mooncake store descriptor (store_values.decode_descriptor)",
                                      store_values.decode_descriptor, (ValueError,), descriptor_seeds, tokens),
    }


def all_targets() -> dict[str, Target]:
    """Every target by short name (the Mooncake ones only when that plugin is installed)."""
    targets = {"serializer": SERIALIZER, "config": CONFIG, "coordinator": COORDINATOR, "yuanrong-te": YUANRONG_TE}
    return {**targets, **_mooncake_targets()}
