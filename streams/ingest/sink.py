"""Where ingested events go: the input topics, each send acknowledged by all in-sync replicas.

A request is answered 2xx only after every one of its records is acknowledged (``acks=all``). When
Kafka does not acknowledge them within ``ingest_ack_timeout_s`` the request gets 503 and the sender
retries; records that did get through meanwhile come again with the same ``event_id`` and the worker
counts them once. The producer is not idempotent on purpose: aiokafka's idempotent producer cannot
carry on past an expired batch (its sequence numbers break), and the duplicates it would prevent are
the ones the worker already drops by ``event_id``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from streams.broker import clients as kafka_clients
from streams.core.events import EVENT_ADAPTER, TYPE_TOPIC, Event
from streams.settings import Settings

#: Dead letters keep at most this much of the original request (Kafka's default record limit is 1 MB).
DEAD_LETTER_MAX_BYTES = 900 * 1024


class BrokerUnavailable(Exception):
    """Kafka did not acknowledge in time (or refused): the sender must retry (503)."""


def dead_letter_headers(
    source: str, path: str, reason: str, now: float, size: int
) -> list[tuple[str, bytes]]:
    """The worker's dead-letter headers (``healthmon.reason``, ``.topic``, ...), with the ingest route
    in place of a topic: ``healthmon tail cs.deadletter`` shows them alike."""
    return [
        ("healthmon.reason", reason.encode()[:1000]),
        ("healthmon.topic", f"ingest:{source}{path}".encode()),
        ("healthmon.partition", b"-1"),
        ("healthmon.offset", b"-1"),
        ("healthmon.failed_at", str(int(now)).encode()),
        ("healthmon.original_size", str(size).encode()),
        ("healthmon.ingest.source", source.encode()),
    ]


def record(s: Settings, event: Event) -> tuple[str, bytes, bytes]:
    """(topic, key, value) of one contract event: its topic by type, keyed by account."""
    return s.topic(TYPE_TOPIC[event.type]), event.account_id.encode(), EVENT_ADAPTER.dump_json(event)


class Sink:
    def __init__(self, s: Settings) -> None:
        self.s = s
        self.timeout = s.ingest_ack_timeout_s
        self.producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        self.producer = kafka_clients.producer(
            self.s,
            client_id=f"{self.s.app_id}-ingest",
            acks="all",
            enable_idempotence=False,
            linger_ms=2,
            max_batch_size=256 * 1024,
            compression_type=self.s.compression_type,
        )
        await kafka_clients.started(self.producer)

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
            self.producer = None

    async def _send_all(
        self, records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]]
    ) -> None:
        assert self.producer is not None, "Sink.start() first"
        futures = [
            await self.producer.send(topic, value=value, key=key, headers=headers)
            for topic, key, value, headers in records
        ]
        await asyncio.gather(*futures)

    async def send(
        self, records: Sequence[tuple[str, bytes | None, bytes, list[tuple[str, bytes]] | None]]
    ) -> None:
        """Send and wait until Kafka acknowledged every record, or raise BrokerUnavailable."""
        if not records:
            return
        try:
            await asyncio.wait_for(self._send_all(records), self.timeout)
        except TimeoutError:
            raise BrokerUnavailable(f"Kafka did not acknowledge within {self.timeout:g} s") from None
        except KafkaError as exc:
            raise BrokerUnavailable(f"Kafka refused the records: {exc!r}") from None

    async def events(self, events: Sequence[Event]) -> None:
        await self.send([(*record(self.s, e), None) for e in events])

    def dead_letter_record(
        self, source: str, path: str, body: bytes, reason: str
    ) -> tuple[str, bytes, bytes, list[tuple[str, bytes]]]:
        """The raw request as a dead letter: the reason in the headers, keyed by source."""
        headers = dead_letter_headers(source, path, reason, time.time(), len(body))
        return self.s.topic("deadletter"), source.encode(), body[:DEAD_LETTER_MAX_BYTES], headers
