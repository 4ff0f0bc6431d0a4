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
from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.types import TP, EventT

from rules.engine import DEFAULT_RULES, RuleSet, load_rules, rule_files
from streams import compat
from streams.broker.admin import DEAD_LETTER_MAX_MESSAGE_BYTES
from streams.broker.clients import consumer as kafka_consumer
from streams.broker.clients import faust_app_kwargs, started
from streams.broker.headers import OutputKind, event_time_header, output_headers
from streams.config import ConfigError
from streams.core.scoring import ScoringConfig, load_scoring
from streams.core.state import DAY_S, INPUT_KINDS, AccountState, set_write_format
from streams.engine.driver import (
    DeadLetter,
    DriverConfig,
    Output,
    PartitionDriver,
    Record,
    StateStore,
    state_store,
)
from streams.engine.engine import Engine
from streams.readmodel.projector import write_with_retry
from streams.settings import Settings, get_settings
from streams.worker import codecs as _codecs  # noqa: F401  (registers the state codec)
from streams.worker.checkpoint import Checkpoint, Durable
from streams.worker.codecs import STATE_CODEC
from streams.worker.telemetry import WorkerMetrics, start_exporter

log = logging.getLogger("healthmon.ingest")

#: A dead-lettered record keeps at most this much of its value (the reason says how big it was).
OUTPUT_KINDS: dict[str, OutputKind] = {"health": "health", "changes": "health-changes", "alerts": "alerts"}


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


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, now: float, size: int
) -> list[tuple[str, bytes]]:
    return [
        ("healthmon.reason", reason.encode()[:1000]),
        ("healthmon.topic", topic.encode()),
        ("healthmon.partition", str(partition).encode()),
        ("healthmon.offset", str(offset).encode()),
        ("healthmon.failed_at", str(int(now)).encode()),
        ("healthmon.original_size", str(size).encode()),
    ]


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
    output_names = {name: topic.get_topic_name() for name, topic in outputs.items()}
    deadletter_name = deadletter.get_topic_name()

    # Any: the serializer attributes set below are the Collection's, not in Faust's TableT interface.
    accounts: Any = app.Table("accounts", partitions=s.partitions, key_type=str)
    # Collection derives both serializers from the types ("json"). Set ours, and drop the changelog
    # topic made with the old ones so that it is made again (lazily) with these.
    accounts.key_serializer = "raw"
    accounts.value_serializer = STATE_CODEC
    compat.renew_changelog_topic(accounts)
    pipeline = Pipeline(
        s,
        engine,
        app,
        {"inputs": inputs, **outputs},
        accounts,
    )
    drivers = pipeline.drivers
    metrics = pipeline.metrics
    exported: dict[tuple[object, ...], int] = {}  # per driver: counter values already exported
    store = state_store(accounts.data)  # the memory dict, or RocksDB's per-partition databases
    lock = asyncio.Lock()  # the ingest batches and the timer take turns on the drivers
    #: Notified after every step and revocation: the ingest agent waits on it while a partition of
    #: its batch is cut into steps (:func:`run_cut` steps it on).
    stepped = asyncio.Condition(lock)
    waiting: dict[int, list[EventT]] = {}  # records of a partition whose driver is not ready yet
    end_offsets: dict[tuple[int, int], int] = {}  # (kind, partition) -> end offset, asked each second
    ends_read_at: dict[int, float] = {}  # partition -> when its end offsets were last read

    client: AIOKafkaConsumer | None = None

    async def offsets_client() -> AIOKafkaConsumer:
        """A client of our own for committed and end offsets (asking Faust's consumer thread from
        inside an agent can deadlock it)."""
        nonlocal client
        if client is None:
            fresh = kafka_consumer(
                s, group_id=s.app_id, client_id=f"{s.app_id}-offsets", enable_auto_commit=False
            )
            client = await started(fresh)  # assigned only once started: a failed start is asked again
        return client

    @app.on_before_shutdown.connect  # type: ignore[arg-type]  # mode's signal type wants a signal= kwarg
    async def close_offsets_client(app: faust.App, **kwargs: Any) -> None:
        if client is not None:
            await client.stop()

    async def start_positions(p: int) -> list[int | None]:
        """Where the consumer starts reading each topic of a partition: the committed offset, or
        the log start when nothing was committed (so a topic read to its end holds nothing back)."""
        tps = [TopicPartition(name, p) for name in names]
        try:
            c = await offsets_client()
            begin = await asyncio.wait_for(c.beginning_offsets(tps), timeout=10)
            ends = await asyncio.wait_for(c.end_offsets(tps), timeout=10)
            out: list[int | None] = []
            for k, tp in enumerate(tps):
                committed = await asyncio.wait_for(c.committed(tp), timeout=10)
                out.append(committed if committed is not None else begin[tp])
                end_offsets[(k, p)] = ends[tp]
            ends_read_at[p] = time.monotonic()
            return out
        except Exception as exc:  # unknown: such a topic holds time back until max_block_s
            log.warning("could not read the offsets of partition %s: %r", p, exc)
            return [None] * len(names)

    async def first_offset_from(tp: TopicPartition, offset: int) -> int | None:
        """The offset of the first record the broker holds at or after ``offset``; None when it
        holds none before its end (transaction markers, compaction). Read by a client of our own,
        outside the group; raises when the broker gives no answer either way within 10 s."""

        async def probe_once() -> int | None:
            probe = await started(
                kafka_consumer(s, group_id=None, client_id=f"{s.app_id}-probe", enable_auto_commit=False)
            )
            try:
                probe.assign([tp])
                probe.seek(tp, offset)
                while True:
                    batch = await probe.getmany(tp, timeout_ms=500, max_records=1)
                    if found := batch.get(tp):
                        return found[0].offset
                    end = (await probe.end_offsets([tp]))[tp]
                    if await probe.position(tp) >= end:
                        return None
            finally:
                await probe.stop()

        return await asyncio.wait_for(probe_once(), timeout=10)

    rereads: dict[tuple[int, int], tuple[int, float]] = {}  # (partition, topic) -> (from, when)
    probe_failed_at = 0.0

    async def reread(p: int, driver: PartitionDriver) -> None:
        """Read a topic again from where its records stopped arriving in order.

        The driver folds a topic's records strictly in offset order (an account's state records
        the last offset it applied, which is what makes redelivery safe), so what the consumer
        skipped must come before anything after it. Faust 0.15 skips fetched records at times: in
        the SIGKILL fault test 88 records of one partition never reached the agent while the ones
        after them did (a hole: the driver sets the later ones aside), and a partition's tail can
        go missing with nothing after it (a topic with unread records that delivers none). Both
        are sought back to; records in flight come again and the driver takes them in order. The
        broker is asked first what lies there: offsets it has no record for (transaction markers,
        compaction) are accepted, not waited for."""
        nonlocal probe_failed_at
        now = time.monotonic()
        if now - probe_failed_at < 10.0:
            return  # the broker did not answer the last probe (an outage): not again at once
        holes: dict[int, tuple[int, int | None]] = dict(driver.gaps)
        for k, since in enumerate(driver.blocked_since):
            pos = driver.position[k]
            if k not in holes and since is not None and pos is not None and time.time() - since >= 3.0:
                holes[k] = (pos, None)  # unread records, none delivered
        for k, (want, got) in holes.items():
            seen = rereads.get((p, k))
            if seen is not None and seen[0] == want and now - seen[1] < 5.0:
                continue  # a seek from there is under way
            rereads[(p, k)] = (want, now)
            tp = TP(names[k], p)
            try:
                first = await first_offset_from(TopicPartition(names[k], p), want)
            except Exception as exc:
                probe_failed_at = time.monotonic()
                log.warning("could not read %s[%s] from %s: %r; trying again", names[k], p, want, exc)
                return
            if first is None:  # nothing from there to the end: the end offset counts markers
                if got is None:
                    driver.skip_to(k, highwaters(p)[k] or want)
                continue
            if first > want:  # nothing before ``first`` (transaction markers, compaction)
                driver.skip_to(k, first)
            if got is not None and first < got:
                # Faust counts a jump it saw as acked (meant for transaction markers): left over
                # records it skipped, its next commit could pass them before they are folded in.
                compat.forget_gap(app.consumer, tp, first, got + 1)
            if first == want:
                came = f"{got} came next" if got is not None else "none came"
                log.warning("%s[%s]: records from %s were not delivered (%s); reading again", *tp, want, came)
            # Its stream buffer may have left it out of the fetches, too.
            app.consumer.on_buffer_drop(tp)
            app.consumer.resume_partitions([tp])
            # From the consumer's thread: a seek from this one raced aiokafka's fetch (KeyError).
            if not await compat.seek(app.consumer, tp, first):
                rereads.pop((p, k), None)  # not done: asked again at the next tick

    def highwaters(p: int) -> list[int | None]:
        """The topics' end offsets, or None (unknown) when the broker has not told us for seconds.

        "Read to its end" lets a topic stop holding time back; the consumer's own high-water
        marks stop moving in a broker outage, so trusting them would let time run ahead of records
        already in Kafka (every one of them late when the broker is back). Unknown: time waits."""
        if time.monotonic() - ends_read_at.get(p, float("-inf")) > 5.0:
            return [None] * len(names)
        out: list[int | None] = []
        for k, name in enumerate(names):
            hw = app.consumer.highwater(TP(name, p))
            known = end_offsets.get((k, p))
            out.append(hw if known is None or (hw is not None and hw > known) else known)
        return out

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic in kinds}

    async def ensure_driver(p: int) -> PartitionDriver | None:
        """The partition's driver, made once its table is recovered (never before: a state write
        for a recovering partition would overwrite what the changelog is about to restore)."""
        driver = drivers.get(p)
        if driver is not None or not recovered.is_set() or halted() or p not in assigned():
            return driver
        generation = recovered_generation
        positions = await start_positions(p)
        if p in drivers or generation != recovered_generation or halted() or p not in assigned():
            return drivers.get(p)  # the world moved while we asked
        driver = PartitionDriver(p, engine, store.for_partition(p), config, positions, rebuild=False)
        for _ in driver.rebuild():
            await asyncio.sleep(0)  # the loop's other tasks (heartbeats, the web) get a turn
        if generation != recovered_generation or halted() or p not in assigned():
            return None  # revoked meanwhile (the revocation waits for the lock we hold)
        drivers[p] = driver
        log.info("partition %s ready: %d accounts due", p, driver.schedule_size)
        now = time.time()
        for event in waiting.pop(p, []):
            if current(event):
                driver.offer(to_record(event), now)
        return driver

    def current(event: EventT) -> bool:
        """Whether the record was fetched in this generation of the group. One fetched before a
        rebalance may still sit in a batch; it is neither processed nor acked (acking it could let
        the commit jump the records the seek to the committed offset delivers again before it)."""
        generation = event.message.generation_id
        return generation is None or generation == app.consumer_generation_id

    def to_record(event: EventT) -> Record:
        msg = event.message
        return Record(kinds[msg.topic], msg.offset, msg.key, msg.value, event)

    #: (topic, key, value, partition, timestamp in s, headers)
    Out = tuple[str, bytes | None, bytes | None, int | None, float | None, list[tuple[str, bytes]]]

    async def send(pending: list[Out]) -> list[tuple[Out, Any]]:
        """Hand records to the producer; their futures say later whether the broker has them."""
        return [(rec, await app.producer.send(*rec)) for rec in pending]

    async def settle(sent: list[tuple[Out, Any]]) -> list[Any]:
        """Wait until every sent record is acknowledged, resending what failed.

        A send does not raise when the broker is away: its future fails after the producer gives
        up on the batch. Each future is checked, and nothing after this goes on (so nothing is
        acked) until all the records are in Kafka: during an outage the worker waits, it loses
        nothing."""
        attempt = 0
        acked: list[Any] = []  # the RecordMetadata of each record, once acknowledged
        while sent:
            await app.producer.flush()
            failed: list[Out] = []
            error: BaseException | None = None
            for rec, fut in sent:
                try:
                    acked.append(await fut)
                except Exception as exc:
                    failed.append(rec)
                    error = exc
            if not failed:
                break
            delay = min(5.0, 0.2 * 2**attempt)
            log.warning(
                "%d records not acknowledged (%r); sending them again in %.1f s", len(failed), error, delay
            )
            await asyncio.sleep(delay)
            attempt += 1
            sent = await send(failed)
        return acked

    async def deliver(pending: list[Out]) -> list[Any]:
        return await settle(await send(pending))

    def dead_letter(p: int, dl: DeadLetter) -> Out:
        rec = dl.record
        value = rec.value or b""
        log.warning("dead-lettered %s[%s]@%s: %s", names[rec.kind], p, rec.offset, dl.reason[:300])
        headers = dead_letter_headers(names[rec.kind], p, rec.offset, dl.reason, time.time(), len(value))
        return (deadletter_name, rec.key, value, None, None, headers)

    async def write_changelog(rows: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        """States to the table's changelog; per partition, the offset of its last record written."""
        changelog = accounts.changelog_topic.get_topic_name()
        acked = await deliver([(changelog, key, value, p, None, []) for p, key, value in rows])
        reached: dict[int, int] = {}
        for m in acked:
            reached[m.partition] = max(m.offset, reached.get(m.partition, m.offset))
        return reached

    #: Outputs sent, then the states they imply, then the acks (streams/worker/checkpoint.py).
    checkpoint: Checkpoint[Out] = Checkpoint(
        Durable(send, settle, write_changelog, lambda handle: handle.ack()), s.state_flush_s, time.monotonic
    )

    async def make_durable(steps: list[tuple[int, Output, StateStore]]) -> None:
        """Outputs first, then states, then acks: each waits for the one before it. Runs under
        the lock, which a revocation takes before it drops a driver, so it always completes.

        The outputs are sent now and the step goes on without waiting for the broker; the states
        they imply are held and written at most every ``HEALTHMON_STATE_FLUSH_S``
        (:func:`write_states`), which first waits until every output sent before is acknowledged.
        So an account changed in many steps is encoded and written once, the records that changed
        it are acked after that write, and the worker evaluates while the broker stores (waiting
        for a send-and-flush round per step left a midnight's worker idle a third of the time).
        Within a partition the order is unchanged, and partitions do not depend on each other."""
        records: list[Out] = []
        for p, out, _ in steps:
            for name, key, value, ts_ms in out.records:
                if name == "errors":
                    headers = [
                        ("healthmon.reason", b"evaluation failed"),
                        ("content-type", b"application/json"),
                    ]
                else:
                    headers = output_headers(
                        OUTPUT_KINDS[name]
                    )  # the header contract: streams/broker/headers.py
                    headers.append(event_time_header(ts_ms))
                # The Kafka timestamp stays the produce time: an event-time one would let time-based
                # retention delete a replay's outputs at once (docs/deploy.md).
                records.append((output_names[name], key, value, None, None, headers))
            records.extend(dead_letter(p, dl) for dl in out.dead_letters)
        await checkpoint.add(records, [(p, out.states, store, out.acks) for p, out, store in steps])
        await write_states_when_due()

    async def write_states_when_due() -> None:
        if checkpoint.due():
            await write_states()

    async def write_states(stopping: bool = False) -> None:
        """What the steps since the last write hold, made durable (:meth:`Checkpoint.flush`); the
        drivers then know their accounts' bands as written. Under the lock."""
        for p, states in (await checkpoint.flush(stopping)).items():
            if (driver := drivers.get(p)) is not None:
                for a, st in states.items():
                    if isinstance(st, AccountState):  # not a partition's portfolio
                        driver.bands[a] = st.last_change_band or "none"

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def on_shutdown(app: faust.App, **kwargs: Any) -> None:
        """A clean stop writes the held states (the producer is still up; Faust sends this after
        stopping the consumer), or its restart would fold and publish their records again."""
        async with lock:
            await write_states(stopping=True)

    #: Partitions whose due work is being cut into steps, in the order they got there. Only the
    #: first goes on: at a midnight every partition freezes its portfolio and holds its accounts'
    #: metrics until they are evaluated, and 8 partitions of 125k accounts doing that side by side
    #: took 4.8 GB; one after the other, one partition's worth (the total work is the same).
    cut: dict[int, None] = {}
    cut_waiting = asyncio.Event()  # set when a partition is cut: :func:`run_cut` steps it on

    def halted() -> bool:
        """No step may start: the app is stopping (Faust's crash path stops the fetcher and leaves
        the group, then lets agents and timers run until ``on_before_shutdown`` has run, without a
        revocation), or a step broke."""
        return checkpoint.broken is not None or app.should_stop

    async def step(parts: list[int]) -> None:
        """Step the drivers of ``parts`` and make what they produced durable, all together."""
        if halted():
            return
        try:
            await _step(parts)
        except BaseException as exc:
            checkpoint.breaks(exc)  # states changed in place, their outputs unsent: nothing more written
            if not isinstance(exc, asyncio.CancelledError):
                log.error("a step failed half-way (%r): stopping; nothing more is written or acked", exc)
                await app.crash(exc)  # the worker exits; its restart recovers from the changelog
            raise

    async def _step(parts: list[int]) -> None:
        done: list[tuple[int, Output, StateStore]] = []
        for q in [q for q in cut if (d := drivers.get(q)) is None or not d.paused]:
            del cut[q]  # done, or dropped at a revocation
        for p in parts:
            driver = drivers.get(p)
            if driver is None:
                continue
            if p in cut and next(iter(cut)) != p:
                continue  # another partition's due work goes first
            started = time.perf_counter()
            evaluations = driver.stats.evaluations
            out = driver.step(highwaters(p), time.time())
            n = driver.stats.evaluations - evaluations
            if n:  # the step's evaluation time, per evaluation (the driver reads no clock)
                metrics.evaluation_seconds.observe((time.perf_counter() - started) / n)
            if out:
                done.append((p, out, driver.store))
            if driver.paused and p not in cut:
                cut[p] = None
                cut_waiting.set()
                log.info(
                    "partition %s: more is due than one step runs; going on in steps of %d", p, s.step_budget
                )
            elif not driver.paused:
                cut.pop(p, None)
            if n or driver.paused:
                # At most a step budget of work per partition, then the loop's other tasks get a
                # turn (the lock stays held: only our own drivers wait).
                await asyncio.sleep(0)
        if done:
            await make_durable(done)
            for p, _, _ in done:
                driver = drivers.get(p)
                if driver is not None:
                    export_counts(p, driver)
        stepped.notify_all()

    @app.task
    async def run_cut() -> None:
        """Step the first cut partition again as soon as the loop has had a turn, the lock released
        between steps so heartbeats, commits, the web endpoints and the other partitions' ticks run.
        A live worker's midnight comes from the tick (the wall clock): stepped only there, the
        worker was idle for a tick between steps."""
        while True:
            await cut_waiting.wait()
            while cut and not halted():
                await asyncio.sleep(0)
                async with lock:
                    await step(list(cut)[:1])
            cut_waiting.clear()  # (no await since ``cut`` emptied: nothing was cut meanwhile)

    def export_counts(p: int, driver: PartitionDriver) -> None:
        """The driver's counters only grow; Prometheus gets what each grew by since the last step."""
        st = driver.stats

        def grown(key: tuple[str, object], n: int) -> int:
            full = (id(driver), *key)
            before, exported[full] = exported.get(full, 0), n
            return n - before

        for (topic, type_), n in st.by_type.items():
            if d := grown(("e", (topic, type_)), n):
                metrics.event(topic, type_, d)
        for what in ("redelivered", "late", "forced_releases", "evaluation_errors", "gaps", "paused_steps"):
            if d := grown(("x", what), getattr(st, what)):
                metrics.engine.labels(what=what).inc(d)
        for reason, n in st.dead_by_reason.items():
            if d := grown(("d", reason), n):
                metrics.dead_letters.labels(reason=reason).inc(d)

    def uncut(parts: set[int]) -> bool:
        """None of ``parts`` has a driver stopped at its step budget (a dropped one does not count)."""
        return not any((d := drivers.get(p)) is not None and d.paused for p in parts)

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):  # type: ignore[attr-defined]  # on Stream, not in StreamT
            touched: set[int] = set()
            for event in batch:
                event.message.incref()  # acked by us once its effect is durable, not by take_events
            async with lock:
                now = time.time()
                for event in batch:
                    if not current(event):
                        # fetched before a rebalance: the seek delivers it again, in order
                        log.info(
                            "skipped %s[%s]@%s of an earlier generation",
                            event.message.topic,
                            event.message.partition,
                            event.message.offset,
                        )
                        continue
                    p = event.message.partition
                    driver = drivers.get(p) or await ensure_driver(p)
                    if driver is None:
                        waiting.setdefault(p, []).append(event)
                        continue
                    driver.offer(to_record(event), now)
                    touched.add(p)
                for p in touched:
                    driver = drivers.get(p)
                    if driver is not None and driver.gaps:
                        await reread(p, driver)
                await step(sorted(touched))
                # A partition that stopped at its step budget (a midnight: every account due) goes
                # on in steps (:func:`run_cut`); this agent reads no more input until it is done,
                # a backpressure. The wait releases the lock.
                await stepped.wait_for(functools.partial(uncut, touched))

    pipeline.agents["ingest"] = ingest

    #: Set when a rebalance has completed with every table partition recovered; cleared when the
    #: next one starts. No driver exists while it is clear.
    recovered = asyncio.Event()
    recovered_generation = 0

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]
    async def on_rebalance_complete(app: faust.App, **kwargs: Any) -> None:
        nonlocal recovered_generation
        recovered_generation += 1
        recovered.set()
        metrics.set_state("running")
        mine = assigned()
        for p in [p for p in waiting if p not in mine]:
            del waiting[p]

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]
    async def on_revoked(app: faust.App, revoked: set[TP], **kwargs: Any) -> None:
        """Drop the drivers of every partition we may lose, once the step in flight is durable:
        the states a driver changes live in the table, so a step must never stop half-way."""
        nonlocal recovered_generation
        recovered.clear()
        recovered_generation += 1
        metrics.set_state("recovering")
        async with lock:
            await write_states()  # what the drivers changed is in the changelog before they go
            for tp in revoked:
                if tp.topic in kinds:
                    drivers.pop(tp.partition, None)
                    waiting.pop(tp.partition, None)
                    for k in range(len(names)):
                        end_offsets.pop((k, tp.partition), None)
                        rereads.pop((tp.partition, k), None)
                    ends_read_at.pop(tp.partition, None)
            live = {id(d) for d in drivers.values()}
            for key in [k for k in exported if k[0] not in live]:
                del exported[key]  # counters of dropped drivers
            stepped.notify_all()  # an ingest batch waiting for a dropped partition goes on

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
            parts = []
            for p in sorted(assigned()):
                driver = drivers.get(p) or await ensure_driver(p)
                if driver is not None:
                    await reread(p, driver)
                    parts.append(p)
            await step(parts)
            await write_states_when_due()  # a quiet stream's held states too

    @app.timer(1.0)
    async def read_ends() -> None:
        """Every second, the end offsets of the partitions we drive (see ``highwaters``)."""
        mine = list(drivers)
        if not mine:
            return
        tps = [TopicPartition(name, p) for p in mine for name in names]
        try:
            c = await offsets_client()
            ends = await asyncio.wait_for(c.end_offsets(tps), timeout=5)
        except Exception as exc:
            log.warning("could not read the input topics' end offsets: %r", exc)
            return
        now = time.monotonic()
        for tp in tps:
            end_offsets[(kinds[tp.topic], tp.partition)] = ends[tp]
        for p in mine:
            ends_read_at[p] = now

    last_seen: dict[int, tuple[int, int]] = {}

    @app.timer(10.0)
    async def gauges() -> None:
        """Consumer lag and accounts per band (from each driver's bands: never a walk over the table,
        which with RocksDB decoded every state every 10 s: the likely cause of loop stalls at 300k)."""
        mine = assigned()
        for p in mine:
            for k, name in enumerate(names):
                hw = app.consumer.highwater(TP(name, p))
                driver = drivers.get(p)
                pos = driver.position[k] if driver is not None else None
                if hw is not None and pos is not None:
                    metrics.consumer_lag.labels(topic=name, partition=str(p)).set(max(0, hw - pos))
        for p, driver in list(drivers.items()):
            st = driver.stats
            if st.late or st.forced_releases:
                log.info(
                    "partition %s: %d late records, %d forced releases so far", p, st.late, st.forced_releases
                )
            moved = (driver.clock_ms, driver.stats.processed)
            if driver.buffered and last_seen.get(p) == moved:
                log.warning("partition %s has not moved for 10 s: %s", p, driver.describe(highwaters(p)))
            last_seen[p] = moved
        bands = dict.fromkeys(("red", "yellow", "green", "none"), 0)
        for p, driver in list(drivers.items()):
            if p in mine:
                for band in driver.bands.values():
                    bands[band if band in bands else "none"] += 1
        for band, n in bands.items():
            metrics.accounts.labels(band=band).set(n)

    @app.task
    async def loop_lag() -> None:
        """How long the event loop was held: a step, a decode pass, anything. Logged past a second."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(0.25)
            lag = loop.time() - started - 0.25
            metrics.loop_lag.observe(lag)
            if lag >= 1.0:
                log.warning("event loop was blocked for %.1f s", lag)

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
