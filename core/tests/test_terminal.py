"""Terminal output: progress that suits where stderr goes, tables as plain aligned text off a terminal."""

from __future__ import annotations

from omni_core import ProgressReporter, print_table, render_table


def test_progress_off_a_terminal_writes_a_line_every_tenth_and_no_bar(capsys) -> None:
    with ProgressReporter(100, "requests", label="omni run") as progress:
        for done in range(101):
            progress.update(done)
    lines = capsys.readouterr().err.splitlines()
    assert lines == [f"omni run: {n}/100 requests" for n in range(0, 101, 10)]


def test_progress_disabled_writes_nothing(capsys) -> None:
    with ProgressReporter(5, "transfers", enabled=False) as progress:
        progress.update(5)
    assert capsys.readouterr().err == ""


def test_tables_are_aligned_plain_text_off_a_terminal(capsys) -> None:
    rows = [["0 -> 1", 24, "[cpu]"], ["10 -> 11", 3, "x"]]
    print_table(["edge", "requests", "note"], rows)
    out = capsys.readouterr().out
    assert out == render_table(["edge", "requests", "note"], rows) + "\n"
    lines = out.splitlines()
    assert lines[0].split() == ["edge", "requests", "note"] and set(lines[1]) == {"-", " "}
    assert lines[2] == "0 -> 1    24        [cpu]" and lines[3] == "10 -> 11  3         x"
