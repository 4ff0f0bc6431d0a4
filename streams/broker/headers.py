"""The Kafka header contract of healthmon's outputs (cs.health, cs.health.changes, cs.alerts).

Every record healthmon produces to an output topic carries these headers, so a consumer can route and
decode it without parsing the value first:

=========================  ==================================================================
``content-type``           ``application/json`` (UTF-8 JSON object; tombstones have no value)
``healthmon.schema``       the JSON Schema id of the value, e.g.
                           ``https://healthmon.dev/schema/health.v1.json`` (``healthmon schema``)
``healthmon.schema-version``  the value's ``schema_version`` as a decimal string (``1``)
``healthmon.kind``         ``health`` | ``health-changes`` | ``alerts``
``healthmon.producer``     ``healthmon/<package version>`` (which build wrote it)
=========================  ==================================================================

``healthmon.event-time`` is the event time the value describes, in ms since the epoch: for a snapshot or a
health change its ``as_of``; for an alert, the time its state changed. The record's Kafka timestamp stays
the time it was produced: with the event time there, time-based retention deletes a replay's outputs
(weeks old in event time) at the next retention check (docs/deploy.md).

Dead letters (cs.deadletter, cs.alerts.deadletter) keep their own ``healthmon.reason`` / ``.topic`` /
``.partition`` / ``.offset`` headers (streams/worker/outputs.py) and the original bytes.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from importlib import metadata
from typing import Literal

OutputKind = Literal["health", "health-changes", "alerts"]
Headers = list[tuple[str, bytes]]

CONTENT_TYPE = b"application/json"


def schema_id(kind: OutputKind, schema_version: int = 1) -> str:
    """The ``$id`` of the value's JSON Schema (as ``healthmon schema KIND`` prints it)."""
    return f"https://healthmon.dev/schema/{kind}.v{schema_version}.json"


@lru_cache(maxsize=1)
def producer_id() -> bytes:
    try:
        version = metadata.version("healthmon")
    except metadata.PackageNotFoundError:  # running from a source tree without an install
        version = "0+unknown"
    return f"healthmon/{version}".encode()


@lru_cache(maxsize=8)
def _headers(kind: OutputKind, schema_version: int) -> tuple[tuple[str, bytes], ...]:
    return (
        ("content-type", CONTENT_TYPE),
        ("healthmon.schema", schema_id(kind, schema_version).encode()),
        ("healthmon.schema-version", str(schema_version).encode()),
        ("healthmon.kind", kind.encode()),
        ("healthmon.producer", producer_id()),
    )


def output_headers(kind: OutputKind, schema_version: int = 1) -> Headers:
    """The headers for one output record of ``kind`` (a fresh list: the producer may keep it)."""
    return list(_headers(kind, schema_version))


def event_time_header(ms: int) -> tuple[str, bytes]:
    return ("healthmon.event-time", str(ms).encode())


def timestamp_ms(event_time: datetime | float) -> int:
    """A record timestamp (ms since the epoch) from an event time (aware datetime or epoch seconds)."""
    seconds = event_time.timestamp() if isinstance(event_time, datetime) else float(event_time)
    return round(seconds * 1000)
