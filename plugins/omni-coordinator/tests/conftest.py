"""Shared fixtures: real coordinators, clients and raw sockets, all on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import zmq
from coord_helpers import TIMEOUT

from omni_coordinator import OmniCoordClientForHub, OmniCoordClientForStage, OmniCoordinator


@pytest.fixture
def zmq_ctx() -> Iterator[zmq.Context]:
    ctx = zmq.Context()
    yield ctx
    ctx.destroy(linger=0)


@pytest.fixture
def make_coordinator() -> Iterator[Callable[..., OmniCoordinator]]:
    """Coordinators on free loopback ports (``heartbeat_timeout`` 1 s unless given); closed afterwards."""
    made: list[OmniCoordinator] = []

    def make(router: str = "tcp://127.0.0.1:0", pub: str = "tcp://127.0.0.1:0", **kwargs: Any) -> OmniCoordinator:
        kwargs.setdefault("heartbeat_timeout", TIMEOUT)
        coordinator = OmniCoordinator(router, pub, **kwargs)
        made.append(coordinator)
        return coordinator

    yield make
    for coordinator in made:
        if not coordinator._closed:
            coordinator.close()


@pytest.fixture
def coordinator(make_coordinator: Callable[..., OmniCoordinator]) -> OmniCoordinator:
    return make_coordinator()


@pytest.fixture
def make_stage() -> Iterator[Callable[..., OmniCoordClientForStage]]:
    """Stage clients (replica ``tcp://127.0.0.1:<n>``); closed afterwards if still open."""
    made: list[OmniCoordClientForStage] = []

    def make(router: str, port: int, stage_id: int = 0, **kwargs: Any) -> OmniCoordClientForStage:
        client = OmniCoordClientForStage(router, f"tcp://127.0.0.1:{port}", f"tcp://127.0.0.1:{port + 1}", stage_id,
                                         **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        if not client._closed:
            client.close()


@pytest.fixture
def make_hub() -> Iterator[Callable[..., OmniCoordClientForHub]]:
    made: list[OmniCoordClientForHub] = []

    def make(pub: str, **kwargs: Any) -> OmniCoordClientForHub:
        hub = OmniCoordClientForHub(pub, **kwargs)
        made.append(hub)
        return hub

    yield make
    for hub in made:
        if not hub._closed:
            hub.close()


@pytest.fixture
def raw_router(zmq_ctx: zmq.Context) -> Iterator[tuple[zmq.Socket, str]]:
    """A bare ROUTER standing in for the coordinator: (socket, address)."""
    sock = zmq_ctx.socket(zmq.ROUTER)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(linger=0)


@pytest.fixture
def raw_pub(zmq_ctx: zmq.Context) -> Iterator[tuple[zmq.Socket, str]]:
    """A bare PUB standing in for the coordinator: (socket, address)."""
    sock = zmq_ctx.socket(zmq.PUB)
    sock.bind("tcp://127.0.0.1:*")
    yield sock, sock.getsockopt_string(zmq.LAST_ENDPOINT)
    sock.close(linger=0)


@pytest.fixture
def raw_dealer(zmq_ctx: zmq.Context) -> Callable[[str], zmq.Socket]:
    """Bare DEALERs standing in for stage replicas (closed with the context)."""

    def make(router: str) -> zmq.Socket:
        sock = zmq_ctx.socket(zmq.DEALER)
        sock.connect(router)
        return sock

    return make
