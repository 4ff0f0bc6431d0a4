"""The Redis read model for dashboards, written from ``cs.health`` by ``healthmon readmodel`` (or by
an agent inside the worker when ``HEALTHMON_READMODEL_ENABLED`` is true, for one-process setups).

Key layout (``{p}`` is ``HEALTHMON_REDIS_PREFIX``, default ``healthmon:``):

- ``{p}account:{account_id}``  hash: score, band, confidence, as_of, name, segment, csm_email, csm_name,
  mrr, snapshot (the whole snapshot JSON)
- ``{p}scores``                sorted set: account_id by score (accounts without a score are absent)
- ``{p}band:{red|yellow|green}``  set of account_ids
- ``{p}csm:{csm_email}``       set of account_ids the CSM owns
- ``{p}segment:{segment}``     set of account_ids
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

import orjson
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis
from redis.exceptions import RedisError

from .settings import Settings

log = logging.getLogger("healthmon.readmodel")
_INDEXED = ("band", "csm", "segment")


def _index_values(snap: dict) -> dict[str, str | None]:
    acc = snap.get("account") or {}
    return {"band": snap.get("band"), "csm": acc.get("csm_email"), "segment": acc.get("segment")}


async def write_snapshots(redis: Redis, prefix: str, raw: Sequence[bytes]) -> int:
    """Write the latest snapshot per account of ``raw``; one read and one transaction per batch."""
    latest: dict[str, dict] = {}
    for value in raw:
        try:
            snap = orjson.loads(value)
            latest[str(snap["account_id"])] = snap
        except (orjson.JSONDecodeError, KeyError, TypeError):
            log.warning("skipping a message on the health topic that is not a snapshot: %.200r", value)
    if not latest:
        return 0
    ids = list(latest)
    async with redis.pipeline(transaction=False) as pipe:
        for aid in ids:
            pipe.hmget(f"{prefix}account:{aid}", list(_INDEXED))
        old_rows = await pipe.execute()
    async with redis.pipeline(transaction=True) as pipe:
        for aid, old in zip(ids, old_rows, strict=True):
            snap = latest[aid]
            new = _index_values(snap)
            for field, before in zip(_INDEXED, old, strict=True):
                before = before.decode() if isinstance(before, bytes) else before
                if before and before != new[field]:
                    pipe.srem(f"{prefix}{field}:{before}", aid)
                if new[field]:
                    pipe.sadd(f"{prefix}{field}:{new[field]}", aid)
            acc = snap.get("account") or {}
            fields = {
                "score": "" if snap.get("score") is None else str(snap["score"]),
                "band": snap.get("band") or "",
                "confidence": str(snap.get("confidence", "")),
                "as_of": snap.get("as_of", ""),
                "name": acc.get("name") or "",
                "segment": acc.get("segment") or "",
                "csm": acc.get("csm_email") or "",
                "csm_name": acc.get("csm_name") or "",
                "mrr": str((snap.get("metrics") or {}).get("mrr") or ""),
                "snapshot": orjson.dumps(snap),
            }
            pipe.hset(f"{prefix}account:{aid}", mapping=fields)
            if snap.get("score") is None:
                pipe.zrem(f"{prefix}scores", aid)
            else:
                pipe.zadd(f"{prefix}scores", {aid: float(snap["score"])})
        await pipe.execute()
    return len(latest)


async def write_with_retry(redis: Redis, prefix: str, raw: Sequence[bytes], max_delay: float = 10.0) -> None:
    """Keep trying while Redis is away: the batch is acknowledged only once it is written."""
    delay = 0.1
    while True:
        try:
            await write_snapshots(redis, prefix, raw)
            return
        except (RedisError, OSError) as exc:
            log.warning("redis write failed (%s); retrying in %.1fs", exc, delay)
            await asyncio.sleep(delay)
            delay = min(max_delay, delay * 2)


class ReadModelWorker:
    """``healthmon readmodel``: cs.health -> Redis in a process of its own (consumer group
    ``{app_id}-readmodel``), so the read model's parsing and Redis round trips never take CPU from
    scoring. Offsets are committed after the batch is in Redis: a restart re-writes, never skips."""

    def __init__(self, settings: Settings, batch: int = 500) -> None:
        self.settings = settings
        self.batch = batch
        self.stopping = asyncio.Event()

    async def run(self) -> None:
        s = self.settings
        consumer = AIOKafkaConsumer(
            s.topic("health"),
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.app_id}-readmodel",
            client_id=f"{s.app_id}-readmodel",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        redis = Redis.from_url(s.redis_url)
        await consumer.start()
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=self.batch)
                values = [r.value for records in batch.values() for r in records if r.value is not None]
                if values:
                    await write_with_retry(redis, s.redis_prefix, values)
                if batch:
                    await consumer.commit()
        finally:
            await consumer.stop()
            await redis.aclose()
