"""A seeded mutation engine: the same seed gives the same inputs, in the same order.

Each input is a seed input (or a splice of two) with one to four mutations: bit flips, interesting bytes and
integers written over length fields, inserted or deleted ranges, duplicated ranges, dictionary tokens (the
target's own vocabulary: magic numbers, msgpack headers, YAML anchors, field names), truncation, or plain
random bytes.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Iterator, Sequence

_INTERESTING_INTS = (0, 1, 2, 7, 8, 63, 64, 65, 127, 128, 255, 256, 4095, 4096, 65535, 65536,
                     2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63 - 1, 2**63, 2**64 - 1)
_INT_FORMATS = ("<I", "<Q", ">I", ">Q", ">H", "B")
MAX_INPUT = 1 << 16


def inputs(
    seeds: list[bytes], tokens: tuple[bytes, ...], seed: int, count: int, regressions: Sequence[bytes] = ()
) -> Iterator[bytes]:
    """``count`` inputs: the ``regressions`` and ``seeds`` as they are, then mutants of the seeds."""
    rng = random.Random(seed)
    produced = 0
    for data in [*regressions, *seeds][:count]:
        produced += 1
        yield data
    while produced < count:
        produced += 1
        yield mutate(rng, seeds, tokens)


def mutate(rng: random.Random, seeds: list[bytes], tokens: tuple[bytes, ...]) -> bytes:
    """One mutant of a random seed."""
    if rng.random() < 0.02:
        return rng.randbytes(rng.randrange(0, 512))
    data = bytearray(rng.choice(seeds))
    if rng.random() < 0.1:
        other = rng.choice(seeds)
        data[rng.randrange(len(data) + 1) :] = other[rng.randrange(len(other) + 1) :]
    for _ in range(rng.choice((1, 1, 2, 3, 4))):
        rng.choice(_MUTATIONS)(rng, data, tokens)
    return bytes(data[:MAX_INPUT])


def _flip(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if data:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)


def _byte(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if data:
        data[rng.randrange(len(data))] = rng.choice((0x00, 0x01, 0x7F, 0x80, 0xC0, 0xC1, 0xFF, rng.randrange(256)))


def _integer(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    fmt = rng.choice(_INT_FORMATS)
    size = struct.calcsize(fmt)
    if len(data) < size:
        return
    value = rng.choice(_INTERESTING_INTS) + rng.choice((-1, 0, 0, 1))
    value %= 1 << (8 * size)
    offset = rng.randrange(len(data) - size + 1)
    data[offset : offset + size] = struct.pack(fmt, value)


def _insert(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    at = rng.randrange(len(data) + 1)
    data[at:at] = rng.randbytes(rng.choice((1, 2, 4, 8, rng.randrange(1, 64))))


def _delete(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if data:
        at = rng.randrange(len(data))
        del data[at : at + rng.choice((1, 2, 4, 8, rng.randrange(1, 256)))]


def _duplicate(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if data:
        start = rng.randrange(len(data))
        chunk = data[start : start + rng.randrange(1, 128)]
        at = rng.randrange(len(data) + 1)
        data[at:at] = chunk * rng.choice((1, 2, 8, 64))


def _token(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if tokens:
        token = rng.choice(tokens)
        at = rng.randrange(len(data) + 1)
        if rng.random() < 0.5:
            data[at:at] = token
        else:
            data[at : at + len(token)] = token


def _truncate(rng: random.Random, data: bytearray, tokens: tuple[bytes, ...]) -> None:
    if data:
        del data[rng.randrange(len(data)) :]


_MUTATIONS = (_flip, _flip, _byte, _integer, _integer, _insert, _delete, _duplicate, _token, _token, _token, _truncate)
