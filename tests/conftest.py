"""Cross-package tests use the real, installed plugins (real entry-point discovery)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


@pytest.fixture(autouse=True)
def no_shm_leaks():
    """Every test leaves /dev/shm as it found it."""
    before = set(os.listdir(SHM))
    yield
    leaked = sorted(set(os.listdir(SHM)) - before)
    assert not leaked, f"test leaked /dev/shm entries: {leaked}"
