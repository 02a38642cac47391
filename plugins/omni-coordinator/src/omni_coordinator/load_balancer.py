"""Load-balancing policies: pick one replica for a task.

Policies are plugins: this package registers the three built-ins through the
``omni_register_load_balancers`` hook, and :func:`build_load_balancer_factory`
resolves any registered name, built-in or third-party.
"""

from __future__ import annotations

import random
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from enum import Enum
from typing import Any, TypedDict

from omni_core import get_plugin_registry, import_target

from .messages import ReplicaInfo


class Task(TypedDict, total=False):
    """What is being routed; policies may inspect it (the built-ins do not)."""

    request_id: str
    engine_inputs: Any
    sampling_params: Any


class LoadBalancingPolicy(str, Enum):
    """Names of the built-in policies."""

    RANDOM = "random"
    ROUND_ROBIN = "round-robin"
    LEAST_QUEUE_LENGTH = "least-queue-length"


class LoadBalancer(ABC):
    """Chooses one replica for a task."""

    @abstractmethod
    def select(self, task: Task, replicas: list[ReplicaInfo]) -> int:
        """Return the index into ``replicas`` of the chosen one; ValueError if ``replicas`` is empty."""


def _require_replicas(replicas: list[ReplicaInfo]) -> None:
    if not replicas:
        raise ValueError("replicas must not be empty")


class RandomBalancer(LoadBalancer):
    """Uniformly random replica."""

    def select(self, task: Task, replicas: list[ReplicaInfo]) -> int:
        _require_replicas(replicas)
        return random.randrange(len(replicas))


class RoundRobinBalancer(LoadBalancer):
    """Replicas in turn, in ``input_addr`` order.

    The first pick is ``start_index`` modulo the list length; each later pick is
    the replica whose address follows the previous pick's, so replicas joining,
    leaving or being listed in another order are neither skipped nor repeated
    (upstream kept a bare running index, which did both).  Thread-safe.
    """

    def __init__(self, start_index: int = 0) -> None:
        self._start_index = start_index
        self._last_addr: str | None = None
        self._lock = threading.Lock()

    def select(self, task: Task, replicas: list[ReplicaInfo]) -> int:
        _require_replicas(replicas)
        with self._lock:
            if self._last_addr is None:
                index = self._start_index % len(replicas)
            else:
                addrs = sorted({r.input_addr for r in replicas})
                following = [a for a in addrs if a > self._last_addr]
                chosen = following[0] if following else addrs[0]
                index = next(i for i, r in enumerate(replicas) if r.input_addr == chosen)
            self._last_addr = replicas[index].input_addr
            return index


class LeastQueueLengthBalancer(LoadBalancer):
    """The replica with the shortest queue; ties are broken uniformly at random."""

    def select(self, task: Task, replicas: list[ReplicaInfo]) -> int:
        _require_replicas(replicas)
        if any(r.queue_length < 0 for r in replicas):
            raise ValueError("queue_length must be non-negative")
        shortest = min(r.queue_length for r in replicas)
        return random.choice([i for i, r in enumerate(replicas) if r.queue_length == shortest])


def build_load_balancer_factory(policy: str) -> Callable[[], LoadBalancer]:
    """The zero-argument factory (the class) registered under ``policy``.

    Names come from every plugin's ``omni_register_load_balancers`` hook; an
    unknown name raises ValueError listing the valid ones, a name two plugins
    provide raises ValueError naming both.
    """
    name = policy.value if isinstance(policy, LoadBalancingPolicy) else str(policy)
    registration, record = get_plugin_registry().select("load-balancing policy", name)
    factory = import_target(registration.target)
    if not (isinstance(factory, type) and issubclass(factory, LoadBalancer)):
        raise ValueError(f"policy {name!r} from {record.label}: {registration.target} is not a LoadBalancer subclass")
    return factory
