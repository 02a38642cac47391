"""A vLLM engine in a child process, driven by JSON lines (tests and benchmarks; nothing is pickled).

Parent side: :class:`Engine` (the child in its own process group; ``close``/``kill`` end the whole
group and remove the shared memory vLLM leaves when its processes are killed).  Child side:

``python -m omni_vllm.driver '<json>'`` builds ``vllm.LLM(**json["llm"])`` (``kv_transfer_config`` as a
dict), prints ``{"ready": true, "start_s": ...}`` and answers one JSON line per command line:

- ``{"op": "generate", "prompts": [[token ids], ...], "max_tokens": N, "kv_transfer_params": [dict | null, ...]}``
  -> ``{"outputs": [{"tokens", "num_cached_tokens", "kv_transfer_params"}], "seconds"}`` (greedy, one batch);
- ``{"op": "metrics"}`` -> ``{"metrics": {name: value}}``: vLLM's counters (summed over labels);
- ``{"op": "close"}`` -> ``{"closed": true}``, then the engine shuts down and the process exits.

"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from typing import IO, Any

from omni_core.remote import JsonLinesChild

#: Engine start-up can take a minute when several start at once on two cores.
START_TIMEOUT_S = 300.0
#: How long one command may take once the engine is up.
COMMAND_TIMEOUT_S = 300.0

# -- parent side -----------------------------------------------------------------------------------------
class Engine(JsonLinesChild):
    """``vllm.LLM`` in a child process group (the driver, its engine core and its workers)."""

    def __init__(self, args: dict[str, Any], *, prefix: Sequence[str] = (), env: dict[str, str] | None = None):
        command = [*prefix, "setsid", sys.executable, "-m", "omni_vllm.driver", json.dumps({"llm": args})]
        self.tmpdir = tempfile.mkdtemp(prefix="omni-vllm-engine-")  # removed with the engine, also if killed
        env = {"VLLM_CPU_KVCACHE_SPACE": "1", "TMPDIR": self.tmpdir, **(env or {})}
        super().__init__(command, timeout=START_TIMEOUT_S, env=env)
        self.timeout = COMMAND_TIMEOUT_S

    def generate(
        self, prompts: Sequence[Sequence[int]], max_tokens: int = 8, params: Sequence[dict | None] | None = None
    ) -> list[dict[str, Any]]:
        """Greedy outputs (``tokens``, ``num_cached_tokens``, ``kv_transfer_params``) of one batch."""
        return self.generate_timed(prompts, max_tokens, params)[0]

    def generate_timed(
        self, prompts: Sequence[Sequence[int]], max_tokens: int = 8, params: Sequence[dict | None] | None = None
    ) -> tuple[list[dict[str, Any]], float]:
        """The outputs of one batch and the seconds ``LLM.generate`` took in the engine's process."""
        command = {"op": "generate", "prompts": [list(p) for p in prompts], "max_tokens": max_tokens,
                   "kv_transfer_params": list(params) if params is not None else None}  # fmt: skip
        answer = self.call(command)
        return answer["outputs"], answer["seconds"]

    def metrics(self) -> dict[str, float]:
        return self.call({"op": "metrics"})["metrics"]

    def kill(self) -> None:
        """SIGKILL the whole engine: driver, engine core and workers."""
        self._ending(super().kill)

    def close(self) -> None:
        """Shut the engine down (its connector closes); whatever is left of its group is killed."""
        self._ending(super().close)

    def _ending(self, end: Callable[[], None]) -> None:
        """Run ``end``, then kill what is left of the group, as a crash would.

        The group's multiprocessing resource tracker is spared: once the processes it watches are gone,
        it removes the shared memory and semaphores they registered, as it does after any crash.  What
        else the processes had mapped and is still there after that is removed here, and so is the
        engine's temporary directory (torch.distributed's file store, ZMQ's IPC sockets).
        """
        members = _group(self.proc.pid)
        trackers = {pid for pid in members if _is_resource_tracker(pid)}
        segments = {path for pid in members for path in _leftovers(pid)}
        try:
            end()
        finally:
            for pid in _group(self.proc.pid):  # members found by pgid: never a recycled pid's group
                if pid not in trackers:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while trackers & set(_group(self.proc.pid)) and time.monotonic() < deadline:
                time.sleep(0.05)
            for pid in trackers & set(_group(self.proc.pid)):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for path in segments:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            shutil.rmtree(self.tmpdir, ignore_errors=True)


def _group(pgid: int) -> list[int]:
    """Processes of process group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.getpgid(int(entry)) == pgid:
                    members.append(int(entry))
    return members


def _is_resource_tracker(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
            return b"multiprocessing.resource_tracker" in cmdline.read()
    except OSError:
        return False


def _leftovers(pid: int) -> set[str]:
    """Python multiprocessing's shared memory and semaphores (``/dev/shm/psm_*``, ``sem.mp-*``) ``pid`` maps.

    vLLM's processes make them; their resource tracker removes them after an exit, unless it is killed too.
    """
    found = set()
    with contextlib.suppress(OSError), open(f"/proc/{pid}/maps") as maps:
        for line in maps:
            path = line.rstrip("\n").partition("/dev/shm/")[2]
            if path.startswith(("psm_", "sem.mp-")):
                found.add(f"/dev/shm/{path.split()[0]}")
    return found


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


# -- child side ------------------------------------------------------------------------------------------
_replies: IO[str] = sys.stdout


def _answer(message: dict[str, Any]) -> None:
    _replies.write(json.dumps(message) + "\n")
    _replies.flush()


def _keep_stdout_for_replies() -> None:
    """Answers go to the real stdout; everything else written there (vLLM's logs, its children's) to stderr."""
    global _replies
    _replies = os.fdopen(os.dup(1), "w")
    sys.stdout.flush()
    os.dup2(2, 1)


def _generate(llm: Any, command: dict[str, Any]) -> dict[str, Any]:
    from vllm import SamplingParams

    prompts = command["prompts"]
    params = command.get("kv_transfer_params") or [None] * len(prompts)
    max_tokens = int(command.get("max_tokens", 8))
    sampling = [
        SamplingParams(
            max_tokens=max_tokens, temperature=0.0, detokenize=False,
            extra_args={"kv_transfer_params": p} if p else None,
        )
        for p in params
    ]  # fmt: skip
    started = time.perf_counter()
    outputs = llm.generate([{"prompt_token_ids": ids} for ids in prompts], sampling, use_tqdm=False)
    seconds = time.perf_counter() - started
    return {
        "seconds": seconds,
        "outputs": [_output(out) for out in outputs],
    }


def _output(out: Any) -> dict[str, Any]:
    return {
        "tokens": list(out.outputs[0].token_ids),
        "num_cached_tokens": out.num_cached_tokens or 0,
        "kv_transfer_params": out.kv_transfer_params,
    }


def _metrics(llm: Any) -> dict[str, float]:
    totals: dict[str, float] = {}
    for metric in llm.get_metrics():
        value = getattr(metric, "value", None)
        if isinstance(value, (int, float)):
            totals[metric.name] = totals.get(metric.name, 0) + value
    return totals


def main(argv: list[str]) -> int:
    config = json.loads(argv[0])
    _keep_stdout_for_replies()
    started = time.perf_counter()
    from vllm import LLM
    from vllm.config import KVTransferConfig

    kwargs = dict(config["llm"])
    if kwargs.get("kv_transfer_config") is not None:
        kwargs["kv_transfer_config"] = KVTransferConfig(**kwargs["kv_transfer_config"])
    llm = LLM(**kwargs)
    _answer({"ready": True, "start_s": time.perf_counter() - started})
    for line in sys.stdin:
        command = json.loads(line)
        op = command.get("op")
        if op == "generate":
            _answer(_generate(llm, command))
        elif op == "metrics":
            _answer({"metrics": _metrics(llm)})
        elif op == "close":
            break
        else:
            _answer({"error": f"unknown op {op!r}"})
    _answer({"closed": True})
    return 0


if __name__ == "__main__":  # the engine core is a spawned process: this guard is required
    raise SystemExit(main(sys.argv[1:]))
