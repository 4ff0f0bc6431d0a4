"""The Faust and aiokafka internals the worker relies on (streams/compat.py): each test
fails when an upgrade changes what is relied upon."""

from __future__ import annotations

from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport.consumer import Consumer
from faust.types import TP
from intervaltree import IntervalTree

from streams import compat

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
    compat.install()
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
    compat.install()  # once per process, however often asked
    # 120 and 121 neither acked nor in a gap: the commit stops before them, and goes on once they
    # are acked. (A hole of one offset Faust commits over: a transaction marker takes one.)
    c = consumer(101, (101, 111), [*range(101, 120), *range(122, 131)])
    assert commit_rounds(c) == [120]
    c._acked[TP0] += [121, 120]
    assert commit_rounds(c) == [131]


def test_seek_wait_runs_the_seek_in_the_consumer_thread() -> None:
    """:func:`compat.seek` relies on ``ThreadDelegateConsumer.seek_wait`` handing the seek to
    the consumer's thread (``call_thread``), and on ``_seek`` -- what ``Consumer.seek`` ends in --
    still being the direct call that races aiokafka's fetch. If an upgrade routes ``seek`` through
    the thread too, the work-around can go; if ``seek_wait`` stops going through it, it breaks."""
    import inspect

    from faust.transport.consumer import ThreadDelegateConsumer
    from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread

    assert "self._thread.seek_wait(" in inspect.getsource(ThreadDelegateConsumer.seek_wait)
    assert "self.call_thread(self._seek_wait" in inspect.getsource(AIOKafkaConsumerThread.seek_wait)
    assert "consumer.seek(tp, offset)" in inspect.getsource(AIOKafkaConsumerThread._seek_wait)
    assert "self._thread.seek(partition, offset)" in inspect.getsource(ThreadDelegateConsumer._seek)
    assert list(inspect.signature(ThreadDelegateConsumer.seek_wait).parameters) == ["self", "partitions"]


def test_the_fetch_the_seek_raced_is_still_there() -> None:
    """aiokafka's ``fetched_records`` lists ``_records``' keys, then reads each: a seek from another
    thread deleting one in between raised KeyError (tests/integration/test_seek_race_kafka.py)."""
    import inspect

    from aiokafka.consumer.fetcher import Fetcher

    src = inspect.getsource(Fetcher.fetched_records)
    assert "for tp in list(self._records.keys()):" in src and "self._records[tp]" in src
    assert "del self._records[tp]" in inspect.getsource(Fetcher.seek_to)


async def test_seek_gives_up_without_raising_when_the_consumer_cannot() -> None:
    """A seek the consumer's thread cannot do (the partition is no longer assigned: aiokafka's
    IllegalStateError) or does not do in time is reported as not done, for the caller to ask again."""
    import asyncio

    from aiokafka.errors import IllegalStateError

    class Unassigned:
        async def seek_wait(self, partitions: dict) -> None:
            raise IllegalStateError("No current assignment for partition")

    class Stuck:
        async def seek_wait(self, partitions: dict) -> None:
            await asyncio.Event().wait()

    assert await compat.seek(Unassigned(), TP0, 5) is False
    assert await compat.seek(Stuck(), TP0, 5, timeout=0.05) is False


def test_a_table_makes_its_changelog_topic_again_when_asked() -> None:
    """``renew_changelog_topic`` relies on ``Collection.changelog_topic`` building the topic lazily
    when ``_changelog_topic`` is None."""
    import inspect

    from faust.tables.base import Collection

    src = inspect.getsource(Collection.changelog_topic.fget)  # type: ignore[attr-defined]
    assert "if self._changelog_topic is None:" in src and "self._new_changelog_topic()" in src


def test_forget_gap_takes_the_range_out_of_fausts_gaps() -> None:
    """``forget_gap`` relies on ``Consumer._gap``: a per-partition IntervalTree of offsets Faust counts
    as acked (the shape ``Consumer.__init__`` makes and ``_add_gap`` fills)."""
    import inspect

    assert "self._gap = defaultdict(IntervalTree)" in inspect.getsource(Consumer.__init__)
    assert "gap_for_tp.addi(" in inspect.getsource(Consumer._add_gap)
    c = consumer(100, (101, 111), [])
    compat.forget_gap(c, TP0, 103, 108)
    assert sorted((i.begin, i.end) for i in c._gap[TP0]) == [(101, 103), (108, 111)]
    compat.forget_gap(c, TP("other", 0), 0, 5)  # no gap there: nothing to do
    assert "other" not in {tp.topic for tp in c._gap}


def test_faust_rocksdb_store_internals_the_engine_reads(tmp_path) -> None:
    """``db_for_partition`` and ``visible_items``: the RocksDB store's per-partition database and its
    items without Faust's offset key (tests/unit/test_rocksdb_store.py uses them on a real store)."""
    import inspect

    from faust.stores import rocksdb

    assert list(inspect.signature(rocksdb.Store._db_for_partition).parameters) == ["self", "partition"]
    assert list(inspect.signature(rocksdb.Store._visible_items).parameters) == ["self", "db"]
    got = compat.visible_items(
        SimpleNamespace(_visible_items=lambda db: [(b"k", b"v")]), object()
    )  # the call is passed through as is
    assert list(got) == [(b"k", b"v")]


async def test_aiokafka_client_fetch_all_metadata_is_there() -> None:
    import inspect

    from aiokafka import AIOKafkaConsumer

    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    try:
        assert inspect.iscoroutinefunction(consumer._client.fetch_all_metadata)
    finally:
        await consumer.stop()


async def test_bound_port_reads_the_port_aiohttp_bound() -> None:
    import aiohttp
    from aiohttp import web

    app = web.Application()
    app.router.add_get("/", lambda request: web.Response(text="ok"))
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    assert compat.bound_port(site, default=-1) == -1  # not started: no server yet
    await site.start()
    try:
        port = compat.bound_port(site)
        assert port > 0
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/") as resp:
            assert await resp.text() == "ok"
    finally:
        await runner.cleanup()


def test_fausts_fetch_loop_reads_the_read_offsets_as_relied_on() -> None:
    """:class:`compat.ReadOffsets` relies on Faust's fetch loop binding ``_read_offset.__getitem__``,
    dropping a record below the read offset only when one is known, recording a gap only against a
    known one, and on ``Consumer.__init__`` making the mapping (replaced by ``install``)."""
    import inspect

    src = inspect.getsource(Consumer._drain_messages)
    assert "get_read_offset = self._read_offset.__getitem__" in src
    assert "if r_offset is None or offset >= r_offset:" in src
    assert "if gap > 1 and r_offset:" in src
    assert "self._read_offset = defaultdict(lambda: None)" in inspect.getsource(Consumer.__init__.__wrapped__)


def test_a_partition_read_again_is_not_checked_until_its_hole_is_read() -> None:
    """A stale batch moved the read offset past the hole (5,400); the fetch loop's bound getter reads
    None while the partition is unchecked, so the re-fetched 5,330 is not dropped as read and no gap
    is recorded; checked again, the offset the loop set last counts."""
    compat.install()
    offsets = compat.ReadOffsets({TP0: 5329})
    get = offsets.__getitem__  # as Faust's loop binds it when it starts
    offsets.unchecked.add(TP0)
    offsets[TP0] = 5400
    assert get(TP0) is None
    assert get(TP("other", 0)) is None  # a key never set: defaultdict's None, as Faust expects
    compat.check_again(SimpleNamespace(_read_offset=offsets), TP0)
    assert get(TP0) == 5400
    offsets.unchecked.add(TP0)
    offsets.pop(TP0, None)  # a revocation forgets both
    assert TP0 not in offsets.unchecked and get(TP0) is None


async def test_only_a_seek_to_a_hole_unchecks_the_partition() -> None:
    class Seeking:
        def __init__(self) -> None:
            self._read_offset = compat.ReadOffsets()

        async def seek_wait(self, partitions: dict) -> None:
            self._read_offset.update(partitions)

    c = Seeking()
    assert await compat.seek(c, TP0, 5)
    assert not c._read_offset.unchecked
    assert await compat.seek(c, TP0, 5, hole=True)
    assert c._read_offset.unchecked == {TP0}
