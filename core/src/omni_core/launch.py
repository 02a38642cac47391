"""Launchers: how a runner (``omni run``) starts stage replicas, as local processes, Ray actors, ...

A launcher plugin returns a :class:`~omni_core.LauncherRegistration` from ``omni_register_launchers`` whose
target is a :class:`Launcher` subclass.  The runner creates it with the run's :class:`~omni_core.Placement` and
replica counts, starts every replica with :meth:`Launcher.start_replica` and drives each through the
:class:`ReplicaHandle` it returns.  Whatever the launcher, a replica speaks one protocol: JSON lines both ways
(:class:`~omni_core.JsonLinesChannel`), a greeting ``{"ready": true}`` first and ``{"op": "close"}`` to stop, so
the runner never depends on how (or where) a replica runs: it never assumes a local PID.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from .remote import JsonLinesChannel

if TYPE_CHECKING:
    from typing_extensions import Self

    from .placement import Placement

__all__ = ["Launcher", "ReplicaHandle"]


class ReplicaHandle(JsonLinesChannel):
    """One started stage replica, as the runner drives it.

    Implementations set ``stage_id`` (str), ``replica_id`` (int) and ``node`` (where it runs, for the result
    table: a host name, a node address), provide the transport of :class:`~omni_core.JsonLinesChannel` and
    ``kill()`` (fault injection: at once, no clean-up), and :meth:`close`.  The runner waits for the greeting with
    ``wait_ready()``, stops all replicas with ``request_close()`` then ``close()`` on each.
    """

    stage_id: str
    replica_id: int
    node: str

    @property
    @abstractmethod
    def where(self) -> str:
        """How to find it, for messages (``"pid 4242 on h1"``, ``"actor 3f2a on 198.18.0.2"``)."""

    @property
    def label(self) -> str:
        return f"stage {self.stage_id} replica {self.replica_id} ({self.where})"

    def __repr__(self) -> str:
        return self.label

    @abstractmethod
    def close(self) -> None:
        """Ask it to close and exit, wait a bounded time, then stop it by force (idempotent)."""


class Launcher(ABC):
    """Starts the stage replicas of one run where ``placement`` says.

    ``replicas`` is the number of replicas of every stage (by stage id), known before the first start so a
    launcher can reserve them all at once (a placement group with a bundle per replica).
    """

    def __init__(self, placement: Placement, replicas: Mapping[str, int]) -> None:
        self.placement = placement
        self.replicas = dict(replicas)

    @property
    @abstractmethod
    def orchestrator_host(self) -> str:
        """The address at which this launcher's replicas reach the runner's process (servers it starts bind it)."""

    @abstractmethod
    def start_replica(
        self, stage_id: str, replica_id: int, argv: Sequence[str], env: Mapping[str, str]
    ) -> ReplicaHandle:
        """Start ``argv`` (a ``python -m ...`` command line) as replica ``replica_id`` of stage ``stage_id``.

        ``env`` is what the replica needs on top of its host's environment (``OMNI_REPLICA_ID``, ...); a replica
        placed on a host also gets ``OMNI_HOST_IP``, that host's address.  Returns at once: the runner waits for
        the greeting with :meth:`ReplicaHandle.wait_ready`.
        """

    @abstractmethod
    def close(self) -> None:
        """Remove whatever this launcher started that is still there (idempotent; runs on exit, Ctrl-C, failure)."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
