"""A report table laid out for a terminal of a given width: pure text, no I/O.

A table wider than the terminal is made to fit, in this order, never cutting a
number:

1. headers wider than the numbers under them go on two lines ("Best case" over
   "weighted"): nothing is lost;
2. long text cells (a case's subject) are cut, to :data:`MIN_TEXT` characters
   at the least, with an ellipsis;
3. the columns are split into blocks, one under the other, each starting with
   the table's first column (the month, the stage) so every row is still named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["MIN_TEXT", "layout"]

#: A text column is never cut narrower than this (or its header, if shorter).
MIN_TEXT = 12
_GAP = "  "


@dataclass
class _Column:
    header: list[str]  # one or two lines
    cells: list[str]
    numeric: bool
    width: int = 0

    def __post_init__(self) -> None:
        self.width = max([*(len(h) for h in self.header), *(len(c) for c in self.cells)])

    def fitted(self) -> int:
        """The narrowest this column may be made by cutting (text only)."""
        if self.numeric:
            return self.width
        return min(self.width, MIN_TEXT)


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def _total(columns: Sequence[_Column]) -> int:
    return sum(c.width for c in columns) + len(_GAP) * (len(columns) - 1)


def _two_lines(header: str) -> list[str]:
    """``header`` broken at the space that makes its longer line shortest (one line if none)."""
    words = header.split(" ")
    if len(words) < 2:
        return [header]
    splits = [[" ".join(words[:i]), " ".join(words[i:])] for i in range(1, len(words))]
    return min(splits, key=lambda pair: max(len(pair[0]), len(pair[1])))


def layout(
    headers: Sequence[str], rows: Sequence[Sequence[str]], numeric: Sequence[bool], width: int
) -> list[str]:
    """The lines of a table no wider than ``width`` (when its numbers allow: they are never cut).

    ``numeric`` says which columns hold numbers: those are right-aligned and
    never cut; the others are left-aligned and cut with an ellipsis when needed.
    """
    columns = [
        _Column([h], [row[j].replace("\n", " ") for row in rows], numeric[j]) for j, h in enumerate(headers)
    ]
    if _total(columns) > width:
        for column in columns:
            if column.numeric and len(column.header[0]) > max((len(c) for c in column.cells), default=0):
                column.header = _two_lines(column.header[0])
                column.width = max([*(len(h) for h in column.header), *(len(c) for c in column.cells)])
    if _total(columns) > width:
        _cut_text(columns, width)
    lines: list[str] = []
    for block in _blocks(columns, width):
        if lines:
            lines.append("")
        lines.extend(_render(block))
    return lines


def _cut_text(columns: list[_Column], width: int) -> None:
    """Narrow the widest text columns, one character at a time, until the table fits or none can."""
    while _total(columns) > width:
        shrinkable = [c for c in columns if not c.numeric and c.width > c.fitted()]
        if not shrinkable:
            return
        widest = max(shrinkable, key=lambda c: c.width)
        widest.width -= 1


def _blocks(columns: list[_Column], width: int) -> list[list[_Column]]:
    if _total(columns) <= width or len(columns) < 3:
        return [columns]
    key, rest = columns[0], columns[1:]
    blocks: list[list[_Column]] = [[key]]
    for column in rest:
        if len(blocks[-1]) > 1 and _total([*blocks[-1], column]) > width:
            blocks.append([key])
        blocks[-1].append(column)
    return blocks


def _render(columns: list[_Column]) -> list[str]:
    def line(texts: Sequence[str]) -> str:
        parts = [
            text.rjust(c.width) if c.numeric else _cut(text, c.width).ljust(c.width)
            for text, c in zip(texts, columns, strict=True)
        ]
        return _GAP.join(parts).rstrip()

    depth = max(len(c.header) for c in columns)
    # a one-line header sits on the lower line, next to the second line of a two-line one
    headers = [[""] * (depth - len(c.header)) + c.header for c in columns]
    out = [line([h[i] for h in headers]) for i in range(depth)]
    out.append(line(["-" * c.width for c in columns]))
    rows = len(columns[0].cells)
    out.extend(line([c.cells[i] for c in columns]) for i in range(rows))
    return out
