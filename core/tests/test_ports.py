"""The ZMQ port formula, its constants, and collision detection (upstream collides silently)."""

from __future__ import annotations

import pytest

from omni_core import (
    KV_RANK_PORT_STRIDE,
    KV_REPLICA_PORT_STRIDE,
    KV_TRANSFER_PORT_OFFSET,
    PortCollisionError,
    compute_connector_zmq_port,
)
from omni_core.ports import PortPlan


def test_constants_match_upstream() -> None:
    assert (KV_RANK_PORT_STRIDE, KV_REPLICA_PORT_STRIDE, KV_TRANSFER_PORT_OFFSET) == (16, 1024, 100)


@pytest.mark.parametrize(
    "kwargs, port",
    [
        ({"purpose": "kv_transfer", "from_stage": 0, "local_rank": 1}, 50167),
        ({"purpose": "orchestrator", "from_stage": 0}, 50251),
        ({"purpose": "request_forwarding", "from_stage": 3, "local_rank": 2, "replica_id": 1}, 50051 + 1024 + 32 + 3),
    ],
)
def test_formula_matches_upstream_examples(kwargs: dict, port: int) -> None:
    assert compute_connector_zmq_port(50051, **kwargs) == port


def test_rank_6_stage_4_collision_names_both_uses() -> None:
    with pytest.raises(
        PortCollisionError,
        match=r"request_forwarding \(from_stage 4, local_rank 6.*collides with "
        r"kv_transfer \(from_stage 0, local_rank 0",
    ):
        compute_connector_zmq_port(50051, purpose="request_forwarding", from_stage=4, local_rank=6)


def test_kv_rank_7_runs_into_the_orchestrator_block() -> None:
    with pytest.raises(PortCollisionError, match="collides with orchestrator"):
        compute_connector_zmq_port(50051, purpose="kv_transfer", from_stage=0, local_rank=7)


def test_every_valid_use_maps_to_a_distinct_port() -> None:
    seen: dict[int, tuple] = {}
    for purpose in ("request_forwarding", "kv_transfer", "orchestrator"):
        for replica in range(3):
            for rank in range(16):
                for stage in range(16):
                    try:
                        port = compute_connector_zmq_port(
                            10000, purpose=purpose, from_stage=stage, local_rank=rank, replica_id=replica
                        )
                    except PortCollisionError:
                        continue
                    use = (purpose, replica, rank, stage)
                    assert seen.setdefault(port, use) == use, f"{use} and {seen[port]} share port {port}"
    assert len(seen) > 3 * 2 * 6 * 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"purpose": "bogus", "from_stage": 0}, "purpose"),
        ({"purpose": "kv_transfer", "from_stage": 16}, "from_stage"),
        ({"purpose": "kv_transfer", "from_stage": -1}, "from_stage"),
        ({"purpose": "kv_transfer", "from_stage": 0, "local_rank": -1}, "local_rank"),
        ({"purpose": "kv_transfer", "from_stage": 0, "replica_id": 70}, "outside 1..65535"),
    ],
)
def test_bad_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        compute_connector_zmq_port(50051, **kwargs)


def test_port_plan_names_both_claimants() -> None:
    plan = PortPlan()
    plan.claim(6000, "edge 0->1")
    plan.claim(6000, "edge 0->1")
    with pytest.raises(PortCollisionError, match="edge 0->1 and edge 0->2"):
        plan.claim(6000, "edge 0->2")
