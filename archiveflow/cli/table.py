"""A plain aligned text table: what `status`, `list`, `stats` and `sql` print."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any


def print_table(headers: Sequence[str], rows: Sequence[Sequence[Any]], out: Any = None) -> None:
    """A plain aligned text table."""
    out = out or sys.stdout
    cells = [[("" if v is None else str(v)) for v in r] for r in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    widths = [min(w, 60) for w in widths[:-1]] + widths[-1:]  # the last column is never cut
    line = "  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))
    print(line.rstrip(), file=out)
    print("  ".join("-" * w for w in widths), file=out)
    for r in cells:
        print("  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip(),
              file=out)
