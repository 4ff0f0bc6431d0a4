"""The worker's side of Kafka for outputs: records as the shell sends them, sends that are settled later
(resending what failed), the table's changelog writes, and dead letters carrying the original record.

These are the ``Durable`` the :class:`~streams.worker.checkpoint.Checkpoint` is built with in the
worker (the crash simulation builds it from an in-memory log instead).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from streams.broker.headers import OutputKind, event_time_header, output_headers
from streams.engine.driver import DeadLetter, Output

log = logging.getLogger("healthmon.ingest")

OUTPUT_KINDS: dict[str, OutputKind] = {"health": "health", "changes": "health-changes", "alerts": "alerts"}

#: (topic, key, value, partition, timestamp in s, headers)
Out = tuple[str, bytes | None, bytes | None, int | None, float | None, list[tuple[str, bytes]]]


def dead_letter_headers(
    topic: str, partition: int, offset: int, reason: str, now: float, size: int
) -> list[tuple[str, bytes]]:
    return [
        ("healthmon.reason", reason.encode()[:1000]),
        ("healthmon.topic", topic.encode()),
        ("healthmon.partition", str(partition).encode()),
        ("healthmon.offset", str(offset).encode()),
        ("healthmon.failed_at", str(int(now)).encode()),
        ("healthmon.original_size", str(size).encode()),
    ]


class Outputs:
    """Sends through the app's producer (``producer()``: Faust makes it when the app starts)."""

    def __init__(
        self,
        producer: Callable[[], Any],
        output_names: dict[str, str],
        input_names: Sequence[str],
        changelog_name: Callable[[], str],
    ) -> None:
        self.producer = producer
        self.output_names = output_names
        self.input_names = list(input_names)
        self.changelog_name = changelog_name

    def records(self, p: int, out: Output) -> list[Out]:
        """A step's outputs as records, dead letters last, in the order they must be sent."""
        records: list[Out] = []
        for name, key, value, ts_ms in out.records:
            if name == "errors":
                headers = [("healthmon.reason", b"evaluation failed"), ("content-type", b"application/json")]
            else:
                headers = output_headers(OUTPUT_KINDS[name])  # the header contract: streams/broker/headers.py
                headers.append(event_time_header(ts_ms))
            # The Kafka timestamp stays the produce time: an event-time one would let time-based
            # retention delete a replay's outputs at once (docs/deploy.md).
            records.append((self.output_names[name], key, value, None, None, headers))
        records.extend(self.dead_letter(p, dl) for dl in out.dead_letters)
        return records

    def dead_letter(self, p: int, dl: DeadLetter) -> Out:
        rec = dl.record
        value = rec.value or b""
        name = self.input_names[rec.kind]
        log.warning("dead-lettered %s[%s]@%s: %s", name, p, rec.offset, dl.reason[:300])
        headers = dead_letter_headers(name, p, rec.offset, dl.reason, time.time(), len(value))
        return (self.output_names["errors"], rec.key, value, None, None, headers)

    async def send(self, pending: list[Out]) -> list[tuple[Out, Any]]:
        """Hand records to the producer; their futures say later whether the broker has them."""
        producer = self.producer()
        return [(rec, await producer.send(*rec)) for rec in pending]

    async def settle(self, sent: list[tuple[Out, Any]]) -> list[Any]:
        """Wait until every sent record is acknowledged, resending what failed.

        A send does not raise when the broker is away: its future fails after the producer gives
        up on the batch. Each future is checked, and nothing after this goes on (so nothing is
        acked) until all the records are in Kafka: during an outage the worker waits, it loses
        nothing."""
        attempt = 0
        acked: list[Any] = []  # the RecordMetadata of each record, once acknowledged
        while sent:
            await self.producer().flush()
            failed: list[Out] = []
            error: BaseException | None = None
            for rec, fut in sent:
                try:
                    acked.append(await fut)
                except Exception as exc:
                    failed.append(rec)
                    error = exc
            if not failed:
                break
            delay = min(5.0, 0.2 * 2**attempt)
            log.warning(
                "%d records not acknowledged (%r); sending them again in %.1f s", len(failed), error, delay
            )
            await asyncio.sleep(delay)
            attempt += 1
            sent = await self.send(failed)
        return acked

    async def write_changelog(self, rows: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        """States to the table's changelog; per partition, the offset of its last record written."""
        changelog = self.changelog_name()
        acked = await self.settle(
            await self.send([(changelog, key, value, p, None, []) for p, key, value in rows])
        )
        reached: dict[int, int] = {}
        for m in acked:
            reached[m.partition] = max(m.offset, reached.get(m.partition, m.offset))
        return reached
