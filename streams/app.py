"""The Faust app: topics, the ``accounts`` table and the agents.

Agents are thin glue: validation lives in :mod:`streams.events`, state changes in
:mod:`streams.aggregate`, metrics and score in :mod:`streams.metrics` / :mod:`streams.scoring`, and
what is published in :mod:`streams.snapshot`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import EventT

from . import codecs as _codecs  # noqa: F401  (registers the state codec)
from .aggregate import apply_event
from .codecs import STATE_CODEC
from .events import InvalidEvent, parse_event
from .readmodel import write_with_retry
from .scoring import ScoringConfig, load_scoring
from .settings import Settings, get_settings
from .snapshot import assess, remember
from .state import AccountState

log = logging.getLogger("healthmon.ingest")


@dataclass
class Pipeline:
    """The app and its parts, so tests and the CLI can reach each one."""

    settings: Settings
    scoring: ScoringConfig
    app: faust.App
    inputs: Any
    health: Any
    changes: Any
    deadletter: Any
    accounts: Any
    agents: dict[str, Any] = field(default_factory=dict)
    #: Highest event time seen per input partition: the engine's event-time clock.
    watermarks: dict[int, int] = field(default_factory=dict)


def dead_letter_headers(event: EventT, reason: str, now: float) -> list[tuple[str, bytes]]:
    msg = event.message
    return [
        ("healthmon.reason", reason.encode()),
        ("healthmon.topic", msg.topic.encode()),
        ("healthmon.partition", str(msg.partition).encode()),
        ("healthmon.offset", str(msg.offset).encode()),
        ("healthmon.failed_at", str(int(now)).encode()),
    ]


def create_app(settings: Settings | None = None, scoring: ScoringConfig | None = None) -> Pipeline:
    s = settings or get_settings()
    scoring = scoring or load_scoring(s.scorecard)  # a bad scorecard fails here, before any consuming
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
    deadletter = app.topic(s.topic("deadletter"), **raw)
    accounts = app.Table("accounts", partitions=s.partitions, key_type=str)
    # Collection derives both serializers from the types ("json"). Set ours, and drop the changelog
    # topic made with the old ones so that it is made again (lazily) with these.
    accounts.key_serializer = "raw"
    accounts.value_serializer = STATE_CODEC
    accounts._changelog_topic = None
    key_features = frozenset(scoring.metrics.key_features)
    pipeline = Pipeline(s, scoring, app, inputs, health, changes, deadletter, accounts)

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

    async def publish(state: AccountState, partition: int) -> None:
        as_of = max(pipeline.watermarks.get(partition, 0), state.last_event_at or 0)
        snapshot, change = assess(state, as_of, scoring)
        remember(state, snapshot, change)
        write_state(partition, state)
        key = state.account_id.encode()
        await health.send(key=key, value=snapshot.model_dump_json().encode())
        if change is not None:
            await changes.send(key=key, value=change.model_dump_json().encode())

    @app.agent(inputs, name="ingest")
    async def ingest(stream: faust.StreamT) -> None:
        async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):
            touched: dict[str, tuple[AccountState, int]] = {}
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
                    await send_dead_letter(
                        event, f"occurred_at: {ev.occurred_at.isoformat()} is in the future"
                    )
                    continue
                hit = touched.get(ev.account_id)
                state = hit[0] if hit else accounts.data.get(ev.account_id)
                if state is None:
                    state = AccountState(account_id=ev.account_id)
                try:
                    changed = apply_event(state, ev, key_features=key_features, dedupe_window=s.dedupe_window)
                except Exception as exc:  # a bug must cost one event, never the worker
                    log.exception("failed to apply event %s", ev.event_id)
                    await send_dead_letter(event, f"internal error: {exc!r}")
                    continue
                if changed:
                    touched[ev.account_id] = (state, msg.partition)
                    if ts > pipeline.watermarks.get(msg.partition, 0):
                        pipeline.watermarks[msg.partition] = ts
            for state, partition in touched.values():
                try:
                    await publish(state, partition)
                except Exception:  # the state is already folded in; the next event republishes
                    log.exception("failed to publish the snapshot of %s", state.account_id)

    pipeline.agents["ingest"] = ingest

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
