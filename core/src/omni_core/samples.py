"""Deterministic sample payloads (the same in every process), used by the conformance kit and child connectors."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _tensor(kind: str) -> Any:
    import torch

    gen = torch.Generator().manual_seed(len(kind))
    base = torch.randn(4, 6, generator=gen)
    return {
        "tensor_float32": base,
        "tensor_bfloat16": base.to(torch.bfloat16),
        "tensor_float16": base.to(torch.float16),
        "tensor_float8": base.to(torch.float8_e4m3fn),
        "tensor_int64": torch.arange(-5, 7, dtype=torch.int64),
        "tensor_bool": base > 0,
        "tensor_complex64": torch.complex(base, -base),
        "tensor_0d": torch.tensor(3.5),
        "tensor_empty": torch.empty(0, 3),
        "tensor_noncontiguous": base.t()[::2],
        "tensor_1mib": torch.arange(262144, dtype=torch.float32),
    }[kind]


def _ndarray() -> Any:
    import numpy as np

    return np.arange(24, dtype=np.float32).reshape(4, 6)[:, ::2]


_PLAIN: dict[str, Callable[[], Any]] = {
    "none": lambda: None,
    "bool": lambda: True,
    "int": lambda: -(2**40),
    "float": lambda: 3.25,
    "str": lambda: "héllo wörld",
    "bytes": lambda: bytes(range(256)) * 4,
    "empty_bytes": lambda: b"",
    "empty_dict": lambda: {},
    "zero": lambda: 0,
    "list": lambda: [1, "two", 3.0, None],
    "tuple": lambda: (1, ("nested", 2), [3, (4,)]),
    "request_dict": lambda: {
        "request_id": "req-42",
        "engine_inputs": {"prompt_token_ids": list(range(64)), "mm": {1: "int key", 2: b"\x00\x01"}},
        "sampling_params": {"temperature": 0.7, "max_tokens": 128, "stop": ("</s>",)},
    },
    "magic_key_dict": lambda: {"__tensor__": True, "dtype": "float32", "shape": [1], "data": b"\x00" * 4},
}

TENSOR_KINDS = (
    "tensor_float32",
    "tensor_bfloat16",
    "tensor_float16",
    "tensor_float8",
    "tensor_int64",
    "tensor_bool",
    "tensor_complex64",
    "tensor_0d",
    "tensor_empty",
    "tensor_noncontiguous",
    "tensor_1mib",
)
PAYLOAD_KINDS: tuple[str, ...] = (*_PLAIN, *TENSOR_KINDS, "ndarray", "tensor_in_dict")


def request_dict(token_ids: int = 150) -> dict[str, Any]:
    """A request as one stage hands it to the next (the benchmarks' small payload; 758 bytes framed as is)."""
    return {
        "engine_inputs": {
            "prompt_token_ids": list(range(1000, 1000 + token_ids)),
            "prompt": "Describe the picture. " * 4,
        },
        "sampling_params": {"temperature": 0.7, "top_p": 0.95, "max_tokens": 512, "stop": ["</s>"]},
        "metadata": {"stage_transition": "0->1", "timestamp": 1700000000.0, "request_id": "req-0123456789"},
    }


def make_payload(kind: str) -> Any:
    """The payload named ``kind`` (deterministic, so two processes build the same one)."""
    if kind in _PLAIN:
        return _PLAIN[kind]()
    if kind == "ndarray":
        return _ndarray()
    if kind == "tensor_in_dict":
        return {"hidden": _tensor("tensor_bfloat16"), "ids": (1, 2, 3), "meta": {"stage": "talker"}}
    return _tensor(kind)
