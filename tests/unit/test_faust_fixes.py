"""Faust's commit bookkeeping with each acked offset counted once (streams/worker/faust_compat.py)."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams.worker import faust_compat as faust_fixes

TP0 = TP("t", 0)


def consumer(committed: int, gap: tuple[int, int] | None, acked: list[int]) -> SimpleNamespace:
    c = SimpleNamespace(
        _acked=defaultdict(list),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _acked_index=defaultdict(set),
    )
    c._committed_offset[TP0] = committed
    if gap:
        c._gap[TP0].addi(*gap)
    c._acked[TP0] = list(acked)
    c._acked_index[TP0] = set(acked)
    return c


def commit_rounds(c: SimpleNamespace, limit: int = 100, fixed: bool = True) -> list[int]:
    """The offsets committed, one commit round after another, until a round commits nothing."""
    faust_fixes.install()
    new_offset: Any = Consumer._new_offset if fixed else Consumer._new_offset.__wrapped__  # type: ignore[attr-defined]
    done = []
    for _ in range(limit):
        offset = new_offset(c, TP0)
        if offset is None or offset <= c._committed_offset[TP0]:
            break
        c._committed_offset[TP0] = offset
        done.append(offset)
    return done


def test_a_gap_read_again_commits_in_one_round() -> None:
    """Faust took 101..110 as a gap (acked), then they were read again and acked for real: without
    the fix each duplicate ended a run, and the commit moved one offset a round."""
    c = consumer(101, (101, 111), list(range(101, 131)))
    assert commit_rounds(c) == [131]
    assert not c._gap[TP0] and not c._acked[TP0]
    before = consumer(101, (101, 111), list(range(101, 131)))
    assert commit_rounds(before, fixed=False) == [*range(102, 112), 131]  # Faust's own: 11 rounds


def test_nothing_unacked_is_committed() -> None:
    faust_fixes.install()  # once per process, however often asked
    # 120 and 121 neither acked nor in a gap: the commit stops before them, and goes on once they
    # are acked. (A hole of one offset Faust commits over: a transaction marker takes one.)
    c = consumer(101, (101, 111), [*range(101, 120), *range(122, 131)])
    assert commit_rounds(c) == [120]
    c._acked[TP0] += [121, 120]
    assert commit_rounds(c) == [131]
