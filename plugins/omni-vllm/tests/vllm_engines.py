"""Real vLLM engines for the tests: each in a child process (omni_vllm.driver), in its own process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omni_core.remote import JsonLinesChild

#: The tiny model: a config.json only; weights are vLLM's dummy weights (deterministic for the seed).
MODEL_DIR = Path(__file__).parent / "tiny_model"
BLOCK_SIZE = 32
#: Engine start-up can take a minute when several start at once on two cores.
START_TIMEOUT_S = 300.0


def llm_args(kv_transfer_config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` arguments for the tiny model (no hub, no tokenizer)."""
    args: dict[str, Any] = {
        "model": str(MODEL_DIR), "load_format": "dummy", "skip_tokenizer_init": True, "enforce_eager": True,
        "dtype": "bfloat16", "max_model_len": 1024, "max_num_seqs": 4, "seed": 0, "disable_log_stats": False,
        "block_size": BLOCK_SIZE,
    }  # fmt: skip
    if kv_transfer_config is not None:
        args["kv_transfer_config"] = kv_transfer_config
    args.update(overrides)
    return args


def omni_kv_config(role: str, connector: dict[str, Any], **settings: Any) -> dict[str, Any]:
    """A ``kv_transfer_config`` for OmniKVConnector over ``connector`` (``{"name", "extra"}``)."""
    return {
        "kv_connector": "OmniKVConnector", "kv_role": role, "kv_load_failure_policy": "recompute",
        "kv_connector_extra_config": {"omni_connector": connector, **settings},
    }  # fmt: skip


class Engine(JsonLinesChild):
    """``vllm.LLM`` in a child process group (the driver, its engine core and its workers)."""

    def __init__(self, args: dict[str, Any], *, prefix: Sequence[str] = (), env: dict[str, str] | None = None):
        command = [*prefix, "setsid", sys.executable, "-m", "omni_vllm.driver", json.dumps({"llm": args})]
        super().__init__(command, timeout=START_TIMEOUT_S, env={"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})})
        self.timeout = 120.0

    def generate(
        self, prompts: Sequence[Sequence[int]], max_tokens: int = 8, params: Sequence[dict | None] | None = None
    ) -> list[dict[str, Any]]:
        """Greedy outputs (``tokens``, ``num_cached_tokens``, ``kv_transfer_params``) of one batch."""
        command = {"op": "generate", "prompts": [list(p) for p in prompts], "max_tokens": max_tokens,
                   "kv_transfer_params": list(params) if params is not None else None}  # fmt: skip
        return self.call(command)["outputs"]

    def metrics(self) -> dict[str, float]:
        return self.call({"op": "metrics"})["metrics"]

    def kill(self) -> None:
        """SIGKILL the whole engine: driver, engine core and workers."""
        self._ending(super().kill)

    def close(self) -> None:
        """Shut the engine down (its connector closes); whatever is left of its group is killed."""
        self._ending(super().close)

    def _ending(self, end: Callable[[], None]) -> None:
        """Run ``end``, then kill what is left of the group and remove the shared memory vLLM left behind."""
        segments = {path for pid in _group(self.proc.pid) for path in _mapped_shm(pid)}
        try:
            end()
        finally:
            for pid in _group(self.proc.pid):  # members found by pgid: never a recycled pid's group
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for path in segments:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)


def _group(pgid: int) -> list[int]:
    """Processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
    return members


def _mapped_shm(pid: int) -> set[str]:
    """vLLM's shared-memory segments (``/dev/shm/psm_*``) process ``pid`` has mapped."""
    segments = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").partition("/dev/shm/")[2]
            if path.startswith("psm_"):
                segments.add(f"/dev/shm/{path.split()[0]}")
    return segments


def start_engines(*makers: Callable[[], Engine]) -> list[Engine]:
    """Start engines at the same time (start-up is mostly waiting); if one fails, kill the others."""
    results: list[Engine | BaseException | None] = [None] * len(makers)

    def run(index: int) -> None:
        try:
            results[index] = makers[index]()
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(makers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    failures = [r for r in results if not isinstance(r, Engine)]
    if failures:
        for engine in results:
            if isinstance(engine, Engine):
                engine.kill()
        raise RuntimeError(f"engine start failed: {failures[0]!r}") from (
            failures[0] if isinstance(failures[0], BaseException) else None
        )
    return [r for r in results if isinstance(r, Engine)]


def close_engines(*engines: Engine | None) -> None:
    """Close engines at the same time (vLLM's shutdown takes seconds each)."""
    threads = [threading.Thread(target=e.close) for e in engines if e is not None]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def delta(before: dict[str, float], after: dict[str, float], name: str) -> float:
    """How much counter ``name`` grew between two ``metrics()`` snapshots."""
    return after.get(name, 0) - before.get(name, 0)
