"""omni-pipeline tests use the installed plugins (omni-shm moves the examples' payloads): real discovery."""

from __future__ import annotations

import os

import pytest

#: /dev/shm entries of the example's shared-memory namespace (``ttv``), which only these tests use.
EXAMPLE_ENTRIES = "omni-ttv-"


@pytest.fixture(autouse=True)
def no_shm_leaks():
    """Every test leaves /dev/shm as it found it (stage replicas close their connectors on every way out)."""
    before = set(os.listdir("/dev/shm"))
    yield
    leaked = sorted(n for n in set(os.listdir("/dev/shm")) - before if n.startswith(EXAMPLE_ENTRIES))
    assert leaked == [], f"the test leaked /dev/shm entries: {leaked}"
