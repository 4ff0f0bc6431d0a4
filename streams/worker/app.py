"""The Faust app: topics, tables and agents, as thin wiring around :mod:`streams.driver`.

- ``ingest``: hands each input record to the driver of its partition, which merges the five topics
  in event-time order, folds events into account states, evaluates and schedules; this module makes
  what it produces durable in the right order (outputs flushed, then states flushed, then the input
  acked, so a crash at any point redoes work instead of losing it) and acks nothing before that.
- a timer moves time on without input (held watermarks, live mode's wall clock) and reloads rules.
- rebalances: a partition gets a driver only once its table is recovered; a revoked partition's
  driver is dropped with its pending work, which the new owner redoes from the committed offsets.
- ``readmodel`` (optional): ``cs.health`` -> Redis in the worker (``healthmon readmodel`` runs it apart).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import faust
from faust.types import TP, EventT

from rules.engine import DEFAULT_RULES, RuleSet, load_rules, rule_files
from streams import compat
from streams.broker.admin import DEAD_LETTER_MAX_MESSAGE_BYTES
from streams.broker.clients import faust_app_kwargs
from streams.config import ConfigError
from streams.core.cards import CardSchedule
from streams.core.scoring import ScoringConfig, load_scoring
from streams.core.state import DAY_S, INPUT_KINDS, set_write_format
from streams.engine.driver import DriverConfig, PartitionDriver, Record, state_store
from streams.engine.engine import Engine
from streams.readmodel.projector import write_with_retry
from streams.settings import Settings, get_settings
from streams.worker import codecs as _codecs  # noqa: F401  (registers the state codec)
from streams.worker.cards import CardFollower
from streams.worker.checkpoint import Checkpoint, Durable
from streams.worker.codecs import STATE_CODEC
from streams.worker.heap import HeapFreezer
from streams.worker.offsets import BrokerOffsets, Consumer, OffsetTracker
from streams.worker.outputs import Out, Outputs
from streams.worker.partitions import PartitionSet
from streams.worker.shell import Shell
from streams.worker.telemetry import Telemetry, WorkerMetrics, start_exporter

log = logging.getLogger("healthmon.ingest")


@dataclass
class Pipeline:
    """The app and its parts, so tests and the CLI can reach each one."""

    settings: Settings
    engine: Engine
    app: faust.App
    topics: dict[str, Any]
    accounts: Any
    drivers: dict[int, PartitionDriver] = field(default_factory=dict)
    agents: dict[str, Any] = field(default_factory=dict)
    metrics: WorkerMetrics = field(default_factory=WorkerMetrics)


def _rules_stamp(path: Path) -> tuple[tuple[str, float], ...]:
    try:
        return tuple((str(p), p.stat().st_mtime) for p in rule_files(path))
    except OSError:
        return ()


def driver_config(s: Settings) -> DriverConfig:
    return DriverConfig(
        slot_ms=int(s.eval_slot_s * 1000),
        hold_s=s.watermark_hold_s,
        live=s.clock == "live",
        live_within_s=s.live_within_s,
        live_lateness_s=s.live_lateness_ms / 1000,
        live_slot_ms=s.live_slot_ms,
        max_block_s=s.max_block_s,
        max_buffered=s.max_buffered,
        max_age_s=s.max_event_age_days * DAY_S,
        max_future_s=s.max_future_skew_s,
        max_record_bytes=s.max_record_bytes,
        step_budget=s.step_budget,
    )


def create_app(
    settings: Settings | None = None, scoring: ScoringConfig | None = None, ruleset: RuleSet | None = None
) -> Pipeline:
    s = settings or get_settings()
    compat.install()
    if s.processing_guarantee != "at_least_once":
        raise ConfigError(
            "HEALTHMON_PROCESSING_GUARANTEE: only at_least_once is supported; the engine skips "
            "redelivered records per account state (effectively once), see docs/processing.md"
        )
    # Bad configuration fails here, naming file, line and field, before anything is consumed.
    scoring = scoring or load_scoring(s.scorecard)
    rules_path = s.rules or DEFAULT_RULES
    ruleset = ruleset or load_rules(rules_path)
    engine = Engine.configured(s, scoring, ruleset)
    set_write_format(s.state_format)
    config = driver_config(s)
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
        broker_session_timeout=s.session_timeout_s,
        # Records wait in the drivers until event time lets them through, unacked: a rebalance must
        # not wait for them (they are redone by the next owner from the committed offsets).
        stream_wait_empty=False,
        broker_heartbeat_interval=min(3.0, s.session_timeout_s / 4),
        # A dead letter carries the original record whole, up to the input topics' largest.
        producer_max_request_size=DEAD_LETTER_MAX_MESSAGE_BYTES,
        **faust_app_kwargs(s),  # SASL/TLS credentials and the web server's bind address
    )
    kinds = {s.topic(kind): i for i, kind in enumerate(INPUT_KINDS)}
    names = list(kinds)
    inputs = app.topic(*names, partitions=s.partitions, allow_empty=True, key_type=bytes, value_type=bytes)
    health = app.topic(
        s.topic("health"), partitions=s.partitions, allow_empty=True, key_type=bytes, value_type=bytes
    )
    changes = app.topic(s.topic("health_changes"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    alerts = app.topic(s.topic("alerts"), partitions=s.partitions, key_type=bytes, value_type=bytes)
    deadletter = app.topic(s.topic("deadletter"), key_type=bytes, value_type=bytes)
    outputs = {"health": health, "changes": changes, "alerts": alerts, "errors": deadletter}

    # Any: the serializer attributes set below are the Collection's, not in Faust's TableT interface.
    accounts: Any = app.Table("accounts", partitions=s.partitions, key_type=str)
    # Collection derives both serializers from the types ("json"). Set ours, and drop the changelog
    # topic made with the old ones so that it is made again (lazily) with these.
    accounts.key_serializer = "raw"
    accounts.value_serializer = STATE_CODEC
    compat.renew_changelog_topic(accounts)
    pipeline = Pipeline(s, engine, app, {"inputs": inputs, **outputs}, accounts)
    metrics = pipeline.metrics
    telemetry = Telemetry(metrics)
    store = state_store(accounts.data)  # the memory dict, or RocksDB's per-partition databases
    lock = asyncio.Lock()  # the ingest batches and the timer take turns on the drivers
    #: Notified after every step and revocation: the ingest agent waits on it while a partition of
    #: its batch is cut into steps (:func:`run_cut` steps it on).
    stepped = asyncio.Condition(lock)

    # --- the parts: offsets, partitions, outputs, the checkpoint --------------------------------

    broker = BrokerOffsets(s, names)

    async def seek(k: int, p: int, offset: int) -> bool:
        tp = TP(names[k], p)
        # Its stream buffer may have left it out of the fetches, too.
        app.consumer.on_buffer_drop(tp)
        app.consumer.resume_partitions([tp])
        # From the consumer's thread: a seek from this one raced aiokafka's fetch (KeyError).
        return await compat.seek(app.consumer, tp, offset, hole=True)

    offsets = OffsetTracker(
        len(names),
        Consumer(
            probe=broker.first_offset_from,
            seek=seek,
            forget_gap=lambda k, p, first, until: compat.forget_gap(
                app.consumer, TP(names[k], p), first, until
            ),
            highwater=lambda k, p: app.consumer.highwater(TP(names[k], p)),
            check_again=lambda k, p: compat.check_again(app.consumer, TP(names[k], p)),
        ),
        time.monotonic,
        time.time,
        names,
    )

    async def start_positions(p: int) -> list[int | None]:
        positions, ends = await broker.start_positions(p)
        if ends is not None:
            offsets.record_ends(p, ends)
        return positions

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic in kinds}

    def halted() -> bool:
        """No step may start: the app is stopping (Faust's crash path stops the fetcher and leaves
        the group, then lets agents and timers run until ``on_before_shutdown`` has run, without a
        revocation), or a step broke."""
        return checkpoint.broken is not None or app.should_stop

    def current(event: EventT) -> bool:
        """Whether the record was fetched in this generation of the group. One fetched before a
        rebalance may still sit in a batch; it is neither processed nor acked (acking it could let
        the commit jump the records the seek to the committed offset delivers again before it)."""
        generation = event.message.generation_id
        return generation is None or generation == app.consumer_generation_id

    partitions = PartitionSet(
        lambda p, positions: PartitionDriver(
            p, engine, store.for_partition(p), config, positions, rebuild=False
        ),
        start_positions,
        assigned,
        halted,
        time.time,
        current,
    )
    drivers = partitions.drivers
    pipeline.drivers = drivers
    sink = Outputs(
        lambda: app.producer,
        {name: topic.get_topic_name() for name, topic in outputs.items()},
        names,
        lambda: accounts.changelog_topic.get_topic_name(),
    )
    #: Outputs sent, then the states they imply, then the acks (streams/worker/checkpoint.py).
    checkpoint: Checkpoint[Out] = Checkpoint(
        Durable(sink.send, sink.settle, sink.write_changelog, lambda handle: handle.ack()),
        s.state_flush_s,
        time.monotonic,
    )

    def new_schedule(schedule: CardSchedule) -> None:
        engine.cards = schedule

    #: The card topic, read whole before the first step, then followed (streams/worker/cards.py).
    cards = CardFollower(s, scoring, new_schedule, lambda: engine.reached)

    def to_record(event: EventT) -> Record:
        msg = event.message
        return Record(kinds[msg.topic], msg.offset, msg.key, msg.value, event)

    shell: Shell[Out] = Shell(
        partitions, offsets, checkpoint, sink.records, s.step_budget, telemetry, app.crash
    )

    async def step(parts: list[int]) -> None:
        await shell.step(parts)
        stepped.notify_all()

    # --- Faust's hooks, agents and timers ---------------------------------------------------------

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's signal type wants a signal= kwarg
    async def close_offsets_client(app: faust.App, **kwargs: Any) -> None:
        await broker.close()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        """A clean stop writes the held states (the producer is still up; Faust sends this after
        stopping the consumer), or its restart would fold and publish their records again."""
        async with lock:
            await shell.write_states(stopping=True)

    @app.task
    async def run_cut() -> None:
        """Step the first cut partition again as soon as the loop has had a turn, the lock released
        between steps so heartbeats, commits, the web endpoints and the other partitions' ticks run.
        A live worker's midnight comes from the tick (the wall clock): stepped only there, the
        worker was idle for a tick between steps."""
        while True:
            await partitions.cut_waiting.wait()
            while partitions.cut and not halted():
                await asyncio.sleep(0)
                async with lock:
                    await step(partitions.first_cut())
            partitions.cut_waiting.clear()  # (no await since ``cut`` emptied: nothing was cut meanwhile)

    @app.task
    async def follow_cards() -> None:
        await cards.run()

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        await cards.ready.wait()  # no evaluation before the cards in force are known
        async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):  # type: ignore[attr-defined]  # on Stream, not in StreamT
            for event in batch:
                event.message.incref()  # acked by us once its effect is durable, not by take_events
            async with lock:
                records = [(e.message.partition, to_record(e)) for e in batch]
                touched = await shell.offer(records, time.time())
                await step(sorted(touched))
                # A partition that stopped at its step budget (a midnight: every account due) goes
                # on in steps (:func:`run_cut`); this agent reads no more input until it is done,
                # a backpressure. The wait releases the lock.
                await stepped.wait_for(functools.partial(partitions.uncut, touched))

    pipeline.agents["ingest"] = ingest

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance_complete(app: faust.App, **kwargs: Any) -> None:
        partitions.rebalance_completed(assigned())
        metrics.set_state("running")

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        """Drop the drivers of every partition we may lose, once the step in flight is durable:
        the states a driver changes live in the table, so a step must never stop half-way."""
        partitions.rebalance_started()
        metrics.set_state("recovering")
        async with lock:
            # what the drivers changed is in the changelog before they go
            await shell.revoke(tp.partition for tp in revoked if tp.topic in kinds)
            stepped.notify_all()  # an ingest batch waiting for a dropped partition goes on

    rules_stamp = _rules_stamp(rules_path)
    last_rules_check = time.monotonic()

    @app.timer(s.tick_s)
    async def tick() -> None:
        """Time moves on without input (held watermarks, live mode's wall clock); rules reload."""
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
        if not cards.ready.is_set():
            return
        async with lock:
            await shell.tick(assigned())
            stepped.notify_all()

    @app.timer(1.0)
    async def read_ends() -> None:
        """Every second, the end offsets of the partitions we drive (see ``OffsetTracker.highwaters``)."""
        mine = list(drivers)
        if mine and (ends := await broker.end_offsets(mine)) is not None:
            for p, row in ends.items():
                offsets.record_ends(p, row)

    if s.gc_freeze_s:
        heap = HeapFreezer(s.gc_full_s)

        @app.timer(s.gc_freeze_s)
        async def freeze_heap() -> None:
            heap.tick()

    @app.timer(10.0)
    async def gauges() -> None:
        telemetry.gauges(assigned(), drivers, names, offsets.consumer.highwater, offsets.highwaters)

    @app.task
    async def loop_lag() -> None:
        await telemetry.watch_loop()

    if s.metrics_port:

        @app.task
        async def serve_metrics() -> None:
            start_exporter(s.metrics_port, metrics, s.metrics_bind)
            log.info("metrics on http://%s:%s/metrics", s.metrics_bind, s.metrics_port)

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
