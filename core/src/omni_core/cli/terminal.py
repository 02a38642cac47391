"""The CLI's terminal output through rich: consoles, one-line errors and progress that suits where it goes."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress, TaskID

#: When not writing to a terminal, a progress line at most every this fraction of the total (so ~10 lines).
LINE_STEP = 0.1


def console(file: TextIO) -> Console:
    """A rich console on ``file``; it styles only a terminal (and honours ``NO_COLOR``)."""
    from rich.console import Console

    return Console(file=file, highlight=False, soft_wrap=True)


def print_error(command: str, message: object) -> None:
    """``command: message`` on stderr, in red on a terminal: one line, never a traceback."""
    from rich.text import Text

    line = Text(f"{command}: ", style="bold red")
    line.append(str(message), style="red")
    console(sys.stderr).print(line)


class ProgressReporter:
    """Progress of ``total`` steps on stderr: a rich bar on a terminal, else a plain line every tenth or so.

    Use as ``with ProgressReporter(total, "requests", enabled) as progress: progress.update(done)``.
    """

    def __init__(self, total: int, unit: str, enabled: bool = True, label: str = "") -> None:
        self.total, self.unit, self.enabled, self.label = max(total, 1), unit, enabled, label
        self._bar: Progress | None = None
        self._task: TaskID | None = None
        self._shown = -1

    def __enter__(self) -> ProgressReporter:
        err = console(sys.stderr)
        if self.enabled and err.is_terminal:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(TextColumn(self.label), BarColumn(), MofNCompleteColumn(), TextColumn(self.unit),
                                 TimeElapsedColumn(), console=err)
            self._task = self._bar.add_task(self.label, total=self.total)
            self._bar.start()
        return self

    def update(self, done: int) -> None:
        """``done`` of the total steps are finished."""
        if not self.enabled or done == self._shown:
            return
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, completed=done)
        elif done >= self.total or self._shown < 0 or done - self._shown >= LINE_STEP * self.total:
            prefix = f"{self.label}: " if self.label else ""
            print(f"{prefix}{done}/{self.total} {self.unit}", file=sys.stderr, flush=True)
        else:
            return
        self._shown = done

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._bar is not None:
            self._bar.stop()
