"""Load balancers: upstream's pinned picks, properties over changing lists, selection through plugins."""

from __future__ import annotations

import types
from collections.abc import Iterator
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from omni_coordinator import (
    LeastQueueLengthBalancer,
    LoadBalancer,
    LoadBalancingPolicy,
    RandomBalancer,
    ReplicaInfo,
    ReplicaStatus,
    RoundRobinBalancer,
    Task,
    build_load_balancer_factory,
    hooks,
)
from omni_core import PolicyRegistration, hookimpl
from omni_core.plugins import PluginRegistry, reset_plugin_registry

TASK: Task = {"request_id": "r"}


def replicas(*queues: int) -> list[ReplicaInfo]:
    return [ReplicaInfo(f"tcp://h:{5000 + i}", f"tcp://h:{6000 + i}", 0, ReplicaStatus.UP, q, 1.0, 1.0)
            for i, q in enumerate(queues)]


# -- upstream's pinned behaviour ---------------------------------------------------


def test_random_returns_index_in_range() -> None:
    assert all(0 <= RandomBalancer().select(TASK, replicas(0, 0, 0)) < 3 for _ in range(50))


def test_round_robin_cycles() -> None:
    balancer, listed = RoundRobinBalancer(), replicas(0, 0, 0)
    assert [balancer.select(TASK, listed) for _ in range(5)] == [0, 1, 2, 0, 1]


def test_round_robin_start_index_wraps() -> None:
    balancer, listed = RoundRobinBalancer(start_index=7), replicas(0, 0)
    assert [balancer.select(TASK, listed), balancer.select(TASK, listed)] == [1, 0]


@pytest.mark.parametrize("balancer", [RandomBalancer(), RoundRobinBalancer(), LeastQueueLengthBalancer()])
def test_empty_list_is_rejected(balancer: LoadBalancer) -> None:
    with pytest.raises(ValueError, match="replicas must not be empty"):
        balancer.select(TASK, [])


def test_least_queue_picks_minimum() -> None:
    assert LeastQueueLengthBalancer().select(TASK, replicas(2, 0, 5)) == 1


def test_least_queue_ties_go_to_random_choice() -> None:
    with mock.patch("omni_coordinator.load_balancer.random.choice", return_value=2) as choice:
        assert LeastQueueLengthBalancer().select(TASK, replicas(1, 1, 1)) == 2
    choice.assert_called_once_with([0, 1, 2])


def test_least_queue_rejects_negative() -> None:
    with pytest.raises(ValueError, match="queue_length must be non-negative"):
        LeastQueueLengthBalancer().select(TASK, replicas(1, -1))


# -- properties over changing replica lists -----------------------------------------

queues = st.lists(st.integers(min_value=0, max_value=20), min_size=1, max_size=8)


@settings(max_examples=150, deadline=None)
@given(st.lists(queues, min_size=1, max_size=12), st.integers(min_value=0, max_value=100))
def test_every_policy_returns_a_valid_index_as_the_list_changes(lists: list[list[int]], start: int) -> None:
    balancers = [RandomBalancer(), RoundRobinBalancer(start_index=start), LeastQueueLengthBalancer()]
    for queue_lengths in lists:
        listed = replicas(*queue_lengths)
        for balancer in balancers:
            assert 0 <= balancer.select(TASK, listed) < len(listed)


@settings(max_examples=150, deadline=None)
@given(queues, st.randoms(use_true_random=False))
def test_least_queue_always_picks_a_shortest_queue(queue_lengths: list[int], rnd) -> None:
    listed = replicas(*queue_lengths)
    rnd.shuffle(listed)
    assert listed[LeastQueueLengthBalancer().select(TASK, listed)].queue_length == min(queue_lengths)


@settings(max_examples=150, deadline=None)
@given(st.integers(min_value=1, max_value=8), st.integers(min_value=0, max_value=50), st.randoms(use_true_random=False))
def test_round_robin_visits_each_replica_once_per_cycle_in_any_order(n: int, start: int, rnd) -> None:
    balancer, listed = RoundRobinBalancer(start_index=start), replicas(*[0] * n)
    picks = []
    for _ in range(3 * n):
        rnd.shuffle(listed)  # the hub may list replicas in any order
        picks.append(listed[balancer.select(TASK, listed)].input_addr)
    for cycle in range(3):
        assert sorted(picks[cycle * n:(cycle + 1) * n]) == sorted(r.input_addr for r in listed)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.sets(st.integers(min_value=0, max_value=9), min_size=1), max_size=10),
       st.sets(st.integers(min_value=0, max_value=9), min_size=1))
def test_round_robin_is_fair_after_any_membership_history(history: list[set[int]], final: set[int]) -> None:
    """Whatever joined and left before, n picks over a stable list of n replicas pick each exactly once."""
    balancer, pool = RoundRobinBalancer(), replicas(*[0] * 10)
    for members in history:
        listed = [pool[i] for i in sorted(members)]
        assert 0 <= balancer.select(TASK, listed) < len(listed)
    listed = [pool[i] for i in sorted(final)]
    picks = [listed[balancer.select(TASK, listed)].input_addr for _ in listed]
    assert sorted(picks) == sorted(r.input_addr for r in listed)


# -- selection through the plugin system ------------------------------------------


@pytest.fixture
def registry() -> Iterator[PluginRegistry]:
    """An isolated registry holding only this package's hooks."""
    registry = reset_plugin_registry(autoload=False)
    assert registry is not None
    registry.register_plugin(hooks, "coordinator", "omni-coordinator")
    yield registry
    reset_plugin_registry()


class ShortestNameBalancer(LoadBalancer):
    def select(self, task: Task, replicas: list[ReplicaInfo]) -> int:
        return min(range(len(replicas)), key=lambda i: len(replicas[i].input_addr))


def _policy_plugin(name: str, target: str) -> types.SimpleNamespace:
    @hookimpl
    def omni_register_load_balancers() -> list[PolicyRegistration]:
        return [PolicyRegistration(name, target, "test policy")]

    return types.SimpleNamespace(omni_register_load_balancers=omni_register_load_balancers)


@pytest.mark.parametrize("policy", list(LoadBalancingPolicy))
def test_builtin_policies_resolve_by_name_and_enum(registry: PluginRegistry, policy: LoadBalancingPolicy) -> None:
    expected = {"random": RandomBalancer, "round-robin": RoundRobinBalancer,
                "least-queue-length": LeastQueueLengthBalancer}[policy.value]
    assert build_load_balancer_factory(policy.value) is expected
    assert build_load_balancer_factory(policy) is expected
    first, second = expected(), expected()
    assert first is not second  # the factory makes one balancer per pool


def test_third_party_policy_is_selected_by_name(registry: PluginRegistry) -> None:
    registry.register_plugin(_policy_plugin("shortest-name", f"{__name__}:ShortestNameBalancer"), "third", "omni-third")
    factory = build_load_balancer_factory("shortest-name")
    listed = [ReplicaInfo(a, a, 0, ReplicaStatus.UP, 0, 1.0, 1.0) for a in ("tcp://long-host:1", "tcp://h:1")]
    assert factory().select(TASK, listed) == 1


def test_unknown_policy_lists_the_valid_ones(registry: PluginRegistry) -> None:
    with pytest.raises(ValueError, match="unknown load-balancing policy 'fastest'; valid policies: "
                                         "least-queue-length, random, round-robin"):
        build_load_balancer_factory("fastest")


def test_a_typo_in_a_policy_gets_the_closest_name(registry: PluginRegistry) -> None:
    with pytest.raises(ValueError, match=r"policy 'round_robin' \(did you mean 'round-robin'\?\)"):
        build_load_balancer_factory("round_robin")


def test_policy_name_provided_twice_names_both_plugins(registry: PluginRegistry) -> None:
    registry.register_plugin(_policy_plugin("random", f"{__name__}:ShortestNameBalancer"), "imposter", "omni-imposter")
    with pytest.raises(ValueError, match="more than one plugin.*omni-coordinator.*omni-imposter"):
        build_load_balancer_factory("random")


def test_policy_target_must_be_a_load_balancer(registry: PluginRegistry) -> None:
    registry.register_plugin(_policy_plugin("counter", "collections:Counter"), "odd", "omni-odd")
    with pytest.raises(ValueError, match="not a LoadBalancer subclass"):
        build_load_balancer_factory("counter")


def test_installed_entry_point_provides_builtins() -> None:
    """Real discovery: the installed distribution's entry point registers the policies and the command."""
    registry = reset_plugin_registry()
    try:
        from omni_core.plugins import get_plugin_registry

        registry = get_plugin_registry()
        names = {reg.name for reg, record in registry.load_balancers() if record.distribution == "omni-coordinator"}
        assert names == {"random", "round-robin", "least-queue-length"}
        commands = {cmd.name: cmd.target for cmd, _ in registry.cli_commands()}
        assert commands["coordinator"] == "omni_coordinator.cli:main"
        assert build_load_balancer_factory("round-robin") is RoundRobinBalancer
    finally:
        reset_plugin_registry()
