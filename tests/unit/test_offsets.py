"""The offset tracker (streams/worker/offsets.py): end offsets, holes read again, offsets skipped to.

The consumer it talks to is an in-memory one: a log per (topic, partition) with offsets the broker
holds no record for (transaction markers), a high-water mark, and a record of every seek.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from streams.worker.offsets import Consumer, OffsetTracker


@dataclass
class Log:
    #: (kind, partition) -> offsets holding a record; end offset per (kind, partition).
    held: dict[tuple[int, int], list[int]] = field(default_factory=dict)
    ends: dict[tuple[int, int], int] = field(default_factory=dict)
    seeks: list[tuple[int, int, int]] = field(default_factory=list)
    forgotten: list[tuple[int, int, int, int]] = field(default_factory=list)
    probes: int = 0
    down: bool = False
    seek_ok: bool = True

    async def probe(self, k: int, p: int, offset: int) -> int | None:
        self.probes += 1
        if self.down:
            raise TimeoutError("broker away")
        return next((o for o in self.held.get((k, p), []) if o >= offset), None)

    async def seek(self, k: int, p: int, offset: int) -> bool:
        self.seeks.append((k, p, offset))
        return self.seek_ok

    checked: list[tuple[int, int]] = field(default_factory=list)

    def consumer(self) -> Consumer:
        return Consumer(
            self.probe,
            self.seek,
            lambda k, p, a, b: self.forgotten.append((k, p, a, b)),
            lambda k, p: self.ends.get((k, p)),
            lambda k, p: self.checked.append((k, p)),
        )


@dataclass
class Driver:
    gaps: dict[int, tuple[int, int]] = field(default_factory=dict)
    blocked_since: list[float | None] = field(default_factory=lambda: [None, None])
    position: list[int | None] = field(default_factory=lambda: [0, 0])

    def skip_to(self, kind: int, offset: int) -> None:
        pos = self.position[kind]
        if pos is None or offset > pos:
            self.position[kind] = offset
        self.gaps.pop(kind, None)


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def make() -> tuple[Log, OffsetTracker, Clock, Clock]:
    log, mono, wall = Log(), Clock(), Clock(5000.0)
    return log, OffsetTracker(2, log.consumer(), mono, wall), mono, wall


def test_highwaters_are_unknown_until_read_and_once_stale() -> None:
    log, tracker, mono, _ = make()
    assert tracker.highwaters(0) == [None, None]
    tracker.record_ends(0, [10, 4])
    log.ends[(0, 0)] = 12  # the consumer saw more than the last read: the larger one counts
    assert tracker.highwaters(0) == [12, 4]
    mono.now += 5.1  # an outage: the consumer's marks stop moving, time must wait
    assert tracker.highwaters(0) == [None, None]
    tracker.record_ends(0, [13, 4])
    assert tracker.highwaters(0) == [13, 4]
    tracker.forget(0)
    assert tracker.highwaters(0) == [None, None] and not tracker.end_offsets


async def test_a_hole_is_sought_back_to_and_faust_forgets_its_jump() -> None:
    log, tracker, mono, _ = make()
    log.held[(0, 0)] = list(range(0, 20))
    driver = Driver(gaps={0: (5, 9)})  # 5..8 never came; 9 did
    await tracker.reread(0, driver)
    assert log.seeks == [(0, 0, 5)]
    assert log.forgotten == [(0, 0, 5, 10)]  # Faust's counted jump 5..9 is forgotten
    await tracker.reread(0, driver)  # under way: not asked again within 5 s
    assert log.seeks == [(0, 0, 5)]
    mono.now += 5.0
    await tracker.reread(0, driver)
    assert log.seeks == [(0, 0, 5), (0, 0, 5)]


async def test_the_client_checks_read_offsets_again_once_the_hole_is_read() -> None:
    """After a seek back to a hole the client does not drop records as read (compat.ReadOffsets)
    until the driver has the hole's first record; records after the hole that were in flight do not
    count."""
    log, tracker, _, _ = make()
    log.held[(0, 0)] = list(range(0, 20))
    driver = Driver(gaps={0: (5, 9)})
    await tracker.reread(0, driver)
    assert log.seeks == [(0, 0, 5)] and not log.checked
    driver.gaps[0] = (5, 12)  # a record after the hole, from the batch in flight: still waiting
    await tracker.reread(0, driver)
    assert not log.checked
    driver.gaps.clear()
    driver.position[0] = 6  # 5 came, in order
    await tracker.reread(0, driver)
    assert log.checked == [(0, 0)]
    await tracker.reread(0, driver)
    assert log.checked == [(0, 0)]


async def test_offsets_with_no_record_are_skipped_to() -> None:
    log, tracker, _, _ = make()
    log.held[(0, 0)] = [8, 9, 10]  # 5..7 are transaction markers
    driver = Driver(gaps={0: (5, 8)})
    await tracker.reread(0, driver)
    assert driver.position[0] == 8 and not driver.gaps
    assert log.seeks == [(0, 0, 8)]


async def test_a_stalled_tail_is_read_again_or_skipped_to_the_end() -> None:
    log, tracker, mono, wall = make()
    log.held[(1, 0)] = [3, 4]
    driver = Driver(blocked_since=[None, wall.now], position=[0, 3])
    await tracker.reread(0, driver)
    assert log.seeks == []  # not stalled long enough
    wall.now += 3.0
    await tracker.reread(0, driver)
    assert log.seeks == [(1, 0, 3)]
    # Nothing from there to the end (markers only): the end offset is taken as the next.
    log.held[(1, 0)] = []
    tracker.record_ends(0, [0, 7])
    mono.now += 5.0
    await tracker.reread(0, driver)
    assert driver.position[1] == 7 and log.seeks == [(1, 0, 3)]


async def test_an_unanswered_probe_backs_off_and_an_unfinished_seek_is_asked_again() -> None:
    log, tracker, mono, _ = make()
    log.held[(0, 0)] = [5, 6]
    driver = Driver(gaps={0: (5, 6)})
    log.down = True
    await tracker.reread(0, driver)
    await tracker.reread(0, driver)
    assert log.probes == 1  # not again at once
    mono.now += 10.0
    log.down = False
    log.seek_ok = False
    await tracker.reread(0, driver)
    assert log.seeks == [(0, 0, 5)] and (0, 0) not in tracker.rereads  # not done: asked again
    await tracker.reread(0, driver)
    assert log.seeks == [(0, 0, 5), (0, 0, 5)]
