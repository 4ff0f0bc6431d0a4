"""The tasks worker's deadline index (streams/worker/tasks.py): a heap per partition, stale entries skipped."""

from __future__ import annotations

from streams.settings import Settings
from streams.worker.tasks import TasksPipeline


def index() -> TasksPipeline:
    return TasksPipeline(Settings(), app=None, table=None)  # type: ignore[arg-type]


def test_due_accounts_come_once_earliest_first_per_partition():
    pipe = index()
    pipe.set_deadline("a", 0, 30.0)
    pipe.set_deadline("b", 0, 10.0)
    pipe.set_deadline("c", 1, 5.0)
    pipe.set_deadline("a", 0, 20.0)  # moved earlier: the old entry is stale
    assert pipe.due(0, 9.0) == []
    assert pipe.due(0, 25.0) == ["b", "a"]
    assert pipe.due(0, 100.0) == []  # each once; a's stale entry (30) is skipped
    assert pipe.due(1, 100.0) == ["c"]
    pipe.set_deadline("a", 0, 40.0)
    pipe.set_deadline("a", 0, None)  # no deadline any more
    assert pipe.due(0, 100.0) == []


def test_a_deadline_set_again_unchanged_still_comes_up_and_the_heap_stays_small():
    pipe = index()
    for _ in range(1000):
        pipe.set_deadline("a", 0, 50.0)  # every event of the account saves its book
    assert len(pipe.heaps[0]) <= 64 * 4
    assert pipe.due(0, 50.0) == ["a"]
    pipe.set_deadline("a", 0, 50.0)  # its step changed nothing: it comes up again
    assert pipe.due(0, 60.0) == ["a"]


def test_a_retry_comes_up_only_while_the_deadline_has_not_moved():
    pipe = index()
    pipe.set_deadline("a", 0, 10.0)
    assert pipe.due(0, 10.0) == ["a"]  # a tick is written
    pipe.retry(0, "a", 40.0)
    assert pipe.due(0, 39.0) == []
    assert pipe.due(0, 40.0) == ["a"]  # the tick was lost: again
    pipe.retry(0, "a", 70.0)
    pipe.set_deadline("a", 0, 500.0)  # this time it was applied: the deadline moved
    assert pipe.due(0, 100.0) == []


def test_a_hole_is_read_again_once_then_taken_as_a_gap_in_the_log() -> None:
    pipe = TasksPipeline(None, None, None)  # type: ignore[arg-type]
    assert pipe.hole("cs.task-actions", 0, 7) is None  # nothing known yet (a broker away at assignment)
    pipe.expected[("cs.task-actions", 0)] = 3  # the committed offset
    pipe.read("cs.task-actions", 0, 3)
    assert pipe.hole("cs.task-actions", 0, 4) is None  # the next one
    assert pipe.hole("cs.task-actions", 0, 9) == 4  # 4..8 skipped: read them again
    pipe.read("cs.task-actions", 0, 2)  # a record before the position (read again): no move back
    assert pipe.expected[("cs.task-actions", 0)] == 4
    assert pipe.hole("cs.task-actions", 0, 9) is None  # the same jump after the re-read: a real gap
    pipe.read("cs.task-actions", 0, 9)
    assert pipe.hole("cs.task-actions", 0, 10) is None
    assert pipe.hole("cs.task-actions", 1, 10) is None  # another partition: nothing known
