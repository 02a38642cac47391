"""Tables for the CLI, laid out by rich: styled on a terminal, plain aligned text everywhere else."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.table import Table

#: Wide enough that no table wraps when written to a file or pipe (logs, ``results.md``, tests parsing rows).
PLAIN_WIDTH = 10_000


def rich_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> Table:
    """A rich ``Table``: a dashed rule under the header, columns two spaces apart, nothing around it."""
    from rich.box import Box
    from rich.table import Table
    from rich.text import Text

    rule = Box("    \n    \n -  \n    \n    \n    \n    \n    \n", ascii=True)
    table = Table(box=rule, pad_edge=False, show_edge=False, padding=(0, 1, 0, 0), header_style="bold")
    for header in headers:
        table.add_column(Text(str(header)), overflow="fold")
    for row in rows:
        table.add_row(*(Text(str(cell)) for cell in row))  # literal text: no markup
    return table


def render_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """The table as plain text: left-aligned columns two spaces apart, a dashed rule under the header."""
    from rich.console import Console

    buffer = io.StringIO()
    Console(file=buffer, width=PLAIN_WIDTH, color_system=None, force_terminal=False).print(rich_table(headers, rows))
    return "\n".join(line.rstrip() for line in buffer.getvalue().splitlines())


def print_table(headers: Sequence[str], rows: Sequence[Sequence[object]], file: TextIO | None = None) -> None:
    """Print the table to ``file`` (stdout): styled on a terminal, :func:`render_table`'s plain text otherwise."""
    from .terminal import console

    out = console(file or sys.stdout)
    if out.is_terminal:
        out.print(rich_table(headers, rows))
    else:
        print(render_table(headers, rows), file=file or sys.stdout)
