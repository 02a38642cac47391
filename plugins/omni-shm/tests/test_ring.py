"""The ring allocator never hands out overlapping or out-of-bounds ranges, and gives all space back."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from omni_shm.ring import Ring

CAPACITY = 1000
operations = st.lists(st.one_of(st.integers(1, 400), st.integers(-50, -1)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_live_ranges_never_overlap(ops: list[int]) -> None:
    ring = Ring(CAPACITY)
    live: dict[int, int] = {}
    for op in ops:
        if op > 0:
            offset = ring.alloc(op)
            if offset is None:
                continue
            assert 0 <= offset and offset + op <= CAPACITY
            assert all(offset + op <= o or o + n <= offset for o, n in live.items()), "overlapping ranges"
            live[offset] = op
        elif live:
            victim = sorted(live)[(-op) % len(live)]  # free in any order
            ring.free(victim)
            del live[victim]
    for offset in list(live):
        ring.free(offset)
    assert ring.empty
    assert ring.alloc(CAPACITY) == 0, "all space comes back once everything is freed"


def test_out_of_order_frees_return_space_with_the_oldest() -> None:
    ring = Ring(300)
    first, second, third = ring.alloc(100), ring.alloc(100), ring.alloc(100)
    assert (first, second, third) == (0, 100, 200)
    ring.free(second)
    assert ring.alloc(50) is None, "space after an unfreed older range stays taken"
    ring.free(first)
    assert ring.alloc(200) == 0
