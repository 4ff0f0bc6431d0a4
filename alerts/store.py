"""What delivery keeps in Redis: the notification log (dedupe across restarts) and silences.

Keys (``{p}`` = HEALTHMON_REDIS_PREFIX): ``{p}nflog:{group_key}`` (JSON: the firing and resolved alert
ids last notified, and when), ``{p}notified:{group_key}`` (hash: alert id -> when its firing went out, so
a resolution is sent only for what was notified, also after a restart or by another process),
``{p}closed:{group_key}`` (hash: alert id -> when its resolution was handled: a firing of a closed
episode read again is a replay, not news), ``{p}silences`` (hash id -> silence JSON), ``{p}silenced`` (a
capped list of what silences held back). Redis runs with append-only persistence (.ci/stack.sh,
docker-compose.yml), so silences and the log survive its restart.

A firing is marked in ``notified`` *before* it is sent (``PENDING``): a process killed, or a partition
taken away, between the send and the log leaves the mark, so whoever reads the resolution sends it. The
mark is taken back only when the send certainly did not reach the receiver.
"""

from __future__ import annotations

import time
import uuid

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from alerts.digest import snapshot_figures
from alerts.model import Notification
from rules.model import AlertEvent

NFLOG_TTL_S = 14 * 86400
#: The value of a ``notified`` mark whose send was attempted but not (yet) confirmed.
PENDING = "pending"


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

    async def last_firing(self, group_key: str) -> set[str]:
        raw = await self.redis.get(f"{self.p}nflog:{group_key}")
        return set() if raw is None else set(orjson.loads(raw)["firing"])

    async def open_tasks(self, alerts: list[AlertEvent]) -> dict[str, str]:
        """Alert id -> the open task of the alert's episode, from the task read model
        (``{p}tasks:account:{id}``, ``{p}task:{id}``, written by ``healthmon tasks-worker``)."""
        accounts = list(dict.fromkeys(a.account_id for a in alerts))
        if not accounts:
            return {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for aid in accounts:
                pipe.smembers(f"{self.p}tasks:account:{aid}")
            ids = sorted({i.decode() for got in await pipe.execute() for i in got})
        out: dict[str, str] = {}
        for raw in await self.redis.mget([f"{self.p}task:{i}" for i in ids]) if ids else []:
            if raw is None:
                continue
            task = orjson.loads(raw)
            if task.get("state") in ("open", "acknowledged"):
                for alert_id in task.get("alert_ids") or [task.get("alert_id")]:
                    out[alert_id] = task["task_id"]
        return out

    async def account_figures(self, account_ids: list[str]) -> dict[str, dict[str, str]]:
        """The latest figures per account from the read model (``{p}account:{id}``), for digests."""
        fields = ["score", "band", "mrr", "name", "as_of", "snapshot"]
        out: dict[str, dict[str, str]] = {}
        async with self.redis.pipeline(transaction=False) as pipe:
            for aid in account_ids:
                pipe.hmget(f"{self.p}account:{aid}", fields)
            rows = await pipe.execute()
        for aid, row in zip(account_ids, rows, strict=True):
            got = {k: v.decode() for k, v in zip(fields, row, strict=True) if v is not None}
            snap = got.pop("snapshot", None)
            if snap:
                got.update(snapshot_figures({"as_of": got.get("as_of"), **orjson.loads(snap)}))
            if got:
                out[aid] = got
        return out

    async def log(
        self, n: Notification, now: float, sent: bool = True, closed: list[str] | None = None
    ) -> None:
        """Record what the group's receiver now knows. ``sent=False``: nothing went out (only
        resolutions nobody was told about), but the firing set moved on, keep the last send time.
        ``closed``: every resolution the flush handled (sent or not): those episodes are over."""
        key = f"{self.p}nflog:{n.group_key}"
        at = now
        if not sent:
            raw = await self.redis.get(key)
            at = orjson.loads(raw)["at"] if raw is not None else 0.0
        entry = {
            "firing": [a.alert_id for a in n.firing],
            "resolved": [a.alert_id for a in n.resolved],
            "at": at,
        }
        notified = f"{self.p}notified:{n.group_key}"
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(key, orjson.dumps(entry), ex=NFLOG_TTL_S)
            if sent and n.firing:
                pipe.hset(notified, mapping={a.alert_id: now for a in n.firing})
            if n.resolved:
                pipe.hdel(notified, *[a.alert_id for a in n.resolved])
            pipe.expire(notified, NFLOG_TTL_S)
            if closed:
                pipe.hset(f"{self.p}closed:{n.group_key}", mapping=dict.fromkeys(closed, now))
                pipe.expire(f"{self.p}closed:{n.group_key}", NFLOG_TTL_S)
            await pipe.execute()

    async def mark_pending(self, group_key: str, alert_ids: list[str]) -> list[str]:
        """Before a send: mark these firings as (maybe) notified; returns the ids this call marked
        (those not marked already), the ones to take back if the send certainly failed."""
        if not alert_ids:
            return []
        key = f"{self.p}notified:{group_key}"
        async with self.redis.pipeline(transaction=True) as pipe:
            for i in alert_ids:
                pipe.hsetnx(key, i, PENDING)
            pipe.expire(key, NFLOG_TTL_S)
            got = await pipe.execute()
        return [i for i, new in zip(alert_ids, got[:-1], strict=True) if new]

    async def unmark(self, group_key: str, alert_ids: list[str]) -> None:
        """The send certainly reached nobody: these firings were not notified after all."""
        if alert_ids:
            await self.redis.hdel(f"{self.p}notified:{group_key}", *alert_ids)

    async def closed(self, group_key: str, alert_ids: list[str]) -> set[str]:
        """Which of these episodes already resolved (a firing of one is a replayed record)."""
        if not alert_ids:
            return set()
        got = await self.redis.hmget(f"{self.p}closed:{group_key}", alert_ids)
        return {i for i, v in zip(alert_ids, got, strict=True) if v is not None}

    async def notified(self, group_key: str, alert_ids: list[str]) -> set[str]:
        """Which of these alerts had their firing notified to this group (for resolved-only filtering)."""
        if not alert_ids:
            return set()
        got = await self.redis.hmget(f"{self.p}notified:{group_key}", alert_ids)
        return {i for i, v in zip(alert_ids, got, strict=True) if v is not None}

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
