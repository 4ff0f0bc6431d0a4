"""Why the worker's fetcher crashed with ``KeyError(TopicPartition(...))`` (issue 22), through the broker.

Faust's ``ThreadDelegateConsumer`` runs aiokafka in a thread of its own, whose ``getmany`` reads the
fetcher's prefetched records (``Fetcher.fetched_records``: ``for tp in list(self._records.keys()):
... self._records[tp]``). ``ThreadDelegateConsumer._seek`` -- what ``app.consumer.seek`` ends in --
calls aiokafka's ``consumer.seek`` on the *event loop's* thread, and ``Fetcher.seek_to`` deletes
``self._records[tp]`` there: between the two lines of the other thread, that is the KeyError. The
same seek run by the consumer's own thread (Faust's ``seek_wait`` path, ``call_thread``: what the
worker does now, :func:`streams.compat.seek`) cannot interleave with the fetch.

The race is made frequent, not forced: the interpreter switches threads every microsecond instead
of every 5 ms while the seeks run.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.broker.producer import produce_events
from streams.settings import Settings

pytestmark = pytest.mark.kafka

TOPIC = "race"
PARTITIONS = 32
#: Seeks the thread-confined path must survive; the direct path fails long before (or the test does).
SEEKS = 40_000


class ThreadedConsumer:
    """An aiokafka consumer fetching in a loop of its own thread, as Faust's consumer thread does."""

    def __init__(self, s: Settings, tps: list[TopicPartition]) -> None:
        self.s, self.tps = s, tps
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.busy = threading.Event()  # 1000 records fetched
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []
        self.fetched = 0
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self._run(),))
        self.consumer: AIOKafkaConsumer

    async def _run(self) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=self.s.kafka_bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=4096
        )
        await self.consumer.start()
        try:
            self.consumer.assign(self.tps)
            for tp in self.tps:
                self.consumer.seek(tp, 0)
            self.ready.set()
            while not self.stopping.is_set():
                try:
                    got = await self.consumer.getmany(timeout_ms=50, max_records=7)
                except KeyError as exc:  # the crash: Faust's fetcher dies of it
                    self.errors.append(exc)
                    continue
                self.fetched += sum(len(v) for v in got.values())
                if self.fetched >= 1000:
                    self.busy.set()
        finally:
            await self.consumer.stop()

    def __enter__(self) -> ThreadedConsumer:
        self.thread.start()
        assert self.ready.wait(30), "the consumer did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join(30)


async def seek_many(c: ThreadedConsumer, seek: Callable[[TopicPartition, int], None]) -> int:
    """Seek the partitions back to 0 one after the other while the thread keeps fetching, SEEKS
    times or until the fetcher's thread has had an error; returns how many seeks were made."""
    assert await asyncio.to_thread(c.busy.wait, 30), "nothing fetched"  # records prefetched everywhere
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for i in range(SEEKS):
            if c.errors:
                return i
            seek(c.tps[i % len(c.tps)], 0)
            if i % 20 == 0:
                await asyncio.sleep(0.001)  # the fetcher refills its prefetched records
    finally:
        sys.setswitchinterval(before)
    return SEEKS


@pytest.fixture
async def race_topic(kafka_settings: Settings) -> list[TopicPartition]:
    s = kafka_settings
    name = f"{s.topic_prefix}{TOPIC}"
    await _create(s, name)
    await produce_events(s, ((name, f"k{i % 256}".encode(), b"x" * 200) for i in range(40_000)))
    return [TopicPartition(name, p) for p in range(PARTITIONS)]


async def _create(s: Settings, name: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1)])
    finally:
        await admin.close()


async def test_a_seek_from_the_event_loops_thread_races_the_fetch(kafka_settings, race_topic):
    """What ``app.consumer.seek`` did: the fetcher's thread gets KeyError(TopicPartition)."""
    with ThreadedConsumer(kafka_settings, race_topic) as c:
        seeks = await seek_many(c, lambda tp, offset: c.consumer.seek(tp, offset))
    print(f"KeyError after {seeks} seeks")
    assert c.errors, "no KeyError in the fetcher's thread: the race did not show this time"
    assert all(isinstance(e, KeyError) and isinstance(e.args[0], TopicPartition) for e in c.errors)


async def test_a_seek_run_by_the_consumers_thread_does_not(kafka_settings, race_topic):
    """The same seeks run in the consumer's own thread (as Faust's ``call_thread`` does): none."""
    with ThreadedConsumer(kafka_settings, race_topic) as c:

        def in_thread(tp: TopicPartition, offset: int) -> None:
            c.loop.call_soon_threadsafe(c.consumer.seek, tp, offset)

        assert await seek_many(c, in_thread) == SEEKS
        done = asyncio.run_coroutine_threadsafe(asyncio.sleep(0), c.loop)  # every queued seek has run
        await asyncio.wrap_future(done)
    assert c.fetched > 1000
    assert c.errors == []
