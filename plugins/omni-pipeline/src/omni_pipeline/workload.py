"""The ``workload`` section of a pipeline config and the payloads it makes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from omni_core import ConfigError

DTYPES = ("float16", "bfloat16", "float32", "uint8")
FORWARDING = ("stages", "orchestrator")


@dataclass(frozen=True)
class Workload:
    """How many requests to drive and what each stage emits per request.

    requests: number of requests.
    tensor_bytes: bytes of the hidden-state tensor each stage emits (0 = none).
    dtype: its dtype.
    kv_cache_bytes: bytes of a KV-cache-like tensor each stage also sends through a KV pipe (0 = none).
    in_flight: requests in the graph at once.
    timeout_s: seconds a stage waits for a payload before reporting it lost.
    replicas: processes per stage id (default 1 each), e.g. ``{1: 2}``.
    kill_replica: ``{stage: S, after: N}`` SIGKILLs one replica of stage S after N finished requests.
    forwarding: who puts a stage's output on its outgoing edges: ``stages`` (each stage, over the connectors it
        creates as sender) or ``orchestrator`` (stages hand their output back and the orchestrator puts it, over the
        connectors ``initialize_orchestrator_connectors`` creates: it is the sender on every edge).
    """

    requests: int = 8
    tensor_bytes: int = 1 << 20
    dtype: str = "float16"
    kv_cache_bytes: int = 0
    in_flight: int = 4
    timeout_s: float = 60.0
    replicas: Mapping[int, int] = field(default_factory=dict)
    kill_replica: Mapping[str, int] | None = None
    forwarding: str = "stages"

    @classmethod
    def from_config(cls, raw: Any) -> Workload:
        """Parse ``workload:``; errors name the key at fault."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ConfigError(f"workload must be a mapping, got {type(raw).__name__}")
        fields = {f: getattr(cls(), f) for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ConfigError(f"workload: unknown key(s) {unknown}; valid keys: {', '.join(fields)}")
        values = {**fields, **raw}
        for key in ("requests", "tensor_bytes", "kv_cache_bytes", "in_flight"):
            value = values[key]
            minimum = 1 if key in ("requests", "in_flight") else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ConfigError(f"workload.{key} must be an integer >= {minimum}, got {value!r}")
        if values["dtype"] not in DTYPES:
            raise ConfigError(f"workload.dtype must be one of {DTYPES}, got {values['dtype']!r}")
        if not isinstance(values["timeout_s"], (int, float)) or values["timeout_s"] <= 0:
            raise ConfigError(f"workload.timeout_s must be a positive number, got {values['timeout_s']!r}")
        if values["forwarding"] not in FORWARDING:
            raise ConfigError(f"workload.forwarding must be one of {FORWARDING}, got {values['forwarding']!r}")
        values["replicas"] = _replicas(values["replicas"])
        values["kill_replica"] = _kill_replica(values["kill_replica"], values["replicas"])
        return cls(**values)

    def replica_count(self, stage_id: int) -> int:
        return self.replicas.get(stage_id, 1)


def _replicas(raw: Any) -> dict[int, int]:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"workload.replicas must map stage ids to counts, got {raw!r}")
    out = {}
    for stage, count in raw.items():
        stage = int(stage) if isinstance(stage, str) and stage.isdigit() else stage
        if isinstance(stage, bool) or not isinstance(stage, int) or stage < 0:
            raise ConfigError(f"workload.replicas: stage id {stage!r} must be a non-negative integer")
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 16:
            raise ConfigError(f"workload.replicas[{stage}] must be an integer from 1 to 16, got {count!r}")
        out[stage] = count
    return out


def _kill_replica(raw: Any, replicas: Mapping[int, int]) -> dict[str, int] | None:
    if raw is None:
        return None
    if not isinstance(raw, Mapping) or set(raw) - {"stage", "after"} or "stage" not in raw:
        raise ConfigError(f"workload.kill_replica must be {{stage: S, after: N}}, got {raw!r}")
    stage, after = raw["stage"], raw.get("after", 1)
    if isinstance(stage, bool) or not isinstance(stage, int) or replicas.get(stage, 1) < 2:
        raise ConfigError(f"workload.kill_replica: stage {stage!r} needs at least 2 replicas (workload.replicas)")
    if isinstance(after, bool) or not isinstance(after, int) or after < 0:
        raise ConfigError(f"workload.kill_replica.after must be a non-negative integer, got {after!r}")
    return {"stage": stage, "after": after}


def _seed(request_id: str, stage_id: int, label: str) -> int:
    return int.from_bytes(
        hashlib.blake2b(f"{request_id}/{stage_id}/{label}".encode(), digest_size=8).digest(), "little"
    )


def _tensor(nbytes: int, dtype_name: str, seed: int) -> Any:
    import torch

    dtype = getattr(torch, dtype_name)
    count = max(1, nbytes // torch.empty((), dtype=dtype).element_size())
    values = torch.randint(0, 256, (count,), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))
    return values.to(dtype)


def stage_output(request_id: str, stage_id: int, workload: Workload) -> dict[str, Any]:
    """The payload ``stage_id`` emits for ``request_id`` (deterministic)."""
    out: dict[str, Any] = {
        "request_id": request_id,
        "stage": stage_id,
        "tokens": [(_seed(request_id, stage_id, "t") + i) % 50000 for i in range(16)],
        "sampling_params": {"temperature": 0.7, "max_tokens": 64},
    }
    if workload.tensor_bytes:
        out["hidden"] = _tensor(workload.tensor_bytes, workload.dtype, _seed(request_id, stage_id, "h"))
    return out


def kv_cache(request_id: str, stage_id: int, workload: Workload) -> Any:
    """A KV-cache-like tensor ``[2, layers, tokens, heads*dim]`` for the KV pipe."""
    tensor = _tensor(workload.kv_cache_bytes, workload.dtype, _seed(request_id, stage_id, "kv"))
    return tensor[: (tensor.numel() // 8) * 8].reshape(2, 4, -1)
