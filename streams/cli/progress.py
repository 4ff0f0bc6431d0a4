"""Progress bars (tqdm) on stderr for long CLI work: replay, simulate, evaluate.

In a terminal the bar redraws in place; into a log file (``make run`` writes one per process) each
update is a line of its own, every few seconds, so ``tail -f`` shows it. ``HEALTHMON_PROGRESS=0``
turns bars off.
"""

from __future__ import annotations

import io
import os
import sys
from typing import Any

from tqdm import tqdm


class _Lines(io.TextIOBase):
    """A stderr that ends each redraw with a newline instead of a carriage return."""

    def write(self, s: str) -> int:
        s = s.replace("\r", "")
        if s.strip():
            sys.stderr.write(s.rstrip("\n") + "\n")
        return len(s)

    def flush(self) -> None:
        sys.stderr.flush()


def bar(desc: str, total: int | None = None, unit: str = "events", **kw: Any) -> tqdm:
    """A bar that appears only when the work takes more than a second."""
    tty = sys.stderr.isatty()
    return tqdm(
        desc=desc,
        total=total,
        unit=f" {unit}",
        delay=1.0,
        unit_scale=True,
        file=sys.stderr if tty else _Lines(),
        mininterval=0.2 if tty else 10.0,
        dynamic_ncols=tty,
        ncols=None if tty else 100,
        disable=os.environ.get("HEALTHMON_PROGRESS", "1") == "0",
        **kw,
    )
