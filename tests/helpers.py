"""Small Kafka helpers for the integration tests (real broker, real clients)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import ConsumerRecord

from streams.broker.admin import create_topics, poll_committed
from streams.broker.producer import produce_events as send_records
from streams.core.events import TYPE_TOPIC
from streams.settings import Settings

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)  # a Monday


def at(days: float = 0, hours: float = 0) -> str:
    return (T0 + timedelta(days=days, hours=hours)).isoformat().replace("+00:00", "Z")


_seq = iter(range(10**9))


def event(type_: str, account: str = "acc-1", when: str | None = None, **fields: Any) -> dict:
    return {
        "event_id": fields.pop("event_id", f"e-{next(_seq)}"),
        "account_id": account,
        "type": type_,
        "occurred_at": when or at(),
        **fields,
    }


def account_event(account: str = "acc-1", when: str | None = None, **over: Any) -> dict:
    fields = dict(
        name=f"{account} Inc",
        segment="mid_market",
        csm_name="Ana CSM",
        csm_email="ana@example.com",
        signed_up_at=at(-100),
    )
    fields.update(over)
    return event("account", account, when or at(-1), **fields)


def topic_for(s: Settings, ev: dict) -> str:
    return s.topic(TYPE_TOPIC[ev["type"]])


async def setup_topics(s: Settings) -> None:
    await create_topics(s)


async def produce(s: Settings, records: Iterable[tuple[str, bytes | None, bytes | None]]) -> None:
    await send_records(s, records)  # the same producer as `healthmon replay`


async def committed_everywhere(s: Settings, topic: str, timeout: float = 120) -> None:
    """Wait until the worker's group has committed an offset past 0 on every partition of ``topic``:
    the states those records changed are then in the changelog (and in a RocksDB worker's
    databases), since a record is acked only after that write."""

    def everywhere(got: dict[tuple[str, int], int]) -> bool:
        mine = [o for (t, _), o in got.items() if t == topic]
        return len(mine) == s.partitions and min(mine) > 0

    await poll_committed(s, everywhere, timeout, every=0.2)


async def produce_events(s: Settings, events: Iterable[dict]) -> None:
    await produce(s, ((topic_for(s, e), e["account_id"].encode(), orjson.dumps(e)) for e in events))


async def collect(
    s: Settings,
    topic: str,
    until: Callable[[list[ConsumerRecord]], bool] | None,
    timeout: float = 30,
) -> list[ConsumerRecord]:
    """Read ``topic`` from the beginning until ``until(records)`` holds; fail after ``timeout``.

    With ``until=None`` it reads for ``timeout`` seconds and returns whatever arrived.
    """
    consumer = AIOKafkaConsumer(
        s.topic(topic) if hasattr(s.topics, topic) else topic,
        bootstrap_servers=s.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    records: list[ConsumerRecord] = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if until is not None and until(records):
                return records
        if until is None:
            return records
        raise AssertionError(
            f"condition on {topic} not met within {timeout}s; {len(records)} records read:\n"
            + "\n".join(f"{r.key!r}: {str(r.value)[:200]}" for r in records[-20:])
        )
    finally:
        await consumer.stop()


def latest_snapshots(records: list[ConsumerRecord]) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for r in records:
        out[r.key.decode()] = orjson.loads(r.value)
    return out


def snapshot_total(records: list[ConsumerRecord], account: str) -> int:
    snap = latest_snapshots(records).get(account)
    return sum(snap["event_counts"].values()) if snap else -1


async def settle(seconds: float) -> None:
    await asyncio.sleep(seconds)


async def read_all(s: Settings, topic: str, seconds: float) -> list[ConsumerRecord]:
    """Everything that is on ``topic`` within ``seconds`` (for asserting that nothing arrived)."""
    return await collect(s, topic, until=None, timeout=seconds)
