"""ZMQ port layout for endpoint-resolved connectors, with collision detection.

port = base + purpose_offset + replica_id * 1024 + local_rank * 16 + from_stage

Upstream uses the same formula but lets one use silently land on another's
port (request_forwarding rank 6 stage 4 == kv_transfer rank 0 stage 0).  Here
every computed port is decoded back into its canonical use; if that is not the
use asked for, :class:`PortCollisionError` names both.
"""

from __future__ import annotations

from .errors import PortCollisionError

REQUEST_FORWARDING_PORT_OFFSET = 0
KV_TRANSFER_PORT_OFFSET = 100
ORCHESTRATOR_PORT_OFFSET = 200
KV_RANK_PORT_STRIDE = 16
KV_REPLICA_PORT_STRIDE = 1024

PURPOSE_OFFSETS: dict[str, int] = {
    "request_forwarding": REQUEST_FORWARDING_PORT_OFFSET,
    "kv_transfer": KV_TRANSFER_PORT_OFFSET,
    "orchestrator": ORCHESTRATOR_PORT_OFFSET,
}


def describe_use(purpose: str, from_stage: int, local_rank: int, replica_id: int) -> str:
    return f"{purpose} (from_stage {from_stage}, local_rank {local_rank}, replica {replica_id})"


def _canonical_use(delta: int) -> tuple[str, int, int, int]:
    replica_id, within = divmod(delta, KV_REPLICA_PORT_STRIDE)
    purpose = max((p for p, off in PURPOSE_OFFSETS.items() if off <= within), key=PURPOSE_OFFSETS.__getitem__)
    local_rank, from_stage = divmod(within - PURPOSE_OFFSETS[purpose], KV_RANK_PORT_STRIDE)
    return purpose, from_stage, local_rank, replica_id


def compute_connector_zmq_port(
    base_port: int, *, purpose: str, from_stage: int, local_rank: int = 0, replica_id: int = 0
) -> int:
    """Return the ZMQ port for one use; raise if it would collide with another use."""
    if purpose not in PURPOSE_OFFSETS:
        raise ValueError(f"purpose must be one of {sorted(PURPOSE_OFFSETS)}, got {purpose!r}")
    for name, value in (
        ("base_port", base_port),
        ("from_stage", from_stage),
        ("local_rank", local_rank),
        ("replica_id", replica_id),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative int, got {value!r}")
    if from_stage >= KV_RANK_PORT_STRIDE:
        raise ValueError(f"from_stage must be < {KV_RANK_PORT_STRIDE}, got {from_stage}")
    delta = (
        PURPOSE_OFFSETS[purpose] + replica_id * KV_REPLICA_PORT_STRIDE + local_rank * KV_RANK_PORT_STRIDE + from_stage
    )
    port = base_port + delta
    if not 1 <= port <= 65535:
        raise ValueError(
            f"port {port} for {describe_use(purpose, from_stage, local_rank, replica_id)} "
            f"is outside 1..65535 (base {base_port})"
        )
    canonical = _canonical_use(delta)
    if canonical != (purpose, from_stage, local_rank, replica_id):
        raise PortCollisionError(
            f"port {port} (base {base_port}) for {describe_use(purpose, from_stage, local_rank, replica_id)} "
            f"collides with {describe_use(*canonical)}; give this edge its own zmq_port base"
        )
    return port


class PortPlan:
    """Ports handed out in one process; a second use of a port raises naming both uses."""

    def __init__(self) -> None:
        self._uses: dict[int, str] = {}

    def claim(self, port: int, use: str) -> int:
        other = self._uses.get(port)
        if other is not None and other != use:
            raise PortCollisionError(f"port {port} is assigned to both {other} and {use}")
        self._uses[port] = use
        return port
