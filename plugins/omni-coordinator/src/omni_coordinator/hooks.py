"""Entry-point hooks of omni-coordinator (imports nothing heavy)."""

from __future__ import annotations

from omni_core import CliCommand, CoordinatorRegistration, PolicyRegistration, hookimpl


@hookimpl
def omni_register_load_balancers() -> list[PolicyRegistration]:
    return [
        PolicyRegistration("random", "omni_coordinator.load_balancer:RandomBalancer", "uniformly random replica"),
        PolicyRegistration("round-robin", "omni_coordinator.load_balancer:RoundRobinBalancer", "replicas in turn"),
        PolicyRegistration(
            "least-queue-length", "omni_coordinator.load_balancer:LeastQueueLengthBalancer", "shortest queue first"
        ),
    ]


@hookimpl
def omni_register_cli_commands() -> list[CliCommand]:
    return [CliCommand("coordinator", "run an OmniCoordinator (omni coordinator serve)", "omni_coordinator.cli:main")]


@hookimpl
def omni_register_coordinators() -> list[CoordinatorRegistration]:
    return [
        CoordinatorRegistration(
            name="omni",
            runtime="omni_coordinator.runtime:OmniCoordinatorRuntime",
            hub_client="omni_coordinator.hub_client:OmniCoordClientForHub",
            stage_client="omni_coordinator.stage_client:create_stage_coord_client",
            load_balancer="omni_coordinator.load_balancer:build_load_balancer_factory",
            description="OmniCoordinator over ZMQ: replicas register and heartbeat, hubs follow the list",
        )
    ]
