"""The per-receiver rate limit through real Redis: two limiters (two processes' worth of clients)
share one bucket, and the Lua script computes what ``reserve`` does."""

from __future__ import annotations

import asyncio
import time

import pytest
from redis.asyncio import Redis

from alerts.pipeline import LoopClock
from alerts.ratelimit import RedisRateLimiter, reserve

pytestmark = [pytest.mark.redis]


async def test_the_script_computes_what_reserve_does(settings):
    redis = Redis.from_url(settings.redis_url)
    try:
        limiter = RedisRateLimiter(redis, f"{settings.redis_prefix}rate:r", 5, LoopClock())
        tat, now = 0, 1_770_000_000_000_000
        for step in [0, 0, 0, 50_000, 1_500_000, 10, 199_999, 3_000_000]:
            now += step
            wait, tat = reserve(tat, now, limiter.interval_us)
            assert await limiter.reserve(now_us=now) == wait / 1_000_000
        assert int(await redis.get(limiter.key)) == tat
        assert 0 < await redis.pttl(limiter.key) <= 1000 + (tat - now) // 1000 + 1
    finally:
        await redis.aclose()


async def test_two_limiters_on_two_connections_hold_one_rate_together(settings):
    """Each limiter alone would allow 5 a second; together they still send 5 a second, not 10."""
    rate, per_limiter = 5, 12
    clients = [Redis.from_url(settings.redis_url) for _ in range(2)]
    try:
        limiters = [
            RedisRateLimiter(c, f"{settings.redis_prefix}rate:shared", rate, LoopClock()) for c in clients
        ]
        granted: list[float] = []

        async def send(limiter: RedisRateLimiter) -> None:
            await limiter.acquire()
            granted.append(time.monotonic())

        started = time.monotonic()
        await asyncio.gather(*(send(lim) for _ in range(per_limiter) for lim in limiters))
        took = time.monotonic() - started
    finally:
        for c in clients:
            await c.aclose()
    granted.sort()
    n = 2 * per_limiter
    assert len(granted) == n
    # slots 0.2 s apart in Redis's clock: the last one (n - 1) * 0.2 s after the first, whoever asked
    assert took >= (n - 1) / rate - 0.05, took
    # slots 0.2 s apart start at most rate + 1 sends in a closed second; a timer firing late (a
    # loaded machine: tens of ms) can squeeze one more into a window that starts at a late one
    for t0 in granted:
        assert sum(t0 <= t < t0 + 1.0 for t in granted) <= rate + 2


async def test_two_limiters_reserve_from_one_bucket_in_turn(settings):
    """Deterministic: the same instants through two clients give one sequence of slots."""
    clients = [Redis.from_url(settings.redis_url) for _ in range(2)]
    try:
        a, b = (RedisRateLimiter(c, f"{settings.redis_prefix}rate:turns", 5, LoopClock()) for c in clients)
        now = 1_770_000_000_000_000
        waits = [await lim.reserve(now_us=now) for lim in (a, b, a, b, b)]
        assert waits == [0.0, 0.2, 0.4, 0.6, 0.8]
        assert await b.reserve(now_us=now + 2_000_000) == 0.0  # idle long enough: at once
    finally:
        for c in clients:
            await c.aclose()


async def test_a_busy_event_loop_does_not_turn_the_limit_into_a_burst(settings):
    """Sleepers whose slots pass while the loop is blocked take new slots instead of all sending at
    once when it frees up: the receiver never sees the slots the loop slept through arrive together."""
    redis = Redis.from_url(settings.redis_url)
    try:
        limiter = RedisRateLimiter(redis, f"{settings.redis_prefix}rate:busy", 5, LoopClock())
        granted: list[float] = []

        async def send() -> None:
            await limiter.acquire()
            granted.append(time.monotonic())

        tasks = [asyncio.create_task(send()) for _ in range(6)]
        await until_reserved(redis, limiter.key)
        time.sleep(0.7)  # noqa: ASYNC251 - the loop is busy: the slots at 0.2, 0.4, 0.6 s pass meanwhile
        await asyncio.gather(*tasks)
    finally:
        await redis.aclose()
    assert len(granted) == 6
    for t0 in granted:  # slots 0.2 s apart: at most 3 in any half second (without re-slotting: 5)
        assert sum(t0 <= t < t0 + 0.5 for t in granted) <= 3, [round(t - granted[0], 2) for t in granted]


async def until_reserved(redis: Redis, key: str) -> None:
    """Every sender has reserved a slot (the bucket's next slot is 6 intervals ahead)."""
    for _ in range(200):
        raw = await redis.get(key)
        now_s, now_us = await redis.time()
        if raw is not None and int(raw) - (now_s * 1_000_000 + now_us) > 5 * 200_000 - 100_000:
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the senders did not reserve their slots")
