"""This host's address, for connectors and servers configured with ``host: auto``.

The rules, in order (as NCCL_SOCKET_IFNAME / VLLM_HOST_IP do):

1. ``OMNI_HOST_IP``: the operator names the address;
2. ``OMNI_HOST_IFNAME``: the operator names the interface (comma-separated names or name prefixes,
   the first that is up with an IPv4 address wins);
3. the address of the interface that holds the default route;
4. the first non-loopback interface that is up (by interface index);
5. ``127.0.0.1``, with a warning (once) naming the two variables.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket

from .envexpand import AUTO_HOST_VALUES
from .errors import ConfigError

HOST_IP_ENV = "OMNI_HOST_IP"
HOST_IFNAME_ENV = "OMNI_HOST_IFNAME"
LOOPBACK = "127.0.0.1"
#: A public address used only to select the default route: connecting a UDP socket sends no packet.
_ROUTE_PROBE = ("192.0.2.1", 9)

_log = logging.getLogger("omni.core.hosts")
_warned_loopback = False


def resolve_host(host: str | None) -> str:
    """``host`` itself, or for None/"auto"/"*"/"0.0.0.0"/"::" this host's address (see :func:`local_address`)."""
    if host is not None and str(host).strip().lower() not in AUTO_HOST_VALUES:
        return str(host)
    return local_address()


def local_address() -> str:
    """This host's IPv4 address by the module's rules; 127.0.0.1 (warned once) only when nothing else is up."""
    chosen = os.environ.get(HOST_IP_ENV, "").strip()
    if chosen:
        try:
            return str(ipaddress.ip_address(chosen))
        except ValueError:
            raise ConfigError(f"{HOST_IP_ENV}={chosen!r} is not an IP address") from None
    names = [n.strip() for n in os.environ.get(HOST_IFNAME_ENV, "").split(",") if n.strip()]
    if names:
        return _named_interface_address(names)
    return _default_route_address() or _first_up_address() or _loopback()


def _interfaces() -> list[tuple[str, str]]:
    """(name, IPv4 address) of every interface that is up, in interface-index order, loopback excluded."""
    import psutil

    addresses = psutil.net_if_addrs()
    stats = psutil.net_if_stats()
    order = {name: index for index, name in socket.if_nameindex()}
    found = []
    for name in sorted(addresses, key=lambda n: order.get(n, 1 << 30)):
        if not (name in stats and stats[name].isup):
            continue
        for addr in addresses[name]:
            if addr.family == socket.AF_INET and not ipaddress.ip_address(addr.address).is_loopback:
                found.append((name, addr.address))
                break
    return found


def _named_interface_address(names: list[str]) -> str:
    interfaces = _interfaces()
    for wanted in names:
        for name, address in interfaces:
            if name == wanted or name.startswith(wanted):
                return address
    up = ", ".join(f"{n} ({a})" for n, a in interfaces) or "none"
    raise ConfigError(f"{HOST_IFNAME_ENV}={','.join(names)!r} matches no interface that is up; up: {up}")


def _default_route_address() -> str | None:
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(_ROUTE_PROBE)
            address = str(probe.getsockname()[0])
    except OSError:  # no default route
        return None
    return None if ipaddress.ip_address(address).is_loopback else address


def _first_up_address() -> str | None:
    interfaces = _interfaces()
    if not interfaces:
        return None
    name, address = interfaces[0]
    _log.info("host: auto -> %s (interface %s; no default route). Set %s or %s to choose.",
              address, name, HOST_IP_ENV, HOST_IFNAME_ENV)
    return address


def _loopback() -> str:
    global _warned_loopback
    if not _warned_loopback:
        _warned_loopback = True
        _log.warning("host: auto -> %s: no interface but loopback is up, so other hosts cannot reach this one. "
                     "Set %s (an address) or %s (an interface) to choose.", LOOPBACK, HOST_IP_ENV, HOST_IFNAME_ENV)
    return LOOPBACK
