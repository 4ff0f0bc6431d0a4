"""The read model's portfolio, history and alerts from real topics, its cs.portfolio output, and rebuilds."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.readmodel.projector import ReadModelWorker, read_history
from tests.helpers import collect, produce, setup_topics
from tests.unit.test_portfolio import doc_block, snapshot

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def doc_snapshots() -> list[dict]:
    out = []
    for row in doc_block("portfolio-fixture"):
        for month in ("oct", "nov"):
            snap = snapshot(row, month)
            if snap is not None:
                out.append(snap)
    return out


def daily(account: str, days: int) -> list[dict]:
    start = datetime(2026, 7, 1, 12, tzinfo=UTC)
    return [
        {
            "account_id": account,
            "as_of": (start + timedelta(days=d)).isoformat().replace("+00:00", "Z"),
            "account": {"name": "H", "segment": "smb", "csm_email": "ana@example.com"},
            "score": float(d % 100),
            "band": "green",
            "drivers": [],
            "metrics": {"mrr": "0", "canceled": False, "adoption_rate": 0.5},  # a trial: not in the cohort
        }
        for d in range(days)
    ]


def alert(account: str, status: str = "firing") -> dict:
    return {"alert_id": f"al-{account}", "rule_id": "no_login_14d", "account_id": account, "status": status}


async def wait_for(check, timeout: float = 30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = await check()
        if got:
            return got
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {check}")


async def run_until_built(s, redis: Redis, rebuild: bool = False) -> None:
    """Run a read model until it has written the portfolio and marked itself built, then stop it."""
    before = await redis.get(f"{s.redis_prefix}readmodel:built")
    worker = ReadModelWorker(s, rebuild=rebuild)
    task = asyncio.create_task(worker.run())
    try:

        async def built():
            return await redis.get(f"{s.redis_prefix}readmodel:built") not in (None, before)

        await wait_for(built)
    finally:
        worker.stopping.set()
        await task


async def november(redis: Redis, p: str) -> dict:
    raw = await redis.hget(f"{p}portfolio:2026-11", "all")
    return orjson.loads(raw) if raw else {}


async def test_portfolio_history_alerts_and_rebuild(kafka_settings) -> None:
    s = kafka_settings.model_copy(update={"history_days": 90, "portfolio_interval_s": 0.05})
    p = s.redis_prefix
    await setup_topics(s)
    snaps = doc_snapshots() + daily("h1", 130)
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    await produce(s, [(s.topic("alerts"), b"e3", orjson.dumps(alert("e3")))])
    redis = Redis.from_url(s.redis_url)
    try:
        await redis.hset(f"{p}silences", "keep-me", "{}")  # delivery's, not the read model's
        await run_until_built(s, redis)
        figures = await november(redis, p)
        assert (figures["nrr"], figures["grr"], figures["at_risk_mrr"]) == (95.93, 90.24, 2100)
        assert [a["account_id"] for a in figures["at_risk"]] == ["e3", "a3"]
        smb = orjson.loads(await redis.hget(f"{p}portfolio:2026-11", "segment:smb"))
        assert smb["revenue_churn_rate"] == 30.43
        assert await redis.zrange(f"{p}portfolio:periods", 0, -1) == [
            b"2026",  # the year (its cohort: December 2025)
            b"2026-07",
            b"2026-08",
            b"2026-09",
            b"2026-10",
            b"2026-11",
            b"2026-Q3",
            b"2026-Q4",
        ]

        # the same figures on cs.portfolio, keyed period|group, valid against the published schema
        def has_november(rs) -> bool:
            return any(r.key == b"2026-11|all" for r in rs)

        records = await collect(s, "portfolio", has_november)
        on_topic = next(orjson.loads(r.value) for r in records if r.key == b"2026-11|all")
        assert on_topic["nrr"] == 95.93 and on_topic["schema_version"] == 1

        # 130 days of snapshots, 90 (+ today) kept, one per day, oldest first
        history = await read_history(redis, p, "h1")
        assert len(history) == 91
        assert history[-1]["day"] == "2026-11-07" and history[-1]["score"] == 29.0
        assert history[0]["day"] == "2026-08-09" and history[0]["mrr"] == "0"

        feed = [orjson.loads(x) for x in await redis.lrange(f"{p}alerts", 0, -1)]
        assert [a["alert_id"] for a in feed] == ["al-e3"]
        assert await redis.hexists(f"{p}alerts:firing", "al-e3")

        # Redis loses the read model: the next start rebuilds it from the topics, equal to the first
        await redis.delete(*[k async for k in redis.scan_iter(match=f"{p}*")])  # this test's keys only
        await redis.hset(f"{p}silences", "keep-me", "{}")
        await run_until_built(s, redis)
        assert await november(redis, p) == figures
        assert len(await read_history(redis, p, "h1")) == 91

        # --rebuild deletes what the read model owns (not silences) and builds it again
        await redis.hset(f"{p}portfolio:2026-11", "all", "{}")
        await run_until_built(s, redis, rebuild=True)
        assert await november(redis, p) == figures
        assert await redis.hget(f"{p}silences", "keep-me") == b"{}"
        assert await redis.llen(f"{p}alerts") == 1
    finally:
        await redis.aclose()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def redis_server(port: int, workdir) -> subprocess.Popen:
    """A private redis-server without persistence: a restart comes back empty."""
    return subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )


async def test_a_redis_restart_mid_run_is_rebuilt_to_the_same_figures(kafka_settings, tmp_path) -> None:
    port = free_port()
    s = kafka_settings.model_copy(
        update={"redis_url": f"redis://127.0.0.1:{port}/0", "portfolio_interval_s": 0.05}
    )
    p = s.redis_prefix
    await setup_topics(s)
    first, second = doc_snapshots()[:6], doc_snapshots()[6:]
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in first))
    server = redis_server(port, tmp_path)
    redis = Redis.from_url(s.redis_url)
    rm = ReadModelWorker(s)
    rm.empty_check_s = 0.2
    task = None
    try:
        await wait_for(lambda: _pings(redis))
        task = asyncio.create_task(rm.run())
        await wait_for(lambda: redis.exists(f"{p}readmodel:built"))
        # Redis dies and comes back empty while the read model runs; more snapshots arrive meanwhile
        server.terminate()
        server.wait(10)
        await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in second))
        server = redis_server(port, tmp_path)

        async def rebuilt() -> bool:
            try:
                figures = await november(redis, p)
                return figures.get("nrr") == 95.93 and bool(await redis.exists(f"{p}readmodel:built"))
            except (OSError, RedisError):
                return False  # the new server is not up yet

        await wait_for(rebuilt)
        # equal to an uninterrupted run: the golden figures, every account, both months' points
        figures = await november(redis, p)
        assert (figures["grr"], figures["at_risk_mrr"], figures["renewals_90d_mrr"]) == (90.24, 2100, 6500)
        assert await redis.scard(f"{p}accounts") == 7
        assert await redis.hkeys(f"{p}months:a1") in ([b"2026-10", b"2026-11"], [b"2026-11", b"2026-10"])
    finally:
        rm.stopping.set()
        if task is not None:
            await task
        await redis.aclose()
        server.terminate()
        server.wait(10)


async def _pings(redis: Redis) -> bool:
    try:
        return bool(await redis.ping())
    except (OSError, RedisError):
        return False
