"""Producing JSON-lines event files to the input topics (``healthmon replay``, the demo feed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import orjson

from . import kafka_clients
from .events import TYPE_TOPIC
from .settings import Settings


class ReplayError(ValueError):
    pass


def read_lines(path: Path) -> Iterator[tuple[int, bytes, dict]]:
    """Yield (line number, raw line, parsed object); the raw bytes are sent unchanged."""
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                obj = orjson.loads(raw)
            except orjson.JSONDecodeError as exc:
                raise ReplayError(f"{path}:{lineno}: not JSON: {exc}") from None
            if not isinstance(obj, dict):
                raise ReplayError(f"{path}:{lineno}: expected a JSON object")
            yield lineno, raw, obj


def route(s: Settings, obj: dict, where: str) -> tuple[str, bytes]:
    kind = TYPE_TOPIC.get(obj.get("type"))  # type: ignore[arg-type]
    if kind is None:
        raise ReplayError(f"{where}: unknown event type {obj.get('type')!r}")
    account = obj.get("account_id")
    if not isinstance(account, str) or not account:
        raise ReplayError(f"{where}: account_id missing")
    return s.topic(kind), account.encode()


Record = tuple[str, bytes | None, bytes | None]


async def produce_events(
    s: Settings,
    records: Iterable[Record],
    rate: float | None = None,
    not_before: Callable[[Record], float] | None = None,
) -> int:
    """Send (topic, key, value) records in order, at most ``rate`` per second when given, and none
    before the wall-clock time ``not_before(record)`` says (live simulation)."""
    producer = kafka_clients.producer(
        s,
        client_id=f"{s.app_id}-replay",
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
        compression_type=s.compression_type,
    )
    await producer.start()
    sent = 0
    started = time.monotonic()
    try:
        for record in records:
            if not_before is not None and (wait := not_before(record) - time.time()) > 0:
                await producer.flush()
                await asyncio.sleep(wait)
            topic, key, value = record
            await producer.send(topic, value=value, key=key)
            sent += 1
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


async def replay_file(s: Settings, path: Path, rate: float | None = None) -> int:
    def records() -> Iterator[tuple[str, bytes, bytes]]:
        for lineno, raw, obj in read_lines(path):
            topic, key = route(s, obj, f"{path}:{lineno}")
            yield topic, key, raw

    return await produce_events(s, records(), rate)


def event_records(s: Settings, events: Iterable[dict]) -> Iterator[Record]:
    for obj in events:
        topic, key = route(s, obj, f"event {obj.get('event_id')!r}")
        yield topic, key, orjson.dumps(obj)
