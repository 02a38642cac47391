"""This process's connection to a Ray cluster, shared by every ``RayConnector`` in it.

Inside a Ray worker (a stage actor) or a driver that already called ``ray.init`` the connection is
reused and never shut down here.  Otherwise the first connector joins the cluster and the last one
to close disconnects.  Joining never starts a cluster: a connector without one fails and says how
to get one.

Where several nodes of a cluster run on one machine (nodes in network namespaces or containers that see
each other's processes), Ray would join whichever raylet it finds first, the head if it is one; this module
joins the raylet whose address is this process's own route to the cluster.
"""

from __future__ import annotations

import logging
import os
import socket
import threading

import ray

_lock = threading.Lock()
_users = 0  # open connectors that rely on the connection this module made
_ours = False  # this module called ray.init


def cluster_address(address: str | None) -> str:
    """The address to join: ``address``, else ``RAY_ADDRESS``, else ``auto`` (a cluster started on this host)."""
    return address or os.environ.get("RAY_ADDRESS") or "auto"


def _split(address: str) -> tuple[str, int] | None:
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or "://" in address:
        return None
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float) -> None:
    """Fail fast (ConnectionError) when nothing accepts connections at a ``host:port`` address.

    ``ray.init`` retries an unreachable GCS for many minutes; this answers within ``timeout`` seconds.
    """
    endpoint = _split(address)
    if endpoint is None:
        return  # "auto" and the like: ray.init finds (or misses) the local cluster by itself, quickly
    try:
        socket.create_connection(endpoint, timeout=timeout).close()
    except OSError as exc:
        raise ConnectionError(f"no Ray cluster answers at {address}: {exc}") from exc


def local_raylet_ips() -> set[str]:
    """The node addresses of the raylets running on this machine (from their command lines, as Ray finds them)."""
    import psutil

    ips = set()
    for proc in psutil.process_iter(["name", "cmdline"]):
        if proc.info["name"] == "raylet":
            for arg in proc.info["cmdline"] or ():
                if arg.startswith("--node_ip_address="):
                    ips.add(arg.partition("=")[2])
    return ips


def driver_node_ip(address: str) -> str | None:
    """The raylet address to join when several raylets run on this machine: the local end of this process's
    route to the cluster at ``address``; None (Ray's own choice) when there is one raylet or no match."""
    endpoint = _split(address)
    raylets = local_raylet_ips() if endpoint else set()
    if len(raylets) < 2 or endpoint is None:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        try:
            udp.connect(endpoint)  # sends nothing: only picks the route
        except OSError:
            return None
        own = udp.getsockname()[0]
    return own if own in raylets else None


def join(address: str, timeout: float, who: str, setting: str, **init_kwargs: object) -> None:
    """``ray.init`` this process into the cluster at ``address`` (on the raylet of its own route to it); a
    ConnectionError naming ``who`` failed, the address, how to start a cluster and ``setting`` if it cannot."""
    try:
        probe(address, timeout)
        ray.init(address=address, logging_level=logging.WARNING, log_to_driver=False,
                 _node_ip_address=driver_node_ip(address), **init_kwargs)  # type: ignore[arg-type]  # fmt: skip
    except (ConnectionError, RuntimeError, ValueError) as exc:
        raise ConnectionError(
            f"{who} could not join a Ray cluster at {address!r}: {exc}. Start one (`ray start --head` on one "
            f"host, `ray start --address HEAD:6379` on the others), then set {setting}"
        ) from exc


def attach(address: str | None, timeout: float = 10.0) -> bool:
    """Make sure this process is connected to Ray (joining ``address`` if it is not).

    Returns whether the caller now shares the connection this module made; pass that to :func:`detach`.
    """
    global _users, _ours
    with _lock:
        if ray.is_initialized():
            _users += _ours
            return _ours
        join(cluster_address(address), timeout, "RayConnector", "the connector's `address` or RAY_ADDRESS")
        _ours = True
        _users = 1
        return True


def detach(shared: bool) -> None:
    """One user less (``shared``: what :func:`attach` returned); the last one disconnects what attach made."""
    global _users, _ours
    with _lock:
        if not (shared and _ours):
            return
        _users -= 1
        if _users <= 0:
            _users = 0
            _ours = False
            ray.shutdown()
