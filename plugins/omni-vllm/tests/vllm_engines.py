"""Real vLLM engines for the tests: each in a child process (omni_vllm.driver), in its own process group."""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from omni_vllm.driver import Engine, close_engines, start_engines

__all__ = ["BLOCK_SIZE", "Engine", "close_engines", "generate_counted", "llm_args", "omni_kv_config", "start_engines"]

#: The tiny model: a config.json only, in the repository; its weights are made by :func:`tiny_model`.
CONFIG = Path(__file__).parent / "tiny_model" / "config.json"
BLOCK_SIZE = 32
#: Weights drawn with this spread (norms 1): vLLM's dummy weights (uniform +-1e-3) make the output
#: ignore the context, so a wrong KV cache would go unnoticed; these make every token depend on it.
WEIGHT_STD = 0.1
_made: list[Path] = []
_lock = threading.Lock()


def tiny_model() -> Path:
    """A directory with the tiny model's config.json and seeded random weights (made once per process)."""
    with _lock:
        if not _made:
            directory = Path(tempfile.mkdtemp(prefix="omni-vllm-tiny-"))
            atexit.register(shutil.rmtree, directory, True)
            shutil.copy(CONFIG, directory / "config.json")
            _write_weights(json.loads(CONFIG.read_text()), directory / "model.safetensors")
            _made.append(directory)
        return _made[0]


def _write_weights(config: dict[str, Any], path: Path) -> None:
    """Qwen2 weights: normal(0, WEIGHT_STD) matrices and biases, norms of 1, from a fixed seed."""
    import torch
    from safetensors.torch import save_file

    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    head = hidden // config["num_attention_heads"]
    q, kv = config["num_attention_heads"] * head, config["num_key_value_heads"] * head
    generator = torch.Generator().manual_seed(0)

    def draw(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, generator=generator) * WEIGHT_STD).to(torch.bfloat16)

    ones = torch.ones(hidden, dtype=torch.bfloat16)
    weights = {"model.embed_tokens.weight": draw(vocab, hidden), "lm_head.weight": draw(vocab, hidden),
               "model.norm.weight": ones}  # fmt: skip
    for layer in range(config["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        weights.update({
            p + "input_layernorm.weight": ones, p + "post_attention_layernorm.weight": ones,
            p + "self_attn.q_proj.weight": draw(q, hidden), p + "self_attn.q_proj.bias": draw(q),
            p + "self_attn.k_proj.weight": draw(kv, hidden), p + "self_attn.k_proj.bias": draw(kv),
            p + "self_attn.v_proj.weight": draw(kv, hidden), p + "self_attn.v_proj.bias": draw(kv),
            p + "self_attn.o_proj.weight": draw(hidden, q),
            p + "mlp.gate_proj.weight": draw(inter, hidden), p + "mlp.up_proj.weight": draw(inter, hidden),
            p + "mlp.down_proj.weight": draw(hidden, inter),
        })  # fmt: skip
    save_file({name: tensor.clone() for name, tensor in weights.items()}, str(path))


def llm_args(kv_transfer_config: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    """``vllm.LLM`` arguments for the tiny model (local weights, no hub, no tokenizer)."""
    args: dict[str, Any] = {
        "model": str(tiny_model()), "load_format": "safetensors", "skip_tokenizer_init": True, "enforce_eager": True,
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


def generate_counted(
    engine: Engine, prompts: list[list[int]], params: list[dict | None] | None = None
) -> tuple[list[dict[str, Any]], Callable[[str], float]]:
    """The engine's outputs for one batch, and ``grew(name)``: how much counter ``name`` grew meanwhile."""
    before = engine.metrics()
    outputs = engine.generate(prompts, params=params)
    after = engine.metrics()
    return outputs, lambda name: after.get(name, 0) - before.get(name, 0)
