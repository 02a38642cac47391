"""The reliability campaign's partition scenarios on a tiny budget (``reliability.netsplit``; the campaign itself:
``nox -s reliability``): a receiver's host cut off for a few seconds during a get loses nothing, no call outlives
its bound, the recovery is measured, and nothing is left behind."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[2])
if ROOT not in sys.path:  # the reliability package lives at the repository root and is not installed
    sys.path.insert(0, ROOT)

from omni_core.testing import require  # noqa: E402
from omni_core.testing.hosts import can_make_hosts  # noqa: E402
from reliability.netsplit import PartitionRun  # noqa: E402
from reliability.scenarios import SCENARIOS  # noqa: E402


def test_a_receiver_cut_off_during_a_get_loses_nothing_and_hangs_nowhere(mooncake_available: None) -> None:
    require(*can_make_hosts())  # the run makes its own three test hosts
    scenario = next(s for s in SCENARIOS if s.slug == "netsplit-mooncake-te-receiver")
    run = PartitionRun(scenario, seed=3, requests=60, kills=1, window=4)  # request 18's get, cut for 3.9 s
    result = run.run()
    assert result.acked == 60 and [(k.request, k.phase) for k in result.kills] == [(18, "get")]
    assert result.delivered == 60 and result.lost == result.duplicates == result.corrupt == 0
    assert len(result.recover_s) == 1, result.recover_s
    assert result.longest_get_s <= result.get_bound_s and result.longest_put_s <= result.put_bound_s, result
    assert result.leaks.total == 0, result.leaks.details
