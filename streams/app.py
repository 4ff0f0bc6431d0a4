"""The Faust app: topics, tables and agents. Agents are thin glue around :class:`streams.engine.Engine`.

- ``ingest``: validate -> fold into the account's state -> (per batch) score, evaluate rules -> publish
  the snapshot on ``cs.health``, change events on ``cs.health.changes``, alerts on ``cs.alerts``.
- a timer moves engine time with the wall clock (live mode) and evaluates accounts that fell due.
- ``readmodel``: ``cs.health`` -> Redis, in its own agent so a slow Redis never stalls scoring.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT

from rules.engine import DEFAULT_RULES, RuleSet, load_rules, rule_files

from . import codecs as _codecs  # noqa: F401  (registers the state codec)
from .codecs import STATE_CODEC
from .config import ConfigError
from .engine import Engine, Evaluation, HeldWatermark, Watermarks
from .events import InvalidEvent, parse_event
from .readmodel import write_with_retry
from .scoring import ScoringConfig, load_scoring
from .settings import Settings, get_settings
from .state import DAY_S, AccountState

log = logging.getLogger("healthmon.ingest")


@dataclass
class Pipeline:
    """The app and its parts, so tests and the CLI can reach each one."""

    settings: Settings
    engine: Engine
    app: faust.App
    topics: dict[str, Any]
    accounts: Any
    clocks: Any
    agents: dict[str, Any] = field(default_factory=dict)


def dead_letter_headers(event: EventT, reason: str, now: float) -> list[tuple[str, bytes]]:
    msg = event.message
    return [
        ("healthmon.reason", reason.encode()),
        ("healthmon.topic", msg.topic.encode()),
        ("healthmon.partition", str(msg.partition).encode()),
        ("healthmon.offset", str(msg.offset).encode()),
        ("healthmon.failed_at", str(int(now)).encode()),
    ]


def _rules_stamp(path: Path) -> tuple[tuple[str, float], ...]:
    try:
        return tuple((str(p), p.stat().st_mtime) for p in rule_files(path))
    except OSError:
        return ()


def create_app(
    settings: Settings | None = None, scoring: ScoringConfig | None = None, ruleset: RuleSet | None = None
) -> Pipeline:
    s = settings or get_settings()
    # Bad configuration fails here, naming file, line and field, before anything is consumed.
    scoring = scoring or load_scoring(s.scorecard)
    rules_path = s.rules or DEFAULT_RULES
    ruleset = ruleset or load_rules(rules_path)
    engine = Engine(scoring, ruleset, dedupe_window=s.dedupe_window)
    app = faust.App(
        s.app_id,
        broker=s.broker,
        store=s.store,
        datadir=s.data_dir,
        topic_partitions=s.partitions,
        topic_replication_factor=s.replication_factor,
        processing_guarantee=s.processing_guarantee,
        producer_compression_type=s.compression_type,
        web_enabled=s.web_enabled,
        web_port=s.web_port,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        # One slow batch must not get the worker kicked out of the group.
        broker_max_poll_interval=300.0,
    )
    kind_of = {s.topic(kind): kind for kind in ("accounts", "usage", "tickets", "billing", "surveys")}
    inputs = app.topic(
        *s.input_topics, partitions=s.partitions, allow_empty=True, key_type=bytes, value_type=bytes
    )
    health = app.topic(
        s.topic("health"), partitions=s.partitions, allow_empty=True, key_type=bytes, value_type=bytes
    )
    changes = app.topic(s.topic("health_changes"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    alerts = app.topic(s.topic("alerts"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    deadletter = app.topic(s.topic("deadletter"), key_type=bytes, value_type=bytes)

    # Any: the serializer attributes set below are the Collection's, not in Faust's TableT interface.
    accounts: Any = app.Table("accounts", partitions=s.partitions, key_type=str)
    # Collection derives both serializers from the types ("json"). Set ours, and drop the changelog
    # topic made with the old ones so that it is made again (lazily) with these.
    accounts.key_serializer = "raw"
    accounts.value_serializer = STATE_CODEC
    accounts._changelog_topic = None
    #: Per input partition: the engine clock and, per topic, the last offset read and its latest event
    #: time, so that after a restart neither the clock nor the watermarks start from nothing.
    clocks = app.Table("clocks", partitions=s.partitions, key_type=str)
    pipeline = Pipeline(
        s,
        engine,
        app,
        {"inputs": inputs, "health": health, "changes": changes, "alerts": alerts, "deadletter": deadletter},
        accounts,
        clocks,
    )
    exactly_once = s.processing_guarantee == "exactly_once"
    lock = asyncio.Lock()  # the ingest batch and the clock timer take turns on the states
    watermarks = Watermarks()
    held = HeldWatermark(s.watermark_hold_s)
    fresh_highwaters: dict[tuple[str, int], int] = {}
    last_refresh: dict[int, float] = {}

    #: High watermarks as Faust's consumer last fetched them, read once per batch (they change only
    #: with a fetch, and asking for them per event was a tenth of the ingest loop).
    fetched_highwaters: dict[tuple[str, int], int | None] = {}

    def highwater(topic: str, partition: int) -> int | None:
        key = (topic, partition)
        if key in fetched_highwaters:
            fetched = fetched_highwaters[key]
        else:
            fetched = fetched_highwaters[key] = app.consumer.highwater(TP(topic, partition))
        fresh = fresh_highwaters.get(key)
        if fetched is None or fresh is None:
            return fetched if fresh is None else fresh
        return max(fetched, fresh)

    offsets_client: AIOKafkaConsumer | None = None

    async def end_offsets(p: int) -> dict[tuple[str, int], int]:
        """Fresh high watermarks of a partition's input topics, from a client of our own (asking
        Faust's consumer thread from inside an agent can deadlock it)."""
        nonlocal offsets_client
        try:
            if offsets_client is None:
                offsets_client = AIOKafkaConsumer(
                    bootstrap_servers=s.kafka_bootstrap,
                    client_id=f"{s.app_id}-watermarks",
                    enable_auto_commit=False,
                )
                await offsets_client.start()
            tps = [TopicPartition(t, p) for t in kind_of]
            got = await asyncio.wait_for(offsets_client.end_offsets(tps), timeout=10)
            return {(tp.topic, tp.partition): off for tp, off in got.items()}
        except Exception as exc:  # keep the watermark where it is; the next due time asks again
            log.warning("could not read end offsets for partition %s: %r", p, exc)
            return {}

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's signal type wants a signal= kwarg
    async def close_offsets_client(app: faust.App, **kwargs: Any) -> None:
        if offsets_client is not None:
            await offsets_client.stop()

    #: Per partition: the highest watermark checked against fresh end offsets.
    verified: dict[int, int] = {}

    async def safe_watermark(p: int) -> int | None:
        """The partition's low watermark; asks the broker for fresh high watermarks before trusting
        one that would run due times (those cannot be taken back), at most once a second per
        partition: until then the last checked watermark stands (it asked per event before, and
        that round trip was most of the ingest loop in a replay)."""
        wm = watermarks.low(p, kind_of, highwater)
        if wm is not None and wm <= max(engine.clock(p), verified.get(p, -1)):
            return wm
        due = engine.next_due(p)
        if not (wm is None or (due is not None and due <= wm) or wm // DAY_S > engine.clock(p) // DAY_S):
            return wm
        if time.monotonic() - last_refresh.get(p, 0.0) < 1.0:
            return verified.get(p)
        last_refresh[p] = time.monotonic()
        fresh_highwaters.update(await end_offsets(p))
        wm = watermarks.low(p, kind_of, highwater)
        if wm is not None and wm > verified.get(p, -1):
            verified[p] = wm
        return wm

    async def released_watermark(p: int) -> int | None:
        """The partition's watermark as the hold releases it, after offering the current one."""
        wm = await safe_watermark(p)
        now = time.monotonic()
        if wm is not None:
            held.offer(p, wm, now)
        return held.effective(p, now)

    def write_state(partition: int, state: AccountState) -> None:
        # Table.__setitem__ takes the changelog partition from the current event, which in a
        # batch is the batch's last one; an account's state must follow its own input partition.
        accounts.data[state.account_id] = state
        accounts.send_changelog(partition, state.account_id, state)

    async def send_dead_letter(event: EventT, reason: str) -> None:
        msg = event.message
        log.warning("dead-lettered %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset, reason)
        await deadletter.send(
            key=msg.key, value=msg.value, headers=dead_letter_headers(event, reason, time.time())
        )

    async def emit(topic: Any, key: bytes, value: bytes) -> None:
        """Send one output record without waiting for its ack (the commit flushes the producer first).

        At least once, straight to the producer: Faust's ``Topic.send`` wrapping costs more than
        the send itself, once per snapshot. Exactly once needs Faust's transactional path."""
        if exactly_once:
            await topic.send(key=key, value=value)
        else:
            await app.producer.send(topic.get_topic_name(), key, value, None, None, None)

    async def publish(state: AccountState, partition: int, as_of: int) -> None:
        try:
            result: Evaluation = engine.evaluate(state, as_of)
        except Exception:  # the event is folded in; a scoring bug must not stop the worker
            log.exception("failed to evaluate %s", state.account_id)
            return
        write_state(partition, state)
        key = state.account_id.encode()
        await emit(health, key, result.snapshot.model_dump_json().encode())
        if result.change is not None:
            await emit(changes, key, result.change.model_dump_json().encode())
        for alert in result.alerts:
            await emit(alerts, key, alert.model_dump_json().encode())

    async def run_due(partition: int, until: int, pending: dict[str, tuple[AccountState, int, int]]) -> None:
        """Evaluate accounts due at or before ``until`` at their due time, in time order."""
        for account_id, due in engine.pop_due(partition, until):
            if account_id in pending:  # evaluate what the batch did to it first, at its own time
                st, p, as_of = pending.pop(account_id)
                await publish(st, p, as_of)
            state = accounts.data.get(account_id)
            if state is None or state.next_due != due or state.partition != partition:
                continue  # a stale entry: the account was re-evaluated (or moved) since
            await publish(state, partition, due)

    def save_clock(partition: int) -> None:
        key = str(partition)
        value = {
            "clock": engine.clock(partition),
            "seen": {
                topic: [off, watermarks.latest.get((topic, p))]
                for (topic, p), off in watermarks.offsets.items()
                if p == partition
            },
        }
        if clocks.data.get(key) != value:
            clocks.data[key] = value
            clocks.send_changelog(partition, key, value)

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):  # type: ignore[attr-defined]  # on Stream, not in StreamT
            async with lock:
                await process(batch)

    async def process(batch: list[EventT]) -> None:
        fetched_highwaters.clear()
        pending: dict[str, tuple[AccountState, int, int]] = {}
        partitions: set[int] = set()
        horizon = time.time() + s.max_future_skew_s
        valid = []
        for event in batch:
            msg = event.message
            try:
                ev = parse_event(msg.value, msg.key, kind_of.get(msg.topic))
            except InvalidEvent as exc:
                watermarks.seen(msg.topic, msg.partition, msg.offset, None)
                await send_dead_letter(event, exc.reason)
                continue
            ts = int(ev.occurred_at.timestamp())
            if ts > horizon:
                watermarks.seen(msg.topic, msg.partition, msg.offset, None)
                await send_dead_letter(event, f"occurred_at: {ev.occurred_at.isoformat()} is in the future")
                continue
            valid.append((ts, event, ev))
        # The five input topics of a partition are fetched side by side; merging the batch by event
        # time undoes most of that interleaving (a stable sort keeps each topic's own order).
        valid.sort(key=lambda item: item[0])
        for ts, event, ev in valid:
            msg = event.message
            p = msg.partition
            partitions.add(p)
            watermarks.seen(msg.topic, p, msg.offset, ts)
            wm = await released_watermark(p)
            if wm is not None and wm > engine.clock(p):
                if wm // DAY_S > engine.clock(p) // DAY_S:
                    # Midnight passes inside the batch: what the batch did so far is evaluated at
                    # its own time first, so that the accounts it touched fall due too.
                    for account_id in [a for a, v in pending.items() if v[1] == p]:
                        await publish(*pending.pop(account_id))
                await run_due(p, wm, pending)
                engine.advance(p, wm)
            hit = pending.get(ev.account_id)
            state = hit[0] if hit else accounts.data.get(ev.account_id)
            if state is None:
                state = AccountState(account_id=ev.account_id)
            elif (hit and ts // DAY_S > hit[2] // DAY_S) or (state.next_due or ts + 1) <= ts:
                # The account fell due before this event (the clock of its partition may lag or
                # lead), or its batch events span midnight: evaluate up to this event's time first,
                # so its alerts depend on its own events, not on batch boundaries or other accounts.
                if hit:
                    await publish(*pending.pop(ev.account_id))
                    hit = None
                while (due := state.next_due) is not None and due <= ts:
                    await publish(state, p, due)
                    if state.next_due == due:
                        break  # the evaluation failed (and was logged): do not spin
            try:
                changed = engine.apply(state, ev, p)
            except Exception as exc:  # a bug must cost one event, never the worker
                log.exception("failed to apply event %s", ev.event_id)
                await send_dead_letter(event, f"internal error: {exc!r}")
                continue
            if changed:
                # Evaluated at its own (latest) event time, not the partition clock: topics of one
                # partition interleave differently on every run, an account's own events do not.
                pending[ev.account_id] = (state, p, max(ts, hit[2]) if hit else ts)
        for state, p, as_of in pending.values():
            await publish(state, p, as_of)
        for p in partitions:
            await run_due(p, engine.clock(p), {})  # catch late accounts up with the clock
            save_clock(p)

    pipeline.agents["ingest"] = ingest

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic in kind_of}

    async def on_recovered() -> None:
        """A rebalance moved partitions: load their clocks and rebuild their due schedules."""
        async with lock:
            mine = assigned()
            for key, value in clocks.data.items():
                p = int(key)
                if p in mine and isinstance(value, dict):
                    engine.advance(p, int(value["clock"]))
                    for topic, (offset, latest) in value["seen"].items():
                        if (topic, p) not in watermarks.offsets:
                            watermarks.seen(topic, p, offset, latest)
            engine.rebuild(accounts.data.values(), mine)
            log.info("engine schedule rebuilt for partitions %s", sorted(mine))

    accounts.on_recover(on_recovered)

    rules_stamp = _rules_stamp(rules_path)
    last_rules_check = time.monotonic()

    @app.timer(s.tick_s)
    async def tick() -> None:
        nonlocal rules_stamp, last_rules_check
        if time.monotonic() - last_rules_check >= s.rules_reload_s:
            last_rules_check = time.monotonic()
            stamp = _rules_stamp(rules_path)
            if stamp != rules_stamp:
                rules_stamp = stamp
                try:
                    engine.rules = load_rules(rules_path)
                    log.info("reloaded %d rules from %s", len(engine.rules.rules), rules_path)
                except ConfigError as exc:
                    log.error("rule files changed but are invalid; keeping the previous rules:\n%s", exc)
        async with lock:
            for p in assigned():
                # The watermark may have moved since the last event (a checked one was held back
                # above, or a lagging topic caught up). Event time released by the hold, and in
                # live mode the wall clock too.
                target = await released_watermark(p) or 0
                if s.clock == "live":
                    target = max(target, int(time.time()))
                if target > engine.clock(p):
                    await run_due(p, target, {})
                    engine.advance(p, target)
                    save_clock(p)

    if s.readmodel_enabled:
        from redis.asyncio import Redis

        redis_client: Redis | None = None

        @app.agent(health, name="readmodel")
        async def readmodel(stream: faust.StreamT) -> None:
            nonlocal redis_client
            redis_client = redis_client or Redis.from_url(s.redis_url)
            async for values in stream.take(200, within=0.1):
                await write_with_retry(redis_client, s.redis_prefix, values)

        pipeline.agents["readmodel"] = readmodel

    return pipeline
