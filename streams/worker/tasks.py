"""``healthmon tasks-worker``: playbook tasks as a Faust app of its own, thin glue around
:mod:`streams.tasks.machine`.

- one agent reads ``cs.alerts`` and ``cs.task-actions`` (both keyed by account, co-partitioned with the
  inputs), applies each record to the account's task book and keeps the books in a table whose
  changelog *is* ``cs.tasks`` (compacted, key: account id). Faust flushes the changelog before it
  commits an offset, and the books remember the action ids applied, so after a SIGKILL a redelivered
  record is applied again at most to no effect: nothing lost, nothing twice.
- reminders, escalations and closings go to ``cs.task-notices`` with deterministic ids.
- deadlines: in event mode (``HEALTHMON_CLOCK=event``, replays) a partition's clock is the latest alert
  time it has read, and every deadline it passes is applied in the same step, stamped when it was due.
  In live mode a timer writes a tick for each account whose deadline has come to ``cs.task-actions``,
  so the clock's effects are in the log and applied by the agent like a person's action.
- the Redis read model (:mod:`streams.readmodel.tasks`) is written after each book; on start every
  book recovered from ``cs.tasks`` is written again (a rebuild when Redis was emptied).

Its own consumer group (``{app_id}-tasks``): it runs beside ``healthmon worker`` without touching it.
"""

from __future__ import annotations

import heapq
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP
from pydantic import TypeAdapter, ValidationError
from redis.asyncio import Redis

from rules.model import AlertEvent
from streams import compat
from streams.broker.clients import consumer as kafka_consumer
from streams.broker.clients import faust_app_kwargs, started
from streams.readmodel.projector import _retry
from streams.readmodel.tasks import write_book
from streams.settings import Settings, get_settings
from streams.tasks.machine import (
    AlertSeen,
    Event,
    TaskError,
    alert_event,
    apply_book,
    book_deadline,
)
from streams.tasks.model import DeadlineTick, InputRecord, TaskBook, TaskNotice

log = logging.getLogger("healthmon.tasks")
INPUT = TypeAdapter(InputRecord)
TICK_RETRY_S = 30.0  # live: a deadline still due this long after its tick is ticked again


@dataclass
class TasksPipeline:
    settings: Settings
    app: faust.App
    table: Any
    #: account -> (partition, next deadline as a UNIX time): what the clock must look at.
    deadlines: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: per partition, a heap of (deadline, account); entries that no longer match ``deadlines`` are
    #: skipped when they come up (a deadline read is O(log n), not a walk over every book).
    heaps: dict[int, list[tuple[float, str, bool]]] = field(default_factory=dict)

    def set_deadline(self, account: str, p: int, due: float | None) -> None:
        if due is None:
            self.deadlines.pop(account, None)
            return
        self.deadlines[account] = (p, due)
        heap = self.heaps.setdefault(p, [])
        heapq.heappush(heap, (due, account, False))
        if len(heap) > 64 and len(heap) > 4 * len(self.deadlines):  # mostly stale: rebuild
            self.heaps = {}
            for a, (q, d) in self.deadlines.items():
                self.heaps.setdefault(q, []).append((d, a, False))
            for h in self.heaps.values():
                heapq.heapify(h)

    def due(self, p: int, now: float) -> list[str]:
        """The partition's accounts with a deadline at or before ``now``, earliest first (each once);
        their entries leave the heap (the caller's step sets the next deadline)."""
        heap = self.heaps.get(p, [])
        out: dict[str, None] = {}
        while heap and heap[0][0] <= now:
            at, account, retry = heapq.heappop(heap)
            current = self.deadlines.get(account)
            if current == (p, at) or (
                retry and current is not None and current[0] == p and current[1] <= now
            ):
                out[account] = None
        return list(out)

    def retry(self, p: int, account: str, at: float) -> None:
        """Look at the account again at ``at`` if its deadline has not moved by then (a lost tick)."""
        heapq.heappush(self.heaps.setdefault(p, []), (at, account, True))

    #: event mode: each partition's clock (the latest alert time read), UNIX seconds
    clocks: dict[int, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    #: per input (topic, partition), the offset the next record must have (committed, then read)
    expected: dict[tuple[str, int], int] = field(default_factory=dict)
    #: per input (topic, partition), the last hole read again: (from, the offset that came instead)
    reread: dict[tuple[str, int], tuple[int, int]] = field(default_factory=dict)

    def hole(self, topic: str, p: int, offset: int) -> int | None:
        """Where a hole before ``offset`` begins, when Faust skipped records there that were not read
        again yet (the same hole seen again after a re-read is a real gap in the log: None)."""
        key = (topic, p)
        exp = self.expected.get(key)
        if exp is None or offset <= exp or self.reread.get(key) == (exp, offset):
            return None
        self.reread[key] = (exp, offset)
        return exp

    def read(self, topic: str, p: int, offset: int) -> None:
        key = (topic, p)
        if offset >= self.expected.get(key, offset):
            self.expected[key] = offset + 1


def _dt(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def parse_record(
    s: Settings, topic: str, key: bytes | None, value: bytes | None
) -> tuple[Event, float | None]:
    """The machine's event for a record, and its event time when it moves an event-mode clock."""
    if value is None:
        raise ValueError("a record without a value")
    if topic == s.topic("alerts"):
        at, ev = alert_event(AlertEvent.model_validate_json(value), s.tasks_cancel_rules, s.tasks_time_zone)
        return ev, at.timestamp()
    record = INPUT.validate_json(value)
    if key is not None and key.decode() != record.account_id:
        raise ValueError(f"key {key!r} is not the record's account {record.account_id!r}")
    return record, None


def create_tasks_app(settings: Settings | None = None) -> TasksPipeline:
    s = settings or get_settings()
    live = s.clock == "live"
    datadir = Path(f"{s.data_dir}-tasks")
    datadir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        f"{s.app_id}-tasks",
        broker=s.broker,
        store="memory://",  # the books are small: recovered from cs.tasks at start
        datadir=str(datadir),
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        processing_guarantee="at_least_once",
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=0,
        stream_wait_empty=False,  # (the agent acks each record as soon as it is applied)
        broker_commit_interval=s.tasks_commit_interval_s,
        broker_session_timeout=s.session_timeout_s,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 4),
        web_enabled=False,
        **faust_app_kwargs(s),
    )
    inputs = app.topic(
        s.topic("alerts"), s.topic("task_actions"), partitions=s.partitions, key_type=bytes, value_type=bytes
    )
    changelog = app.topic(
        s.topic("tasks"),
        partitions=s.partitions,
        compacting=True,
        deleting=False,
        key_type=bytes,
        value_type=bytes,
    )
    notices = app.topic(s.topic("task_notices"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    actions = app.topic(s.topic("task_actions"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    deadletter = app.topic(s.topic("deadletter"), key_type=bytes, value_type=bytes)
    table: Any = app.Table("tasks", partitions=s.partitions, changelog_topic=changelog, key_type=bytes)
    table.key_serializer = "raw"
    table.value_serializer = "raw"
    pipe = TasksPipeline(s, app, table)
    redis = Redis.from_url(s.redis_url)

    def count(what: str, n: int = 1) -> None:
        pipe.counts[what] = pipe.counts.get(what, 0) + n

    def book_of(account: str, p: int) -> TaskBook:
        raw = table.get(account.encode())
        return TaskBook(account_id=account, partition=p) if raw is None else TaskBook.model_validate_json(raw)

    async def save(old: TaskBook, new: TaskBook, notes: list[TaskNotice], p: int) -> None:
        """Inside the agent's event: the table write goes to cs.tasks before the offset is committed."""
        if new is not old:
            table[new.account_id.encode()] = new.model_dump_json().encode()
        due = book_deadline(new)
        pipe.set_deadline(new.account_id, p, None if due is None else due.timestamp())
        for n in notes:
            await notices.send(key=n.account_id.encode(), value=n.model_dump_json().encode(), partition=p)
            count(f"notice_{n.kind}")
        # Written whether or not the book changed: a redelivered record after a crash between the
        # changelog and Redis repairs the read model (the write is idempotent).
        await _retry(write_book, redis, s.redis_prefix, new)

    async def step(account: str, ev: Event, now: datetime, p: int) -> None:
        book = book_of(account, p)
        try:
            new, notes = apply_book(book, ev, now)
        except TaskError as exc:
            log.warning("task action refused: %s", exc)
            count("refused")
            new, notes = book, []
        await save(book, new, notes, p)

    async def clock_to(p: int, now_ts: float) -> None:
        """Event mode: every deadline of the partition the clock passed, in time order."""
        for account in pipe.due(p, now_ts):
            await step(account, DeadlineTick(account_id=account, at=_dt(now_ts)), _dt(now_ts), p)

    @app.agent(inputs, name="tasks")
    async def tasks_agent(stream: faust.StreamT) -> None:
        async for event in stream.events():
            msg = event.message
            p = msg.partition
            start = pipe.hole(msg.topic, p, msg.offset)
            if start is not None:
                # Faust can skip fetched records (the stream worker re-reads such holes too): read
                # them again before this one, and keep Faust from committing past them meanwhile.
                tp = TP(msg.topic, p)
                log.warning(
                    "%s[%s]: records from %d were not delivered (%d came next): reading them again",
                    msg.topic,
                    p,
                    start,
                    msg.offset,
                )
                count("rereads")
                compat.forget_gap(app.consumer, tp, start, msg.offset)
                if await compat.seek(app.consumer, tp, start):
                    continue  # this record comes again after the hole
            pipe.read(msg.topic, p, msg.offset)
            try:
                ev, at = parse_record(s, msg.topic, msg.key, msg.value)
            except (ValidationError, ValueError) as exc:
                count("dead_letters")
                log.warning("%s[%s]@%s: invalid record: %s", msg.topic, p, msg.offset, str(exc)[:300])
                await deadletter.send(
                    key=msg.key,
                    value=msg.value,
                    headers=[
                        ("healthmon.reason", f"invalid task record: {exc}".encode()[:1000]),
                        ("healthmon.topic", msg.topic.encode()),
                        ("healthmon.partition", str(p).encode()),
                        ("healthmon.offset", str(msg.offset).encode()),
                    ],
                )
                continue
            account = ev.account_id if not isinstance(ev, AlertSeen) else ev.alert.account_id
            if live:
                now = ev.at if isinstance(ev, DeadlineTick) else _dt(time.time())
            else:
                if at is not None:
                    pipe.clocks[p] = max(pipe.clocks.get(p, at), at)
                now = _dt(pipe.clocks.get(p, 0.0))
                if isinstance(ev, DeadlineTick):
                    continue  # event mode moves only with the alerts' time
            await step(account, ev, now, p)
            count("applied")
            if not live:
                await clock_to(p, now.timestamp())

    offsets: AIOKafkaConsumer | None = None  # our own client for committed offsets (outside the group)

    async def seek_uncommitted() -> None:
        """Read again from the log start where the group committed nothing yet.

        Faust drops what it fetches while a recovery holds the flow and then seeks back to the
        committed offsets; aiokafka's seek skips a partition without a commit (or at 0), so records
        that arrived in a new partition during a rebalance were never delivered (seen in the
        rebalance test: actions on the partitions the first worker kept). Runs before Faust resumes
        the flow; reading again is harmless, every record is applied idempotently."""
        nonlocal offsets
        pipe.expected.clear()  # positions to learn again (none known where the broker does not answer)
        names = {s.topic("alerts"), s.topic("task_actions")}
        tps = [
            TopicPartition(tp.topic, tp.partition) for tp in app.consumer.assignment() if tp.topic in names
        ]
        if not tps:
            return
        try:
            if offsets is None:
                offsets = await started(
                    kafka_consumer(
                        s, group_id=app.conf.id, client_id=f"{app.conf.id}-offsets", enable_auto_commit=False
                    )
                )
            begin = await offsets.beginning_offsets(tps)
            for tp in tps:
                committed = await offsets.committed(tp)
                if not committed:
                    await compat.seek(app.consumer, TP(tp.topic, tp.partition), begin[tp])
                pipe.expected[(tp.topic, tp.partition)] = committed or begin[tp]
        except Exception as exc:  # the broker is away: Faust's own seek is all there is
            log.warning("could not check the committed offsets: %r", exc)

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def index_books(app: faust.App, **kwargs: Any) -> None:
        """After recovery: the deadlines of the books this worker now owns, and the read model."""
        await seek_uncommitted()
        mine = {
            tp.partition for tp in app.assignor.assigned_actives() if tp.topic == changelog.get_topic_name()
        }
        pipe.deadlines.clear()
        pipe.heaps.clear()
        n = 0
        for key, raw in list(table.items()):
            book = TaskBook.model_validate_json(raw)
            if book.partition is not None and book.partition not in mine:
                continue
            due = book_deadline(book)
            if due is not None and book.partition is not None:
                pipe.set_deadline(key.decode(), book.partition, due.timestamp())
            await _retry(write_book, redis, s.redis_prefix, book)
            n += 1
        log.info(
            "tasks: %d account books on partitions %s, %d with a deadline",
            n,
            sorted(mine),
            len(pipe.deadlines),
        )

    if live:

        @app.timer(s.tasks_tick_s)
        async def deadlines_due() -> None:
            """Live mode: a tick into cs.task-actions for each account whose deadline has come."""
            now = time.time()
            for p in list(pipe.heaps):
                for account in pipe.due(p, now):
                    tick = DeadlineTick(account_id=account, at=_dt(now))
                    await actions.send(
                        key=account.encode(), value=tick.model_dump_json().encode(), partition=p
                    )
                    count("ticks")
                    # once more in a while if the tick's step has not moved the deadline by then
                    pipe.retry(p, account, now + TICK_RETRY_S)

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def close_redis(app: faust.App, **kwargs: Any) -> None:
        await redis.aclose()
        if offsets is not None:
            await offsets.stop()

    return pipe
