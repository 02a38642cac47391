"""The connector's counters: totals for ``health()``, increments since the last report for vLLM's stats."""

from __future__ import annotations

import threading
from collections.abc import Iterable

#: Worker side: what was saved and loaded (name -> help).
WORKER_COUNTERS = {
    "saves": "saves completed: every layer and then the manifest put",
    "save_failures": "saves abandoned because a put failed (decode engines recompute those prompts)",
    "blocks_saved": "KV blocks saved",
    "bytes_saved": "payload bytes put",
    "loads": "loads completed: every layer checked and copied into the KV cache",
    "load_failures": "loads abandoned; vLLM recomputes their blocks",
    "missing_payloads": "loads failed because a layer was not there within load_timeout_s",
    "corrupt_payloads": "loads failed because a layer failed its size, trailer or checksum check",
    "blocks_loaded": "KV blocks loaded",
    "tokens_loaded": "tokens whose KV was loaded",
    "bytes_loaded": "payload bytes got",
    "load_ms": "milliseconds from the start of a step's loads until its last layer was in place",
}
#: Scheduler side: what was looked up.
SCHEDULER_COUNTERS = {
    "lookups": "requests looked up",
    "skipped_lookups": "requests computed without a lookup: a probe was slower than lookup_budget_s (sender gone)",
    "lookup_hits": "requests that found a save to load from",
    "probes": "manifests asked for (a miss costs one per candidate prefix)",
    "hit_tokens": "tokens promised to the scheduler (vLLM counts them as external prefix cache hits)",
}


class Counters:
    """Named integer counters, thread-safe: running totals, and what was added since the last ``take``."""

    def __init__(self, names: Iterable[str]) -> None:
        self._totals = dict.fromkeys(names, 0)
        self._interval = dict.fromkeys(self._totals, 0)
        self._lock = threading.Lock()

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._totals[name] += amount
            self._interval[name] += amount

    def totals(self) -> dict[str, int]:
        """Everything counted since the connector started."""
        with self._lock:
            return dict(self._totals)

    def take(self) -> dict[str, int]:
        """What was counted since the previous ``take`` (non-zero entries only), and start a new interval."""
        with self._lock:
            taken = {name: value for name, value in self._interval.items() if value}
            self._interval = dict.fromkeys(self._interval, 0)
        return taken
