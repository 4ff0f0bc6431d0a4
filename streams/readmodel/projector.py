"""The Redis read model for dashboards and ``healthmon serve``, written from ``cs.health`` and ``cs.alerts``
by ``healthmon readmodel`` (or by an agent inside the worker when ``HEALTHMON_READMODEL_ENABLED`` is
true, for one-process setups: that agent writes the per-account keys only).

Key layout (``{p}`` is ``HEALTHMON_REDIS_PREFIX``, default ``healthmon:``):

- ``{p}account:{account_id}``  hash: score, band, confidence, as_of, name, segment, csm, csm_name,
  mrr, canceled, days_to_renewal, renewal_date, snapshot (the whole snapshot JSON), set_aside (the
  measures the information check set aside for the account's card: a JSON list)
- ``{p}accounts``              set of every account_id
- ``{p}scores``                sorted set: account_id by score (accounts without a score are absent)
- ``{p}band:{red|yellow|green}``  set of account_ids
- ``{p}csm:{csm_email}``       set of account_ids the CSM owns
- ``{p}segment:{segment}``     set of account_ids
- ``{p}history:{account_id}``  sorted set by UTC day number: one JSON per day (the day's last snapshot:
  score, band, mrr, days to renewal, adoption, days since login, open tickets, NPS, CSAT),
  ``HEALTHMON_HISTORY_DAYS`` kept
- ``{p}scoreline:{account_id}``  sorted set by UTC day number: ``day|score|band|canceled`` (~20 bytes a
  day) for the live score accuracy (streams.core.accuracy), ``HEALTHMON_ACCURACY_WINDOW_DAYS`` + 60 kept
- ``{p}months:{account_id}``   hash month -> the month's last snapshot, trimmed to what the portfolio needs
- ``{p}portfolio:{period}``    hash group -> portfolio figures JSON (as on ``cs.portfolio``)
- ``{p}portfolio:periods``     sorted set of the periods present (all scores 0: lexicographic)
- ``{p}portfolio:cohorts``     the cohort table (JSON list, streams.core.portfolio.cohorts)
- ``{p}portfolio:cohorts:segments``  segment -> that segment's cohort table (JSON list)
- ``{p}alerts``                list, newest first (1,000): alert events; ``{p}alerts:{account_id}`` (100)
- ``{p}alerts:firing``         hash alert_id -> the firing event, removed when it resolves
- ``{p}comments:{account_id}`` sorted set by answer time: the latest NPS and CSAT answers with a comment
  (from ``cs.surveys`` and ``cs.tickets``; the engine keeps scores, not words), ``COMMENTS_PER_ACCOUNT``
  kept
- ``{p}readmodel:built``       set once the read model holds everything on the topics (see rebuild)
- channel ``{p}updates``       a JSON note per written batch: {"accounts": [...], "periods": [...]}
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.broker import clients as kafka_clients
from streams.core.accuracy import HORIZONS, line_member
from streams.core.events import Csat, Nps
from streams.core.portfolio import PortfolioBook, affected_periods, cohorts, point_from_snapshot, segments
from streams.settings import Settings

log = logging.getLogger("healthmon.readmodel")
_INDEXED = ("band", "csm", "segment")
DAY_S = 86400
ALERTS_FEED = 1000
ALERTS_PER_ACCOUNT = 100
COMMENTS_PER_ACCOUNT = 5
_COMMENTED: dict[str, type[Nps] | type[Csat]] = {"nps": Nps, "csat": Csat}
#: Families of keys the read model owns (``--rebuild`` deletes these and nothing else: silences and the
#: delivery log under the same prefix are left alone).
OWNED_PATTERNS = (
    "account:*",
    "accounts",
    "scores",
    "band:*",
    "csm:*",
    "segment:*",
    "history:*",
    "scoreline:*",
    "months:*",
    "portfolio:*",
    "alerts",
    "alerts:*",
    "comments:*",
    "readmodel:built",
)
_HISTORY_METRICS = (
    "mrr",
    "canceled",
    "days_to_renewal",  # renewals in a task's outcome (streams.tasks.outcomes)
    "adoption_rate",
    "days_since_last_login",
    "open_tickets",
    "nps",
    "csat_90d",
    "active_users_30d",
    "dau_mau",
    "feature_breadth",
)
_MONTH_METRICS = (
    "mrr",
    "canceled",
    "nps",
    "nps_responses",
    "csat_90d",
    "csat_responses_90d",
    "ces_mean_90d",
    "ces_responses_90d",
    "days_to_renewal",
    "unpaid_invoices",
    "adoption_rate",
    "dau_mau",
    "active_users_30d",
    "ttfv_days",
    "first_response_hours_30d",
    "onboarded",
    "onboarding_days",
)


def _index_values(snap: dict) -> dict[str, str | None]:
    acc = snap.get("account") or {}
    return {"band": snap.get("band"), "csm": acc.get("csm_email"), "segment": acc.get("segment")}


def _as_of(snap: dict) -> datetime:
    return datetime.fromisoformat(str(snap["as_of"]).replace("Z", "+00:00"))


def history_entry(snap: dict) -> dict:
    m = snap.get("metrics") or {}
    when = _as_of(snap)
    return {
        "day": when.date().isoformat(),
        "as_of": snap["as_of"],
        "score": snap.get("score"),
        "band": snap.get("band"),
        **{k: m.get(k) for k in _HISTORY_METRICS},
    }


def month_entry(snap: dict) -> dict:
    """The part of a snapshot :func:`streams.portfolio.point_from_snapshot` reads."""
    m = snap.get("metrics") or {}
    return {
        "account_id": snap["account_id"],
        "as_of": snap["as_of"],
        "account": snap.get("account") or {},
        "score": snap.get("score"),
        "band": snap.get("band"),
        "last_band": snap.get("last_band"),  # a cancelled account's churn by band
        "drivers": [{"text": d.get("text", "")} for d in (snap.get("drivers") or [])[:3]],
        "metrics": {k: m.get(k) for k in _MONTH_METRICS},
    }


def parse_snapshots(raw: Sequence[bytes]) -> list[dict]:
    out = []
    for value in raw:
        try:
            snap = orjson.loads(value)
            str(snap["account_id"])
            _as_of(snap)
            out.append(snap)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            log.warning("skipping a message on the health topic that is not a snapshot: %.200r", value)
    return out


async def write_snapshots(
    redis: Redis,
    prefix: str,
    raw: Sequence[bytes],
    history_days: int | None = None,
    accuracy_days: int | None = None,
) -> list[dict]:
    """Write the latest snapshot per account of ``raw`` (and, with ``history_days``, each day's and each
    month's last one; with ``accuracy_days``, the score line of the accuracy window); one read and one
    transaction per batch. Returns the snapshots it read."""
    snaps = parse_snapshots(raw)
    latest: dict[str, dict] = {}
    for snap in snaps:
        latest[str(snap["account_id"])] = snap
    if not latest:
        return snaps
    ids = list(latest)
    async with redis.pipeline(transaction=False) as pipe:
        for aid in ids:
            pipe.hmget(f"{prefix}account:{aid}", [*_INDEXED, "as_of"])
        old_rows = await pipe.execute()
    async with redis.pipeline(transaction=True) as pipe:
        for aid, old in zip(ids, old_rows, strict=True):
            snap = latest[aid]
            old_as_of = old[-1].decode() if old[-1] else ""
            if old_as_of and datetime.fromisoformat(old_as_of.replace("Z", "+00:00")) > _as_of(snap):
                continue  # a replay of older snapshots (rebuild, redelivery) never overwrites newer ones
            new = _index_values(snap)
            for field, before in zip(_INDEXED, old, strict=False):
                before = before.decode() if isinstance(before, bytes) else before
                if before and before != new[field]:
                    pipe.srem(f"{prefix}{field}:{before}", aid)
                if new[field]:
                    pipe.sadd(f"{prefix}{field}:{new[field]}", aid)
            acc = snap.get("account") or {}
            metrics = snap.get("metrics") or {}
            days = metrics.get("days_to_renewal")
            renewal = "" if days is None else (_as_of(snap).date() + timedelta(days=int(days))).isoformat()
            fields = {
                "score": "" if snap.get("score") is None else str(snap["score"]),
                "band": snap.get("band") or "",
                "confidence": str(snap.get("confidence", "")),
                "as_of": snap.get("as_of", ""),
                "name": acc.get("name") or "",
                "segment": acc.get("segment") or "",
                "csm": acc.get("csm_email") or "",
                "csm_name": acc.get("csm_name") or "",
                "mrr": str(metrics.get("mrr") or ""),
                "canceled": "1" if metrics.get("canceled") else "0",
                "days_to_renewal": "" if days is None else str(days),
                "renewal_date": renewal,
                "snapshot": orjson.dumps(snap),
                # what the information check set aside for this account's card (the dashboard's list)
                "set_aside": orjson.dumps(
                    [{"scorecard": snap.get("scorecard"), **a} for a in snap.get("set_aside") or []]
                ),
            }
            pipe.hset(f"{prefix}account:{aid}", mapping=fields)
            pipe.sadd(f"{prefix}accounts", aid)
            if snap.get("score") is None:
                pipe.zrem(f"{prefix}scores", aid)
            else:
                pipe.zadd(f"{prefix}scores", {aid: float(snap["score"])})
        if history_days is not None:
            _write_history(pipe, prefix, snaps, history_days, accuracy_days)
        await pipe.execute()
    return snaps


def _write_history(
    pipe, prefix: str, snaps: list[dict], history_days: int, accuracy_days: int | None = None
) -> None:
    days: dict[tuple[str, int], dict] = {}
    months: dict[tuple[str, str], dict] = {}
    for snap in snaps:  # the batch's last snapshot of each day and month per account (in order)
        when = _as_of(snap)
        aid = str(snap["account_id"])
        day = int(when.timestamp()) // DAY_S
        if (aid, day) not in days or _as_of(days[aid, day]) <= when:
            days[aid, day] = snap
        month = f"{when.year:04d}-{when.month:02d}"
        if (aid, month) not in months or _as_of(months[aid, month]) <= when:
            months[aid, month] = snap
    newest: dict[str, int] = {}
    for (aid, day), snap in days.items():
        key = f"{prefix}history:{aid}"
        pipe.zremrangebyscore(key, day, day)  # one entry per day: the day's latest snapshot
        pipe.zadd(key, {orjson.dumps(history_entry(snap)): day})
        newest[aid] = max(day, newest.get(aid, day))
    for aid, day in newest.items():
        pipe.zremrangebyscore(f"{prefix}history:{aid}", "-inf", f"({day - history_days}")
    if accuracy_days is not None:  # the cancellations of the window, scored up to 60 days before
        keep = accuracy_days + max(HORIZONS)
        for (aid, day), snap in days.items():
            key = f"{prefix}scoreline:{aid}"
            canceled = bool((snap.get("metrics") or {}).get("canceled"))
            pipe.zremrangebyscore(key, day, day)
            pipe.zadd(key, {line_member(day, snap.get("score"), snap.get("band"), canceled): day})
        for aid, day in newest.items():
            pipe.zremrangebyscore(f"{prefix}scoreline:{aid}", "-inf", f"({day - keep}")
    for (aid, month), snap in months.items():
        pipe.hset(f"{prefix}months:{aid}", month, orjson.dumps(month_entry(snap)).decode())


async def read_history(redis: Redis, prefix: str, account_id: str, days: int | None = None) -> list[dict]:
    """The account's daily entries, oldest first (the last ``days`` of them if given)."""
    start = 0 if not days else -days
    return [orjson.loads(raw) for raw in await redis.zrange(f"{prefix}history:{account_id}", start, -1)]


async def write_alerts(redis: Redis, prefix: str, raw: Sequence[bytes]) -> list[str]:
    """Alert events into the feed, the account's list and the firing set; returns their accounts."""
    accounts = []
    async with redis.pipeline(transaction=True) as pipe:
        for value in raw:
            try:
                alert = orjson.loads(value)
                aid, alert_id, status = alert["account_id"], alert["alert_id"], alert["status"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                log.warning("skipping a message on the alerts topic that is not an alert: %.200r", value)
                continue
            pipe.lpush(f"{prefix}alerts", value)
            pipe.lpush(f"{prefix}alerts:{aid}", value)
            pipe.ltrim(f"{prefix}alerts:{aid}", 0, ALERTS_PER_ACCOUNT - 1)
            if status == "firing":
                pipe.hset(f"{prefix}alerts:firing", alert_id, value.decode())
            else:
                pipe.hdel(f"{prefix}alerts:firing", alert_id)
            accounts.append(str(aid))
        pipe.ltrim(f"{prefix}alerts", 0, ALERTS_FEED - 1)
        await pipe.execute()
    return accounts


def comment_entry(value: bytes) -> tuple[str, float, dict] | None:
    """An NPS or CSAT answer with a comment as (account, answered at, entry); None for anything else on
    the surveys and tickets topics (other events, and invalid ones, which the worker dead-letters)."""
    if b'"comment"' not in value:  # nearly every event: no JSON parse
        return None
    try:
        raw = orjson.loads(value)
        model = _COMMENTED.get(str(raw.get("type"))) if isinstance(raw, dict) else None
        event = model.model_validate(raw) if model is not None else None
    except (orjson.JSONDecodeError, ValueError):
        return None
    if event is None or not event.comment:
        return None
    at = event.occurred_at
    entry: dict[str, Any] = {"kind": event.type, "score": event.score, "comment": event.comment}
    entry.update(at=at.isoformat(), user_id=getattr(event, "user_id", None))
    return event.account_id, at.timestamp(), entry


async def write_comments(redis: Redis, prefix: str, raw: Sequence[bytes]) -> list[str]:
    """Survey comments into the account's latest few; a re-read (restart, rebuild) writes the same
    members again, so nothing is doubled. Returns their accounts."""
    accounts = []
    async with redis.pipeline(transaction=True) as pipe:
        for value in raw:
            found = comment_entry(value)
            if found is None:
                continue
            aid, at, entry = found
            key = f"{prefix}comments:{aid}"
            pipe.zadd(key, {orjson.dumps(entry, option=orjson.OPT_SORT_KEYS): at})
            pipe.zremrangebyrank(key, 0, -COMMENTS_PER_ACCOUNT - 1)
            accounts.append(aid)
        await pipe.execute()
    return accounts


async def read_comments(redis: Redis, prefix: str, account_id: str) -> list[dict]:
    """The account's latest comments, newest first."""
    return [orjson.loads(x) for x in await redis.zrevrange(f"{prefix}comments:{account_id}", 0, -1)]


async def write_with_retry(redis: Redis, prefix: str, raw: Sequence[bytes], max_delay: float = 10.0) -> None:
    """Keep trying while Redis is away: the batch is acknowledged only once it is written."""
    await _retry(write_snapshots, redis, prefix, raw, max_delay=max_delay)


async def _retry(fn, *args, max_delay: float = 10.0):
    delay = 0.1
    while True:
        try:
            return await fn(*args)
        except (RedisError, OSError) as exc:
            log.warning("redis write failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)


async def is_empty(redis: Redis, prefix: str) -> bool:
    return not await redis.exists(f"{prefix}readmodel:built")


async def clear(redis: Redis, prefix: str) -> int:
    """Delete every key the read model owns under ``prefix`` (silences and delivery state stay)."""
    n = 0
    for pattern in OWNED_PATTERNS:
        batch = [key async for key in redis.scan_iter(match=f"{prefix}{pattern}", count=1000)]
        for i in range(0, len(batch), 500):
            n += await redis.delete(*batch[i : i + 500])
    return n


async def load_book(redis: Redis, prefix: str) -> PortfolioBook:
    """The portfolio's month-end points back from Redis (a restart does not re-read the topic)."""
    book = PortfolioBook()
    async for key in redis.scan_iter(match=f"{prefix}months:*", count=1000):
        aid = key.decode()[len(prefix) + len("months:") :]
        for raw in (await redis.hgetall(key)).values():
            book.apply(aid, point_from_snapshot(orjson.loads(raw)))
    return book


class _SeekToStart(ConsumerRebalanceListener):
    """While rebuilding, every partition assigned is read from its beginning (committed offsets ignored)."""

    def __init__(self, worker: ReadModelWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked) -> None:
        pass

    async def on_partitions_assigned(self, assigned) -> None:
        consumer = self.worker.consumer
        if self.worker.rebuilding and assigned and consumer is not None:
            await consumer.seek_to_beginning(*assigned)
            self.worker.rebuild_targets = await consumer.end_offsets(list(assigned))


class ReadModelWorker:
    """``healthmon readmodel``: cs.health, cs.alerts and the comments of
    cs.surveys and cs.tickets -> Redis, and portfolio figures -> cs.portfolio
    and Redis, in a process of its own (consumer group ``{app_id}-readmodel``), so the read model's
    parsing and Redis round trips never take CPU from scoring. Offsets are committed after the batch is
    in Redis: a restart re-writes, never skips. When Redis holds no read model (a new or flushed Redis,
    or ``rebuild=True`` which first deletes it) it is rebuilt from the beginning of the topics: cs.health
    is compacted, so that is every account's latest snapshot plus whatever compaction has not merged yet."""

    def __init__(self, settings: Settings, batch: int = 500, rebuild: bool = False) -> None:
        self.settings = settings
        self.batch = batch
        self.force_rebuild = rebuild
        self.stopping = asyncio.Event()
        self.rebuilding = False
        self.rebuild_targets: dict[TopicPartition, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.book = PortfolioBook()
        self.dirty_months: set[str] = set()
        self.published: dict[tuple[str, str], bytes] = {}
        self.published_cohorts = b""  # the cohort table last written to Redis
        self.last_compute = 0.0
        self.compute_seconds = 0.0  # the last portfolio pass, for logs and the benchmark
        #: How often a running read model checks that Redis still holds it (a restarted Redis without
        #: persistence comes back empty: the read model then rebuilds itself from the topics).
        self.empty_check_s = 5.0
        self.last_empty_check = time.monotonic()

    async def run(self) -> None:
        s = self.settings
        p = s.redis_prefix
        redis = Redis.from_url(s.redis_url)
        if self.force_rebuild:
            n = await _retry(clear, redis, p)
            log.info("rebuild: deleted %d read model keys under %r", n, p)
        self.rebuilding = await _retry(is_empty, redis, p)
        if self.rebuilding:
            # whatever is left without the marker (an interrupted rebuild) is replaced, not appended to
            await _retry(clear, redis, p)
            log.info("read model empty: rebuilding from the beginning of %s", s.topic("health"))
        else:
            self.book = await _retry(load_book, redis, p)
        self.consumer = consumer = kafka_clients.consumer(
            s,
            group_id=f"{s.app_id}-readmodel",
            client_id=f"{s.app_id}-readmodel",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        producer = kafka_clients.producer(
            s,
            client_id=f"{s.app_id}-portfolio",
            compression_type=s.compression_type,
            acks="all",
        )
        health, alerts = s.topic("health"), s.topic("alerts")
        answers = {s.topic("surveys"), s.topic("tickets")}  # NPS and CSAT comments
        consumer.subscribe([health, alerts, *sorted(answers)], listener=_SeekToStart(self))
        await consumer.start()
        await producer.start()
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                snaps_raw = [r.value for tp, rs in batch.items() if tp.topic == health for r in rs if r.value]
                alerts_raw = [
                    r.value for tp, rs in batch.items() if tp.topic == alerts for r in rs if r.value
                ]
                answers_raw = [
                    r.value for tp, rs in batch.items() if tp.topic in answers for r in rs if r.value
                ]
                accounts: list[str] = []
                if snaps_raw:
                    snaps = await _retry(
                        write_snapshots, redis, p, snaps_raw, s.history_days, s.accuracy_window_days
                    )
                    for snap in snaps:
                        month = self.book.apply(str(snap["account_id"]), point_from_snapshot(snap))
                        if month is not None:
                            self.dirty_months.add(month)
                    accounts += sorted({str(snap["account_id"]) for snap in snaps})
                if alerts_raw:
                    accounts += await _retry(write_alerts, redis, p, alerts_raw)
                if answers_raw:
                    accounts += await _retry(write_comments, redis, p, answers_raw)
                periods: list[str] = []
                if self.dirty_months and time.monotonic() - self.last_compute >= self.compute_interval():
                    periods = await self.publish_portfolio(redis, producer)
                if accounts or periods:
                    note = orjson.dumps({"accounts": sorted(set(accounts)), "periods": periods})
                    await _retry(redis.publish, f"{p}updates", note)
                if batch:
                    await consumer.commit()
                if not self.rebuilding and time.monotonic() - self.last_empty_check >= self.empty_check_s:
                    self.last_empty_check = time.monotonic()
                    if await _retry(is_empty, redis, p):
                        await self._restart_rebuild(redis)
                if self.rebuilding and await self._caught_up():
                    await self.publish_portfolio(redis, producer)
                    await _retry(redis.set, f"{p}readmodel:built", datetime.now(UTC).isoformat())
                    self.rebuilding = False
                    log.info("rebuild done: %d accounts", len(self.book.accounts))
        finally:
            await consumer.stop()
            await producer.stop()
            await redis.aclose()

    async def _restart_rebuild(self, redis: Redis) -> None:
        """Redis lost the read model while this process ran: forget it and read the topics again."""
        consumer = self.consumer
        assert consumer is not None
        log.warning("the read model is gone from Redis (restarted or flushed?): rebuilding from the topics")
        self.book = PortfolioBook()
        self.published.clear()
        self.published_cohorts = b""
        self.dirty_months.clear()
        self.rebuilding = True
        await _retry(clear, redis, self.settings.redis_prefix)  # what was written since it came back
        assigned = list(consumer.assignment())
        if assigned:
            await consumer.seek_to_beginning(*assigned)
            self.rebuild_targets = await consumer.end_offsets(assigned)
        else:
            self.rebuild_targets = {}

    def compute_interval(self) -> float:
        """The configured interval, stretched so that portfolio passes take at most a fifth of the time
        (a pass over 10,000 accounts costs ~0.15-0.3 s per period on a laptop core)."""
        return max(self.settings.portfolio_interval_s, 5 * self.compute_seconds)

    async def _caught_up(self) -> bool:
        consumer = self.consumer
        assert consumer is not None
        assigned = consumer.assignment()
        if not assigned:
            return False
        if not self.rebuild_targets:
            self.rebuild_targets = await consumer.end_offsets(list(assigned))
        for tp in assigned:
            if await consumer.position(tp) < self.rebuild_targets.get(tp, 0):
                return False
        return True

    async def publish_portfolio(self, redis: Redis, producer: AIOKafkaProducer) -> list[str]:
        """Recompute the periods the new snapshots can move; publish the groups whose figures changed."""
        s = self.settings
        p = s.redis_prefix
        started = time.perf_counter()
        periods = affected_periods(self.dirty_months, self.book.months())
        self.dirty_months.clear()
        self.last_compute = time.monotonic()
        changed: list[tuple[str, str, bytes]] = []
        for period in periods:
            for group, figures in self.book.compute(period).items():
                body = figures.model_dump_json(exclude={"as_of"}).encode()
                if self.published.get((period, group)) != body:
                    changed.append((period, group, figures.model_dump_json().encode()))
                    self.published[period, group] = body
        cohort_body = orjson.dumps([c.model_dump() for c in cohorts(self.book.accounts)])
        by_segment = {
            seg: orjson.dumps([c.model_dump() for c in cohorts(self.book.accounts, segment=seg)])
            for seg in segments(self.book.accounts)
        }
        every = b"\n".join([cohort_body, *(seg.encode() + b"=" + body for seg, body in by_segment.items())])
        new_cohorts = every != self.published_cohorts
        self.published_cohorts = every
        self.compute_seconds = time.perf_counter() - started
        if new_cohorts:
            await _retry(redis.set, f"{p}portfolio:cohorts", cohort_body)
            if by_segment:
                await _retry(lambda: redis.hset(f"{p}portfolio:cohorts:segments", mapping=by_segment))
        if not changed:
            return []
        for period, group, value in changed:
            await producer.send(s.topic("portfolio"), key=f"{period}|{group}".encode(), value=value)
        await producer.flush()

        async def store() -> None:
            async with redis.pipeline(transaction=True) as pipe:
                for period, group, value in changed:
                    pipe.hset(f"{p}portfolio:{period}", group, value.decode())
                    pipe.zadd(f"{p}portfolio:periods", {period: 0})
                await pipe.execute()

        await _retry(store)
        return sorted({period for period, _, _ in changed})
