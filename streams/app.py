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
from faust.types import EventT

from rules.engine import DEFAULT_RULES, RuleSet, load_rules, rule_files

from . import codecs as _codecs  # noqa: F401  (registers the state codec)
from .codecs import STATE_CODEC
from .config import ConfigError
from .engine import Engine, Evaluation
from .events import InvalidEvent, parse_event
from .readmodel import write_with_retry
from .scoring import ScoringConfig, load_scoring
from .settings import Settings, get_settings
from .state import AccountState

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
        web_enabled=s.web_enabled,
        web_port=s.web_port,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        # One slow batch must not get the worker kicked out of the group.
        broker_max_poll_interval=300.0,
    )
    kind_of = {s.topic(kind): kind for kind in ("accounts", "usage", "tickets", "billing", "surveys")}
    raw = {"key_type": bytes, "value_type": bytes}
    inputs = app.topic(*s.input_topics, partitions=s.partitions, allow_empty=True, **raw)
    health = app.topic(s.topic("health"), partitions=s.partitions, allow_empty=True, **raw)
    changes = app.topic(s.topic("health_changes"), partitions=s.partitions, **raw)
    alerts = app.topic(s.topic("alerts"), partitions=s.partitions, **raw)
    deadletter = app.topic(s.topic("deadletter"), **raw)

    accounts = app.Table("accounts", partitions=s.partitions, key_type=str)
    # Collection derives both serializers from the types ("json"). Set ours, and drop the changelog
    # topic made with the old ones so that it is made again (lazily) with these.
    accounts.key_serializer = "raw"
    accounts.value_serializer = STATE_CODEC
    accounts._changelog_topic = None
    #: Engine time per input partition, so a restart does not start the clock from zero.
    clocks = app.Table("clocks", partitions=s.partitions, key_type=str, value_type=int)
    pipeline = Pipeline(
        s,
        engine,
        app,
        {"inputs": inputs, "health": health, "changes": changes, "alerts": alerts, "deadletter": deadletter},
        accounts,
        clocks,
    )
    lock = asyncio.Lock()  # the ingest batch and the clock timer take turns on the states

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

    async def publish(state: AccountState, partition: int, as_of: int) -> None:
        try:
            result: Evaluation = engine.evaluate(state, as_of)
        except Exception:  # the event is folded in; a scoring bug must not stop the worker
            log.exception("failed to evaluate %s", state.account_id)
            return
        write_state(partition, state)
        key = state.account_id.encode()
        await health.send(key=key, value=result.snapshot.model_dump_json().encode())
        if result.change is not None:
            await changes.send(key=key, value=result.change.model_dump_json().encode())
        for alert in result.alerts:
            await alerts.send(key=key, value=alert.model_dump_json().encode())

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
        value = engine.clock(partition)
        if clocks.data.get(key) != value:
            clocks.data[key] = value
            clocks.send_changelog(partition, key, value)

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):
            async with lock:
                await process(batch)

    async def process(batch: list[EventT]) -> None:
        pending: dict[str, tuple[AccountState, int, int]] = {}
        partitions: set[int] = set()
        horizon = time.time() + s.max_future_skew_s
        for event in batch:
            msg = event.message
            try:
                ev = parse_event(msg.value, msg.key, kind_of.get(msg.topic))
            except InvalidEvent as exc:
                await send_dead_letter(event, exc.reason)
                continue
            ts = int(ev.occurred_at.timestamp())
            if ts > horizon:
                await send_dead_letter(event, f"occurred_at: {ev.occurred_at.isoformat()} is in the future")
                continue
            p = msg.partition
            partitions.add(p)
            if ts > engine.clock(p):
                await run_due(p, ts, pending)
                engine.advance(p, ts)
            hit = pending.get(ev.account_id)
            state = hit[0] if hit else accounts.data.get(ev.account_id)
            if state is None:
                state = AccountState(account_id=ev.account_id)
            try:
                changed = engine.apply(state, ev, p)
            except Exception as exc:  # a bug must cost one event, never the worker
                log.exception("failed to apply event %s", ev.event_id)
                await send_dead_letter(event, f"internal error: {exc!r}")
                continue
            if changed:
                pending[ev.account_id] = (state, p, engine.clock(p))
        for state, p, as_of in pending.values():
            await publish(state, p, as_of)
        for p in partitions:
            save_clock(p)

    pipeline.agents["ingest"] = ingest

    def assigned() -> set[int]:
        return {tp.partition for tp in app.consumer.assignment() if tp.topic in kind_of}

    async def on_recovered() -> None:
        """A rebalance moved partitions: load their clocks and rebuild their due schedules."""
        async with lock:
            mine = assigned()
            for key, value in clocks.data.items():
                if int(key) in mine:
                    engine.advance(int(key), int(value))
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
        if s.clock != "live":
            return
        now = int(time.time())
        async with lock:
            for p in assigned():
                await run_due(p, now, {})
                engine.advance(p, now)
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
