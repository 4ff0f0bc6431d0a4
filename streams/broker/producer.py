"""Producing JSON-lines event files to the input topics (``healthmon replay``, the demo feed)."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from streams.broker import clients as kafka_clients
from streams.core.events import TYPE_TOPIC, InvalidEvent, parse_event
from streams.settings import Settings


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
    on_sent: Callable[[Record], None] | None = None,
) -> int:
    """Send (topic, key, value) records in order, at most ``rate`` per second when given, and none
    before the wall-clock time ``not_before(record)`` says (live simulation)."""
    producer = kafka_clients.bulk_producer(s, f"{s.app_id}-replay")
    await kafka_clients.started(producer)
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
            if on_sent is not None:
                on_sent(record)
            if rate:
                ahead = sent / rate - (time.monotonic() - started)
                if ahead > 0:
                    await asyncio.sleep(ahead)
        await producer.flush()
    finally:
        await producer.stop()
    return sent


def nothing_sent(invalid: int, problems: list[str], path: Path, lines: str, valid: str) -> str:
    """Why a file was refused whole: how many invalid ``lines``, the first few problems, and the way to
    send the ``valid`` rest anyway (replay and import say it alike)."""
    more = invalid - len(problems)
    return (
        f"{invalid} invalid {lines} in {path}, nothing sent:\n"
        + "\n".join(problems)
        + (f"\n... and {more} more" if more > 0 else "")
        + f"\nhint: fix them, or give --skip-invalid to send the valid {valid}"
    )


@dataclass
class ReplayReport:
    """What a replay found in the file and what it sent (by topic)."""

    valid: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)  # the first few, "file:line: reason"
    sent: Counter[str] = field(default_factory=Counter)

    MAX_PROBLEMS = 20


def check_line(s: Settings, raw: bytes) -> Record:
    """The (topic, key, value) to send for one line, or :class:`InvalidEvent` saying why not: the
    same contract the worker checks, so nothing valid here is dead-lettered there."""
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidEvent(f"not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise InvalidEvent("expected a JSON object")
    account = obj.get("account_id")
    key = account.encode() if isinstance(account, str) else b""
    event = parse_event(raw, key)
    return s.topic(TYPE_TOPIC[event.type]), key, raw


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.strip()
            if raw:
                yield lineno, raw


def scan_file(s: Settings, path: Path) -> ReplayReport:
    """Validate every line (nothing is sent): counts and the first problems."""
    report = ReplayReport()
    for lineno, raw in _lines(path):
        try:
            check_line(s, raw)
            report.valid += 1
        except InvalidEvent as exc:
            report.invalid += 1
            if len(report.problems) < ReplayReport.MAX_PROBLEMS:
                report.problems.append(f"{path}:{lineno}: {exc.reason}")
    return report


async def send_file(
    s: Settings,
    path: Path,
    report: ReplayReport,
    rate: float | None = None,
    skip_invalid: bool = False,
    on_sent: Callable[[Record], None] | None = None,
) -> ReplayReport:
    """Send the valid lines of a file :func:`scan_file` has checked (refused if any was invalid,
    unless ``skip_invalid``)."""
    if report.invalid and not skip_invalid:
        raise ReplayError(nothing_sent(report.invalid, report.problems, path, "line(s)", "lines"))

    def records() -> Iterator[Record]:
        for _, raw in _lines(path):
            try:
                yield check_line(s, raw)
            except InvalidEvent:
                continue

    def sent(record: Record) -> None:
        report.sent[record[0]] += 1
        if on_sent is not None:
            on_sent(record)

    await produce_events(s, records(), rate, on_sent=sent)
    return report


def event_records(s: Settings, events: Iterable[dict]) -> Iterator[Record]:
    for obj in events:
        topic, key = route(s, obj, f"event {obj.get('event_id')!r}")
        yield topic, key, orjson.dumps(obj)
