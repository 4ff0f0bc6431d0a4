"""What delivery keeps in Redis: the notification log (dedupe across restarts) and silences.

Keys (``{p}`` = HEALTHMON_REDIS_PREFIX): ``{p}nflog:{group_key}`` (JSON: the firing and resolved alert
ids last notified, and when), ``{p}silences`` (hash id -> silence JSON), ``{p}silenced`` (a capped list of
what silences held back).
"""

from __future__ import annotations

import time
import uuid

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from .model import Notification

NFLOG_TTL_S = 14 * 86400


class Silence(BaseModel):
    id: str = Field(default_factory=lambda: uuid.uuid4().hex[:12])
    #: Label equality matchers, e.g. {"account": "acme"} or {"rule": "no_login_14d", "csm": "x@y.z"}.
    matchers: dict[str, str] = Field(min_length=1)
    ends_at: float
    created_by: str = ""
    comment: str = ""

    def matches(self, labels: dict[str, str], now: float) -> bool:
        return now < self.ends_at and all(labels.get(k) == v for k, v in self.matchers.items())


class DeliveryStore:
    def __init__(self, redis: Redis, prefix: str) -> None:
        self.redis = redis
        self.p = prefix

    async def needs_update(self, n: Notification, repeat_interval: float, now: float) -> bool:
        """Alertmanager's rule: send when something new fires or resolves, or the repeat is due."""
        raw = await self.redis.get(f"{self.p}nflog:{n.group_key}")
        if raw is None:
            return bool(n.firing) or bool(n.resolved)
        entry = orjson.loads(raw)
        firing = {a.alert_id for a in n.firing}
        resolved = {a.alert_id for a in n.resolved}
        if not firing <= set(entry["firing"]) or not resolved <= set(entry["resolved"]):
            return True
        return bool(firing) and now >= entry["at"] + repeat_interval

    async def log(self, n: Notification, now: float) -> None:
        entry = {
            "firing": [a.alert_id for a in n.firing],
            "resolved": [a.alert_id for a in n.resolved],
            "at": now,
        }
        await self.redis.set(f"{self.p}nflog:{n.group_key}", orjson.dumps(entry), ex=NFLOG_TTL_S)

    async def add_silence(self, silence: Silence) -> Silence:
        await self.redis.hset(f"{self.p}silences", silence.id, silence.model_dump_json())
        return silence

    async def remove_silence(self, silence_id: str) -> bool:
        return bool(await self.redis.hdel(f"{self.p}silences", silence_id))

    async def silences(self, now: float | None = None) -> list[Silence]:
        raw = await self.redis.hgetall(f"{self.p}silences")
        out = [Silence.model_validate_json(v) for v in raw.values()]
        now = time.time() if now is None else now
        return sorted((s for s in out if s.ends_at > now), key=lambda s: s.ends_at)

    async def record_silenced(self, alert_id: str, silence_id: str, now: float) -> None:
        key = f"{self.p}silenced"
        await self.redis.lpush(key, orjson.dumps({"alert_id": alert_id, "silence": silence_id, "at": now}))
        await self.redis.ltrim(key, 0, 9999)
