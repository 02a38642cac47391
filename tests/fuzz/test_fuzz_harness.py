"""The fuzz harness itself: it must call a wrong exception type, an unclear rejection, a hang and a memory
blow-up findings, or its clean results mean nothing."""

from __future__ import annotations

import pytest

from reliability.fuzz import runner
from reliability.fuzz.targets import Finding, Target, check


class Rejected(ValueError):
    """The planted decoders' own error type."""


def _target(decode: object, max_line: int | None = 1000) -> Target:
    return Target("planted", decode, (Rejected,), lambda: [b"seed"], (b"tok",), max_line=max_line)  # type: ignore[arg-type]


def _raise(error: BaseException) -> object:
    def decode(data: bytes) -> None:
        raise error

    return decode


def test_accepted_and_cleanly_rejected_inputs_are_told_apart() -> None:
    assert check(_target(lambda data: data), b"x") is True
    assert check(_target(_raise(Rejected("bad length 3"))), b"x") is False


@pytest.mark.parametrize(
    ("error", "max_line", "problem"),
    [
        (KeyError("x"), 1000, "unexpected builtins.KeyError"),
        (Rejected(""), 1000, "unclear rejection"),
        (Rejected("x" * 1001), 1000, "unclear rejection"),
    ],
)
def test_findings(error: BaseException, max_line: int, problem: str) -> None:
    with pytest.raises(Finding, match=problem):
        check(_target(_raise(error), max_line), b"x")


def test_echoing_the_input_is_allowed_where_the_input_is_the_operators_own_file() -> None:
    assert check(_target(_raise(Rejected("x" * 5000)), max_line=None), b"x") is False


def test_a_hang_is_a_finding(monkeypatch: pytest.MonkeyPatch) -> None:
    import signal
    import time

    monkeypatch.setattr(runner, "HANG_S", 0.2)
    previous = signal.signal(signal.SIGALRM, runner._on_alarm)
    try:
        assert runner.examine(_target(lambda data: time.sleep(5)), b"x") == "hang: no answer within 0.2 s"
    finally:
        signal.signal(signal.SIGALRM, previous)


def test_memory_growth_out_of_proportion_is_a_finding() -> None:
    import os

    with open("/proc/self/statm") as statm:
        rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    size = runner._peak_rss() - rss + (128 << 20)  # enough to raise this process's high-water mark by 128 MiB
    hoard: list[bytearray] = []

    def decode(data: bytes) -> None:
        hoard.append(bytearray(size))
        hoard[-1][::4096] = b"\1" * len(hoard[-1][::4096])  # touch every page

    outcome = runner.examine(_target(decode), b"tiny")
    assert isinstance(outcome, str) and outcome.startswith("memory: an input of 4 bytes raised the peak RSS"), outcome


def test_run_keeps_one_reproducer_per_distinct_problem(tmp_path) -> None:
    result = runner.run("planted", _target(_raise(KeyError("k"))), 50, seed=1, out=tmp_path)
    assert result.inputs == 50 and len(result.findings) == 1
    assert result.findings[0]["reproducer"] == str(tmp_path / "planted-1.bin")
    assert (tmp_path / "planted-1.bin").read_bytes() == b"seed"  # the first input that showed it
