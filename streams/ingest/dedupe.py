"""Late retries dropped at the door: the event ids ingest has had acknowledged, remembered in Redis.

The worker drops a repeat by ``event_id`` only within an account's last 64 events, which covers a
sender retrying within seconds but not Stripe re-delivering an event hours later to a busy account
(Stripe retries for up to three days; Segment's libraries retry a batch after a failed request). So
ingest remembers each event it had acknowledged for ``ingest_dedupe_window_s`` and answers a repeat
2xx without writing it again.

Order matters for "nothing lost": ids are looked up before the send and remembered only after Kafka
acknowledged, so a request that got 503 is never taken for a duplicate on its retry. Two copies
arriving at the same moment both pass and both reach Kafka: those are the near repeats the worker's
own window drops. When Redis does not answer, ingest carries on without it (the events are written;
the worker's window is the only dedupe meanwhile): a Redis outage must not stop data coming in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from streams.core.events import Event

log = logging.getLogger("healthmon.ingest")

#: After a Redis error, ingest does not ask again for this long (each request would wait on it).
RETRY_AFTER_ERROR_S = 5.0


def seen_key(prefix: str, event: Event) -> str:
    """One key per (account, event id): ids are unique per sender, and a digest keeps keys short."""
    digest = hashlib.blake2b(f"{event.account_id}\x00{event.event_id}".encode(), digest_size=16)
    return f"{prefix}ingest:seen:{digest.hexdigest()}"


class SeenIds:
    def __init__(self, redis: Redis, prefix: str, window_s: float) -> None:
        self.redis = redis
        self.prefix = prefix
        self.window_ms = int(window_s * 1000)
        self._down_until = 0.0

    def _available(self) -> bool:
        return self.window_ms > 0 and time.monotonic() >= self._down_until

    def _failed(self, what: str, exc: Exception) -> None:
        self._down_until = time.monotonic() + RETRY_AFTER_ERROR_S
        log.warning(
            "ingest: Redis did not answer (%s: %r); events pass without the late-retry check", what, exc
        )

    async def new(self, events: Sequence[Event]) -> tuple[list[Event], int]:
        """The events not acknowledged before (and not repeated within this request), and how many
        were dropped as repeats."""
        unique: dict[str, Event] = {}
        for e in events:
            unique.setdefault(seen_key(self.prefix, e), e)
        repeats = len(events) - len(unique)
        if not unique or not self._available():
            return list(unique.values()), repeats
        keys = list(unique)
        try:
            flags = await self.redis.mget(keys)
        except (RedisError, OSError) as exc:
            self._failed("lookup", exc)
            return list(unique.values()), repeats
        fresh = [unique[k] for k, hit in zip(keys, flags, strict=True) if hit is None]
        return fresh, repeats + len(keys) - len(fresh)

    async def remember(self, events: Sequence[Event]) -> None:
        """Called once Kafka acknowledged ``events``."""
        if not events or not self._available():
            return
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for e in events:
                    pipe.set(seen_key(self.prefix, e), b"1", px=self.window_ms)
                await pipe.execute()
        except (RedisError, OSError) as exc:
            self._failed("remember", exc)
