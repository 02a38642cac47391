"""A vLLM engine in a child process, driven by JSON lines (tests and benchmarks; nothing is pickled).

``python -m omni_vllm.driver '<json>'`` builds ``vllm.LLM(**json["llm"])`` (``kv_transfer_config`` as a
dict), prints ``{"ready": true, "start_s": ...}`` and answers one JSON line per command line:

- ``{"op": "generate", "prompts": [[token ids], ...], "max_tokens": N, "kv_transfer_params": [dict | null, ...]}``
  -> ``{"outputs": [{"tokens", "num_cached_tokens", "kv_transfer_params"}], "seconds"}`` (greedy, one batch);
- ``{"op": "metrics"}`` -> ``{"metrics": {name: value}}``: vLLM's counters (summed over labels);
- ``{"op": "close"}`` -> ``{"closed": true}``, then the engine shuts down and the process exits.

Drive it with :class:`omni_core.remote.JsonLinesChild`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import IO, Any

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
