"""The RocksDB store through the real broker: a worker SIGKILLed mid-way and restarted on its data
directory ends exactly where an uninterrupted memory-store worker ends (event counts, final
snapshots, alert episodes), and recovers from its local databases plus the changelog's tail."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.conftest import WorkerProcess
from tests.helpers import collect, committed_everywhere, produce, setup_topics
from tests.integration.test_engine_faults import (
    HISTORY,
    assert_same,
    outcome,
    records,
    reference,
    send_markers,
)

pytestmark = pytest.mark.kafka


@pytest.fixture
def kafka_settings(kafka_settings):
    return kafka_settings.model_copy(update={"watermark_hold_s": 8.0, "store": "rocksdb://"})


def active_starts(log: bytes) -> dict[int, int]:
    """Per changelog partition, the offset recovery started at (Faust's 'Reading Starts At - Active'
    table; -1: from the beginning)."""
    block = log.split(b"Reading Starts At - Active", 1)[1].split(b"Resuming flow", 1)[0]
    return {int(p): int(o) for p, o in re.findall(rb"\|\s*(\d+)\s*\|\s*(-?\d+)\s*\|", block)}


async def test_sigkill_mid_way_then_restart_on_the_local_databases(kafka_settings, tmp_path):
    want = await reference(kafka_settings.model_copy(update={"store": "memory://"}), tmp_path)
    s = kafka_settings
    await setup_topics(s)
    half = len(HISTORY) // 2
    await produce(s, records(s, HISTORY[:half]))
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        await collect(s, "health", lambda rs: len(rs) > 100, timeout=120)  # mid-way
        await committed_everywhere(s, s.topic("usage"))  # states written (HEALTHMON_STATE_FLUSH_S)
        assert w.proc is not None
        w.proc.kill()
        w.proc.wait()
        w.stop()
        await produce(s, records(s, HISTORY[half:]))
        await send_markers(s)
        w = WorkerProcess(s, tmp_path / "worker.log").start()
        got = await outcome(s)
        assert w.alive(), w.log_tail()
    finally:
        w.stop()
    assert_same(got, want)
    # The restart read the changelog from the offsets its databases had persisted, not from 0.
    first, restart = w.log().split(b"Worker ready")[:2]
    assert set(active_starts(first).values()) == {-1}
    starts = active_starts(restart)
    assert len(starts) == s.partitions and max(starts.values()) > 0, starts


# Failed 3 of 4 runs before issue 10's fix, each time with a partition's tail never delivered after the
# restart (Faust 0.15 skipping fetched records; the worker now reads such records again).
@pytest.mark.engine_crash
async def test_a_fresh_data_directory_recovers_from_the_changelog(kafka_settings, tmp_path):
    """Local databases lost (a new machine): the whole state comes back from the changelog."""
    want = await reference(kafka_settings.model_copy(update={"store": "memory://"}), tmp_path)
    s = kafka_settings
    await setup_topics(s)
    half = len(HISTORY) // 2
    await produce(s, records(s, HISTORY[:half]))
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        await collect(s, "health", lambda rs: len(rs) > 100, timeout=120)
        w.stop()  # a clean stop, then the disk is gone
        shutil.rmtree(s.data_dir)
        await produce(s, records(s, HISTORY[half:]))
        await send_markers(s)
        w = WorkerProcess(s, tmp_path / "worker.log").start()
        got = await outcome(s)
    finally:
        w.stop()
    assert_same(got, want)


@pytest.mark.engine_crash
async def test_a_standby_takes_over_from_its_local_copy(kafka_settings, tmp_path):
    """Two workers, each the standby of the other's partitions (table_standby_replicas = 1): one is
    SIGKILLed and the other takes its partitions over from its own databases plus the changelog's
    tail, not from the changelog's beginning, and the result is the uninterrupted run's."""
    want = await reference(kafka_settings.model_copy(update={"store": "memory://"}), tmp_path)
    s = kafka_settings
    await setup_topics(s)
    first = WorkerProcess(s.model_copy(update={"data_dir": str(tmp_path / "a")}), tmp_path / "a.log")
    second = WorkerProcess(s.model_copy(update={"data_dir": str(tmp_path / "b")}), tmp_path / "b.log")
    half = len(HISTORY) // 2
    try:
        first.start()
        second.start()
        await produce(s, records(s, HISTORY[:half]))
        await collect(
            s, "health", lambda rs: len({r.partition for r in rs}) == s.partitions and len(rs) > 200
        )
        # Both workers' states are in the changelog (a commit interval ago), which the standbys read.
        await committed_everywhere(s, s.topic("usage"))
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()
        await produce(s, records(s, HISTORY[half:]))
        await send_markers(s)
        got = await outcome(s)
        assert second.alive(), second.log_tail()
    finally:
        first.stop()
        second.stop()
    assert_same(got, want)
    # The takeover (the last recovery in the survivor's log) started every partition from an offset
    # its databases had persisted, the standby ones included.
    takeover = second.log().rsplit(b"Reading Starts At - Active", 1)[1]
    starts = active_starts(b"Reading Starts At - Active" + takeover)
    assert len(starts) == s.partitions and min(starts.values()) >= 0, starts
