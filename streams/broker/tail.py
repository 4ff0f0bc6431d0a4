"""``healthmon tail``: read a topic as JSON lines, for people and for tests."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncGenerator
from typing import BinaryIO

import orjson
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from streams import compat
from streams.broker import clients as kafka_clients
from streams.settings import Settings


def render(msg) -> bytes:
    """One JSON line per message; dead letters keep their original bytes (base64) and headers."""
    headers = {k: v.decode(errors="replace") for k, v in (msg.headers or ())}
    if headers.get("healthmon.reason") is not None:
        text = None
        if msg.value is not None:
            try:
                text = msg.value.decode()
            except UnicodeDecodeError:
                text = None
        body = {
            "reason": headers.get("healthmon.reason"),
            "source": {
                "topic": headers.get("healthmon.topic"),
                "partition": int(headers.get("healthmon.partition", -1)),
                "offset": int(headers.get("healthmon.offset", -1)),
            },
            "key": msg.key.decode(errors="replace") if msg.key is not None else None,
            "value_text": text,
            "value_base64": base64.b64encode(msg.value).decode() if msg.value is not None else None,
        }
        return orjson.dumps(body)
    if msg.value is None:
        return orjson.dumps({"key": msg.key.decode(errors="replace") if msg.key else None, "value": None})
    try:
        return orjson.dumps(orjson.loads(msg.value))
    except orjson.JSONDecodeError:
        return orjson.dumps({"value_base64": base64.b64encode(msg.value).decode()})


async def tail_topic(
    s: Settings,
    topic: str,
    from_beginning: bool,
    max_messages: int,
    idle: float,
    out: BinaryIO,
    follow: bool = True,
    latest: bool = False,
) -> int:
    """Print ``topic`` as JSON lines. Without ``follow``: from the beginning up to the end as of now,
    then return. ``latest``: only the last record per key (a tombstone removes the key), at the end."""
    if latest or not follow:
        return await _to_end(s, topic, max_messages, out, latest)
    consumer = await assigned_consumer(s, [topic], "earliest" if from_beginning else "latest")
    seen = 0
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=int(idle * 1000) if idle else 1000)
            if not batch:
                if idle:
                    return seen
                continue
            for records in batch.values():
                for msg in records:
                    out.write(render(msg) + b"\n")
                    seen += 1
                    if max_messages and seen >= max_messages:
                        out.flush()
                        return seen
            out.flush()
    except asyncio.CancelledError:
        return seen
    finally:
        await consumer.stop()


async def _to_end(s: Settings, topic: str, max_messages: int, out: BinaryIO, latest: bool) -> int:
    seen = 0
    last: dict[bytes | None, ConsumerRecord] = {}
    async with contextlib.aclosing(read_to_end(s, topic)) as records:
        async for msg in records:
            if latest:
                if msg.value is None:
                    last.pop(msg.key, None)
                else:
                    last[msg.key] = msg
                continue
            out.write(render(msg) + b"\n")
            seen += 1
            if max_messages and seen >= max_messages:
                break
    for key in sorted(last, key=lambda k: k or b""):
        out.write(render(last[key]) + b"\n")
        seen += 1
        if max_messages and seen >= max_messages:
            break
    out.flush()
    return seen


async def assigned_consumer(s: Settings, topics: list[str], reset: str) -> AIOKafkaConsumer:
    """A started consumer without a group, assigned every partition of ``topics``; a missing topic is
    a ``ValueError`` at once (subscribing to it would wait out the request timeout)."""
    consumer = await kafka_clients.started(
        kafka_clients.consumer(s, group_id=None, enable_auto_commit=False, auto_offset_reset=reset)
    )
    try:
        # One metadata request answers both questions (consumer.topics() does not fill the cache
        # partitions_for_topic() reads).
        cluster = await compat.fetch_all_metadata(consumer)
        missing = sorted(set(topics) - cluster.topics())
        if missing:
            raise ValueError(f"topic {', '.join(missing)} does not exist")
        consumer.assign(
            [TopicPartition(t, p) for t in topics for p in sorted(cluster.partitions_for_topic(t) or ())]
        )
    except BaseException:
        await consumer.stop()
        raise
    return consumer


async def read_to_end(s: Settings, *topics: str) -> AsyncGenerator[ConsumerRecord, None]:
    """Every record of ``topics`` from the beginning up to their ends as of now (then stop)."""
    consumer = await assigned_consumer(s, list(topics), "earliest")
    try:
        tps = sorted(consumer.assignment())
        await consumer.seek_to_beginning(*tps)
        async for msg in consume_to_end(consumer, tps):
            yield msg
    finally:
        await consumer.stop()


async def consume_to_end(
    consumer: AIOKafkaConsumer, tps: list[TopicPartition], past_end: bool = False
) -> AsyncGenerator[ConsumerRecord, None]:
    """The records of ``tps`` from the consumer's positions up to their end offsets as of now.
    ``past_end``: also those a fetch brought beyond them; a caller that goes on reading (a follower)
    must not drop them, its position is already past them."""
    ends = await consumer.end_offsets(tps)
    left = {tp for tp in tps if ends[tp] > 0}
    while left:
        batch = await consumer.getmany(*left, timeout_ms=1000, max_records=10_000)
        for tp, records in batch.items():
            for msg in records:
                if past_end or msg.offset < ends[tp]:
                    yield msg
        for tp in list(left):
            if await consumer.position(tp) >= ends[tp]:
                left.discard(tp)


async def count_records(s: Settings, *topics: str) -> int:
    """How many records ``topics`` hold now (end minus beginning offsets, all partitions)."""
    consumer = await assigned_consumer(s, list(topics), "earliest")
    try:
        tps = sorted(consumer.assignment())
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        return sum(ends[tp] - starts[tp] for tp in tps)
    finally:
        await consumer.stop()
