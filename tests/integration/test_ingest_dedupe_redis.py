"""Ingest's memory of acknowledged event ids, on the real Redis: a repeat is found for the whole
window and only after it was remembered; Redis away means the events pass, never an error."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest
from redis.asyncio import Redis

from streams.core.events import EVENT_ADAPTER, Event
from streams.ingest.dedupe import SeenIds, seen_key
from streams.settings import Settings

pytestmark = pytest.mark.redis


def login(account: str, event_id: str) -> Event:
    return EVENT_ADAPTER.validate_python(
        {
            "type": "login",
            "event_id": event_id,
            "account_id": account,
            "occurred_at": datetime(2026, 12, 7, tzinfo=UTC),
            "user_id": "u1",
        }
    )


async def test_ids_are_found_only_once_acknowledged_and_for_the_window(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    seen = SeenIds(redis, settings.redis_prefix, window_s=3 * 86400)
    try:
        a, b, a_other_account = login("acme", "m1"), login("acme", "m2"), login("initech", "m1")
        fresh, dropped = await seen.new([a, b, a])  # the sender repeated one inside its own batch
        assert (fresh, dropped) == ([a, b], 1)
        # Looked up but not acknowledged (a 503): the retry is not a repeat.
        assert await seen.new([a, b]) == ([a, b], 0)
        await seen.remember([a, b])
        assert await seen.new([a, b, a_other_account]) == ([a_other_account], 2)
        ttl_ms = await redis.pttl(seen_key(settings.redis_prefix, a))
        assert 3 * 86400 * 1000 - 60_000 < ttl_ms <= 3 * 86400 * 1000
    finally:
        await redis.aclose()


async def test_redis_away_lets_every_event_through(settings: Settings) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    redis = Redis.from_url(f"redis://127.0.0.1:{port}/0", socket_connect_timeout=1)
    seen = SeenIds(redis, settings.redis_prefix, window_s=3600)
    try:
        a = login("acme", "m1")
        assert await seen.new([a, a]) == ([a], 1)
        await seen.remember([a])
        assert await seen.new([a]) == ([a], 0)
    finally:
        await redis.aclose()


async def test_window_zero_is_off(settings: Settings) -> None:
    redis = Redis.from_url(settings.redis_url)
    seen = SeenIds(redis, settings.redis_prefix, window_s=0)
    try:
        a = login("acme", "m-off")
        await seen.remember([a])
        assert await seen.new([a]) == ([a], 0)
        assert not await redis.exists(seen_key(settings.redis_prefix, a))
    finally:
        await redis.aclose()
