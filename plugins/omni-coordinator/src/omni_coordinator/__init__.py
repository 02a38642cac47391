"""omni-coordinator: stage replica coordinator, stage/hub clients, runtime and load balancers.

Names load on first access, so the plugin's entry point (``omni_coordinator.hooks``)
imports neither zmq nor any of these modules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omni_core import lazy_names

__version__ = "0.1.0"

_LAZY: dict[str, str] = {
    "ReplicaStatus": "messages",
    "ReplicaEvent": "messages",
    "ReplicaInfo": "messages",
    "ReplicaList": "messages",
    "OmniCoordinator": "coordinator",
    "OmniCoordClientForStage": "stage_client",
    "create_stage_coord_client": "stage_client",
    "OmniCoordClientForHub": "hub_client",
    "OmniCoordinatorRuntime": "runtime",
    "CurveServerKeys": "auth",
    "CurveClientKeys": "auth",
    "Task": "load_balancer",
    "LoadBalancer": "load_balancer",
    "LoadBalancingPolicy": "load_balancer",
    "RandomBalancer": "load_balancer",
    "RoundRobinBalancer": "load_balancer",
    "LeastQueueLengthBalancer": "load_balancer",
    "build_load_balancer_factory": "load_balancer",
}

__all__ = [
    "CurveClientKeys",
    "CurveServerKeys",
    "LeastQueueLengthBalancer",
    "LoadBalancer",
    "LoadBalancingPolicy",
    "OmniCoordClientForHub",
    "OmniCoordClientForStage",
    "OmniCoordinator",
    "OmniCoordinatorRuntime",
    "RandomBalancer",
    "ReplicaEvent",
    "ReplicaInfo",
    "ReplicaList",
    "ReplicaStatus",
    "RoundRobinBalancer",
    "Task",
    "__version__",
    "build_load_balancer_factory",
    "create_stage_coord_client",
]

__getattr__, __dir__ = lazy_names(__name__, _LAZY)


if TYPE_CHECKING:
    from .auth import CurveClientKeys, CurveServerKeys
    from .coordinator import OmniCoordinator
    from .hub_client import OmniCoordClientForHub
    from .load_balancer import (
        LeastQueueLengthBalancer,
        LoadBalancer,
        LoadBalancingPolicy,
        RandomBalancer,
        RoundRobinBalancer,
        Task,
        build_load_balancer_factory,
    )
    from .messages import ReplicaEvent, ReplicaInfo, ReplicaList, ReplicaStatus
    from .runtime import OmniCoordinatorRuntime
    from .stage_client import OmniCoordClientForStage, create_stage_coord_client
