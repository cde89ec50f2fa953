"""The one plain-text table formatter of the console and the text files (no TensorFlow).

Example:
    >>> print(format_table([("stage", "value"), ("initial_loss", "2.30")], indent="  "))
      stage         value
      initial_loss  2.30
"""

from __future__ import annotations

from collections.abc import Container, Sequence


def format_table(
    rows: Sequence[Sequence[str]],
    *,
    indent: str = "",
    right: Container[int] = (),
    free_last: bool = False,
) -> str:
    """``rows`` (the header first) as aligned columns two spaces apart.

    Columns are left-aligned, those whose index is in ``right`` right-aligned; with
    ``free_last`` the last column (a message) is not padded nor counted in the widths.
    Trailing spaces are dropped.
    """
    if not rows:
        return ""
    aligned = len(rows[0]) - 1 if free_last else len(rows[0])
    widths = [max(len(row[i]) for row in rows) for i in range(aligned)]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=False))
        ]
        lines.append((indent + "  ".join([*cells, *row[aligned:]])).rstrip())
    return "\n".join(lines)
