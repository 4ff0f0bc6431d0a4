"""The card topic (``cs.scorecards``) read and written: the book of decisions for ``healthmon serve``
and ``healthmon calibrate --propose --publish``; the worker follows it (streams/worker/cards.py).

A decision is produced with acks from all replicas, the card record first, then (for an accepted or
rolled-back card) the one explaining change event on ``cs.health.changes``: a crash between the two
leaves the card in force without its explanation, never an explanation of a card not in force.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pydantic import ValidationError

from streams.broker import clients as kafka_clients
from streams.broker.headers import event_time_header, output_headers, timestamp_ms
from streams.broker.tail import read_to_end
from streams.core.cards import CARD_CHANGE_KEY, CardBook, CardChange, CardRecord
from streams.core.scoring import ScoringConfig
from streams.settings import Settings

log = logging.getLogger("healthmon.cards")
SEND_TIMEOUT_S = 10.0


def parse_record(value: bytes | None) -> CardRecord | None:
    """A card record, or None (a tombstone, or a value that is not one: logged and left out, as the
    worker does; it must never stop scoring)."""
    if value is None:
        return None
    try:
        return CardRecord.model_validate_json(value)
    except ValidationError as exc:
        log.error("card topic: a record that is not a card record was left out: %s", exc)
        return None


async def read_book(s: Settings, base: ScoringConfig) -> CardBook:
    """Every decision on the card topic up to its end as of now (ValueError: no such topic)."""
    book = CardBook(base)
    async with contextlib.aclosing(read_to_end(s, s.topic("scorecards"))) as records:
        async for msg in records:
            if (record := parse_record(msg.value)) is not None:
                book.add([record])
    return book


async def publish(s: Settings, record: CardRecord, change: CardChange | None = None) -> None:
    """The decision on the card topic, then its change event (if any) on ``cs.health.changes``."""
    producer = kafka_clients.producer(s, acks="all", enable_idempotence=True, client_id=f"{s.app_id}-cards")
    await asyncio.wait_for(kafka_clients.started(producer), SEND_TIMEOUT_S)
    try:
        await asyncio.wait_for(
            producer.send_and_wait(
                s.topic("scorecards"), key=record.key, value=record.model_dump_json().encode()
            ),
            SEND_TIMEOUT_S,
        )
        if change is not None:
            headers = [*output_headers("health-changes"), event_time_header(timestamp_ms(change.as_of))]
            await asyncio.wait_for(
                producer.send_and_wait(
                    s.topic("health_changes"),
                    key=CARD_CHANGE_KEY,
                    value=change.model_dump_json().encode(),
                    headers=headers,
                ),
                SEND_TIMEOUT_S,
            )
    finally:
        await producer.stop()
