"""A ring allocator of byte ranges: O(1) when payloads are freed roughly in the order they were written."""

from __future__ import annotations

from collections import deque


class Ring:
    """Hands out ``[offset, offset + size)`` ranges of ``capacity`` bytes in allocation order.

    Live ranges sit between ``tail`` (oldest) and ``head`` (next free byte), possibly wrapped around the end.
    A range freed out of order is only marked; the space comes back once every older range is freed too.
    """

    __slots__ = ("_freed", "_head", "_live", "_tail", "_wrapped", "capacity")

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._head = 0
        self._tail = 0
        self._wrapped = False  # head has wrapped to the start and now sits before tail
        self._live: deque[int] = deque()  # offsets of live ranges, oldest first
        self._freed: set[int] = set()  # live offsets already freed, waiting for older ones

    @property
    def empty(self) -> bool:
        return not self._live

    def alloc(self, size: int) -> int | None:
        """Offset of a new range of ``size`` bytes, or None if there is no room."""
        if not self._live:
            self._head = self._tail = 0
            self._wrapped = False
        head = self._head
        if self._wrapped:
            if self._tail - head < size:
                return None
            offset = head
        elif self.capacity - head >= size:
            offset = head
        elif self._tail >= size:
            offset = 0
            self._wrapped = True
        else:
            return None
        self._head = offset + size
        self._live.append(offset)
        return offset

    def free(self, offset: int) -> None:
        """Give back the range starting at ``offset``."""
        live = self._live
        if live[0] != offset:
            self._freed.add(offset)
            return
        live.popleft()
        while live and live[0] in self._freed:
            self._freed.discard(live.popleft())
        if live:
            if live[0] < self._tail:
                self._wrapped = False
            self._tail = live[0]
