"""Fixtures: connectors in unique namespaces, and a check that every test leaves /dev/shm as it found it."""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from omni_core import ConnectorSpec, OmniConnectorFactory
from omni_shm.connector import SharedMemoryConnector

SHM = "/dev/shm"
#: Every namespace of this test session starts with this, so concurrent sessions never see each other.
SESSION = f"t{uuid.uuid4().hex[:8]}"
_numbers = itertools.count()


def new_namespace() -> str:
    return f"{SESSION}_{next(_numbers)}"


def session_entries(directory: str = SHM) -> set[str]:
    return {name for name in os.listdir(directory) if name.startswith(f"omni-{SESSION}")}


@pytest.fixture(autouse=True)
def shm_left_as_found() -> Iterator[None]:
    """Fail any test that leaves a new ``omni-*`` entry of this session in /dev/shm."""
    before = session_entries()
    yield
    left = session_entries() - before
    for name in left:  # do not let one leak cascade into every following test
        os.unlink(os.path.join(SHM, name))
    assert not left, f"test left entries in {SHM}: {sorted(left)}"


@pytest.fixture
def namespace() -> str:
    return new_namespace()


@pytest.fixture
def make_connector(namespace: str) -> Iterator[Callable[..., SharedMemoryConnector]]:
    """Factory of connectors sharing this test's namespace (through the plugin registry); all closed at the end."""
    made: list[SharedMemoryConnector] = []

    def make(**extra: Any) -> SharedMemoryConnector:
        spec = ConnectorSpec("SharedMemoryConnector", {"namespace": namespace, **extra})
        connector = OmniConnectorFactory.create_connector(spec)
        assert isinstance(connector, SharedMemoryConnector)
        made.append(connector)
        return connector

    yield make
    for connector in made:
        connector.close()
