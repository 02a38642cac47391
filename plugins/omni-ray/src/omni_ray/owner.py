"""Payload owners: one detached actor per node and namespace that owns the objects ``RayConnector`` puts.

Ray frees an object when the worker that created it exits.  A stage that puts a payload and then exits
(or is killed) must not take the payload with it, so ``put`` hands the serialized frame to the owner on
its own node, which ``ray.put``s it (the owner creates, and so owns, the object) and holds the reference
until every reader has taken it, the putter withdraws it, or it expires.  A reader ``take``s the reference
from the owner (one actor call: the claim is atomic, so consume-once holds across nodes) and fetches the
object through Ray, from whichever node holds it.

An owner with nothing to hold exits after ``idle_s`` seconds without calls; the next ``put`` on its node
starts a new one.  :func:`remove_payload_owners` removes them all at once (launchers call it on exit).
"""

from __future__ import annotations

import dataclasses
import threading
import time
from typing import Any

import ray
from ray.exceptions import RayActorError
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from .ray_utils import actor_class

#: Every owner's actor name starts with this, followed by its node's id.
OWNER_PREFIX = "omni-payload-owner-"
#: Calls an owner serves at once (a ``hold`` copying a large frame does not block ``take``).
OWNER_CONCURRENCY = 8


class OwnerExiting(RuntimeError):
    """The owner is shutting down (idle); the caller retries with a new one."""


def owner_name(node_id: str) -> str:
    """The actor name of the payload owner of node ``node_id``."""
    return f"{OWNER_PREFIX}{node_id}"


@dataclasses.dataclass
class _Held:
    ref: Any
    nbytes: int
    putter: str
    readers_left: int
    expires: float
    taken_by: set[str] = dataclasses.field(default_factory=set)


class PayloadOwner:
    """The actor body: holds object references by key (run through :func:`local_owner`, not directly)."""

    def __init__(self, idle_s: float) -> None:
        self._entries: dict[str, _Held] = {}
        self._lock = threading.Lock()
        self._idle_s = idle_s
        self._busy = 0
        self._last_call = time.monotonic()
        self._exiting = False
        self._expired = 0
        threading.Thread(target=self._watch, name="omni-owner-watch", daemon=True).start()

    def hold(self, key: str, frame: Any, putter: str, readers: int, ttl_s: float) -> int:
        """Put ``frame`` into the object store as this actor's object and hold it under ``key``; its size."""
        self._enter()
        try:
            ref = ray.put(frame)
            nbytes = len(memoryview(frame))
            with self._lock:
                self._entries[key] = _Held(ref, nbytes, putter, readers, time.monotonic() + ttl_s)
            return nbytes
        finally:
            self._leave()

    def take(self, key: str, reader: str) -> list[Any] | None:
        """``[ref]`` for ``reader``'s one read of ``key``, or None (absent, expired or already read by it)."""
        self._enter()
        try:
            held = self._claim(key, reader)
            return None if held is None else [held.ref]  # in a list: the reader gets the reference, not the object
        finally:
            self._leave()

    def _claim(self, key: str, reader: str) -> _Held | None:
        with self._lock:
            held = self._entries.get(key)
            if held is None or reader in held.taken_by:
                return None
            held.taken_by.add(reader)
            held.readers_left -= 1
            if held.readers_left <= 0:
                del self._entries[key]
            return held

    def drop(self, key: str, putter: str) -> bool:
        """Free ``key`` if ``putter`` put it and it is still held; whether it was."""
        self._enter()
        try:
            with self._lock:
                held = self._entries.get(key)
                if held is None or held.putter != putter:
                    return False
                del self._entries[key]
                return True
        finally:
            self._leave()

    def stats(self) -> dict[str, Any]:
        """``{"held", "held_bytes", "expired", "node_id", "node_ip"}``."""
        with self._lock:
            held = len(self._entries)
            held_bytes = sum(entry.nbytes for entry in self._entries.values())
        node_id = ray.get_runtime_context().get_node_id()
        return {
            "held": held, "held_bytes": held_bytes, "expired": self._expired,
            "node_id": node_id, "node_ip": ray.util.get_node_ip_address(),
        }  # fmt: skip

    def _enter(self) -> None:
        with self._lock:
            if self._exiting:
                raise OwnerExiting("payload owner is exiting")
            self._busy += 1
            self._last_call = time.monotonic()

    def _leave(self) -> None:
        with self._lock:
            self._busy -= 1
            self._last_call = time.monotonic()

    def _watch(self) -> None:
        """Free expired payloads; exit once idle with nothing held."""
        period = max(0.05, min(1.0, self._idle_s / 4))
        while True:
            time.sleep(period)
            now = time.monotonic()
            with self._lock:
                expired = [key for key, held in self._entries.items() if held.expires <= now]
                for key in expired:
                    del self._entries[key]
                self._expired += len(expired)
                if not self._entries and not self._busy and now - self._last_call >= self._idle_s:
                    self._exiting = True
                    break
        ray.get_runtime_context().current_actor.__ray_terminate__.remote()


class OwnerDirectory:
    """A connector's way to its node's owner (created on demand) and to the owners of other nodes."""

    def __init__(self, namespace: str, node_id: str, idle_s: float) -> None:
        self.namespace = namespace
        self.local_name = owner_name(node_id)
        self._node_id = node_id
        self._idle_s = idle_s
        self._handles: dict[str, Any] = {}
        self._lock = threading.Lock()

    def local(self) -> Any:
        """The handle of this node's owner; starts one if there is none (actor creation is asynchronous)."""
        with self._lock:
            handle = self._handles.get(self.local_name)
            if handle is None:
                handle = (
                    actor_class(PayloadOwner)
                    .options(
                        name=self.local_name,
                        namespace=self.namespace,
                        lifetime="detached",
                        get_if_exists=True,
                        num_cpus=0,
                        max_concurrency=OWNER_CONCURRENCY,
                        scheduling_strategy=NodeAffinitySchedulingStrategy(self._node_id, soft=False),
                    )
                    .remote(self._idle_s)
                )
                self._handles[self.local_name] = handle
            return handle

    def find(self, name: str) -> Any | None:
        """The handle of owner ``name``, or None if it does not exist (any more)."""
        with self._lock:
            handle = self._handles.get(name)
        if handle is not None:
            return handle
        try:
            handle = ray.get_actor(name, namespace=self.namespace)
        except ValueError:
            return None
        with self._lock:
            return self._handles.setdefault(name, handle)

    def forget(self, name: str) -> None:
        """Drop a cached handle (its actor died or is exiting)."""
        with self._lock:
            self._handles.pop(name, None)

    def names(self) -> list[str]:
        """Every live owner of the namespace, this node's first."""
        found = sorted(owner_names(self.namespace))
        return sorted(found, key=lambda name: name != self.local_name)

    def call_local(self, method: str, *args: Any, timeout: float) -> Any:
        """Call ``method`` on this node's owner, starting a new owner (once) if the old one exited."""
        for attempt in range(3):
            handle = self.local()
            try:
                return ray.get(getattr(handle, method).remote(*args), timeout=timeout)
            except (RayActorError, OwnerExiting):
                self.forget(self.local_name)
                if attempt == 2:
                    raise
                time.sleep(0.1 * (attempt + 1))  # let the exiting owner release its name
        raise AssertionError("unreachable")


def owner_names(namespace: str) -> list[str]:
    """Names of the payload owners alive in Ray namespace ``namespace``."""
    actors = ray.util.list_named_actors(all_namespaces=True)
    return [a["name"] for a in actors if a["namespace"] == namespace and a["name"].startswith(OWNER_PREFIX)]


def remove_payload_owners(namespace: str = "omni") -> int:
    """Kill every payload owner of ``namespace`` (payloads they hold are freed); how many there were."""
    names = owner_names(namespace)
    for name in names:
        try:
            ray.kill(ray.get_actor(name, namespace=namespace), no_restart=True)
        except ValueError:  # exited meanwhile
            pass
    return len(names)
