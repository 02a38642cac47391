"""Every decoder that reads untrusted bytes, through the reliability campaign's mutation engine on a small
budget (``python -m reliability`` runs 100,000 inputs per decoder and engine)."""

from __future__ import annotations

import pytest

from reliability.fuzz import mutate
from reliability.fuzz.runner import run
from reliability.fuzz.targets import all_targets, cleanup_config_dir

BUDGET = {"serializer": 3000, "config": 1500, "coordinator": 3000, "yuanrong-te": 3000}


@pytest.mark.parametrize("name", sorted(all_targets()))
def test_no_finding_on_a_small_budget(name: str) -> None:
    try:
        result = run(name, all_targets()[name], BUDGET.get(name, 2000), seed=20260, out=None)
    finally:
        cleanup_config_dir()
    assert result.inputs == BUDGET.get(name, 2000) and result.rejected > 0 and result.accepted > 0
    assert not result.findings, result.findings


def test_the_same_seed_gives_the_same_inputs() -> None:
    target = all_targets()["coordinator"]
    first = list(mutate.inputs(target.seeds(), target.tokens, 7, 500))
    assert first == list(mutate.inputs(target.seeds(), target.tokens, 7, 500))
    assert first != list(mutate.inputs(target.seeds(), target.tokens, 8, 500))
