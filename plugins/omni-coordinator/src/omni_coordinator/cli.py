"""``omni coordinator``: run a coordinator (``serve``) or make CURVE certificates (``keygen``)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

#: Lines ``serve`` prints once bound, in this order: ``router: tcp://...`` then ``pub: tcp://...``.
ANNOUNCED_ENDPOINTS = ("router", "pub")


def parse_announcement(line: str) -> tuple[str, str] | None:
    """``("router", addr)`` or ``("pub", addr)`` for an address line ``serve`` printed, else None."""
    key, sep, addr = line.strip().partition(": ")
    return (key, addr) if sep and key in ANNOUNCED_ENDPOINTS and addr.startswith("tcp://") else None


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omni coordinator", description="Stage replica coordinator.")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="run a coordinator until SIGINT/SIGTERM; prints its ROUTER and PUB addresses")
    serve.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to bind (default 127.0.0.1); '*' binds every interface, 'auto' this host's address "
        "(OMNI_HOST_IP, OMNI_HOST_IFNAME, the default route's interface, the first one up); both print that address",
    )
    serve.add_argument("--router-port", type=int, default=0, help="stage-facing ROUTER port (0: any free port)")
    serve.add_argument("--pub-port", type=int, default=0, help="hub-facing PUB port (0: any free port)")
    serve.add_argument("--heartbeat-timeout", type=float, default=30.0, help="silent seconds before a replica is ERROR")
    serve.add_argument("--keepalive-interval", type=float, default=None, help="seconds between full re-publications")
    serve.add_argument("--curve-secret-key", metavar="FILE", help="CURVE server certificate (.key_secret)")
    serve.add_argument("--curve-authorized-keys", metavar="DIR", help="accept only clients with a certificate here")
    serve.add_argument("--stdin-lifeline", action="store_true", help="also stop when stdin closes (for the runtime)")
    keygen = sub.add_parser("keygen", help="write a CURVE keypair as NAME.key and NAME.key_secret in DIR")
    keygen.add_argument("directory")
    keygen.add_argument("--name", default="coordinator")
    return parser


def _endpoint(host: str, port: int) -> str:
    return f"tcp://{host}:{port or '*'}"


def advertised(bound: str, host: str) -> str:
    """The address to hand to peers for endpoint ``bound``: a wildcard bind becomes this host's address."""
    from omni_core import AUTO_HOST_VALUES, resolve_host

    if host.strip().lower() not in AUTO_HOST_VALUES:
        return bound
    port = bound.rsplit(":", 1)[1]
    return f"tcp://{resolve_host(host)}:{port}"


def serve(args: argparse.Namespace) -> int:
    import zmq

    from omni_core import resolve_host

    from .auth import CurveServerKeys
    from .coordinator import OmniCoordinator

    if args.curve_authorized_keys and not args.curve_secret_key:
        print("omni coordinator serve: --curve-authorized-keys needs --curve-secret-key", file=sys.stderr)
        return 2
    # The handler only records the signal: taking a lock in a signal handler (Event.set) can deadlock
    # against the main thread holding that lock.
    signals: list[int] = []
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda signum, _frame: signals.append(signum))
    try:
        curve = None
        if args.curve_secret_key:
            curve = CurveServerKeys.from_files(args.curve_secret_key, args.curve_authorized_keys)
        bind_host = resolve_host(args.host) if args.host.strip().lower() == "auto" else args.host
        coordinator = OmniCoordinator(
            _endpoint(bind_host, args.router_port),
            _endpoint(bind_host, args.pub_port),
            heartbeat_timeout=args.heartbeat_timeout,
            keepalive_interval=args.keepalive_interval,
            curve=curve,
        )
    except (OSError, ValueError, RuntimeError, zmq.ZMQError) as exc:
        print(f"omni coordinator serve: {exc}", file=sys.stderr)
        return 1
    router, pub = (advertised(addr, args.host) for addr in (coordinator.router_zmq_addr, coordinator.pub_zmq_addr))
    print(f"router: {router}\npub: {pub}", flush=True)
    lifeline_closed = threading.Event()
    if args.stdin_lifeline:
        threading.Thread(target=lambda: (sys.stdin.buffer.read(), lifeline_closed.set()), daemon=True).start()
    while not signals and not lifeline_closed.is_set():
        time.sleep(0.2)
    coordinator.close()
    return 0


def keygen(args: argparse.Namespace) -> int:
    import zmq.auth

    os.makedirs(args.directory, exist_ok=True)
    public, secret = zmq.auth.create_certificates(args.directory, args.name)
    print(f"public certificate (give to clients, or put in --curve-authorized-keys): {public}")
    print(f"secret certificate (keep private): {secret}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``omni coordinator ACTION ...``; returns the exit code."""
    args = _build_parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    return serve(args) if args.action == "serve" else keygen(args)


if __name__ == "__main__":
    raise SystemExit(main())
