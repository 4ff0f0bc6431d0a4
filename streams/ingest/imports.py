"""``healthmon import accounts|events``: a team's CRM export and its history, through the ingest path.

Files are read with the same source modules as the HTTP service (a Stripe event, a Segment message, a
Zendesk payload or a contract event per JSON line), checked whole before anything is sent, then sent
through the service's :class:`~streams.ingest.sink.Sink` (acks from all replicas). Source ids stay the
``event_id``; an imported account row gets an id from its content, so importing the same file twice
changes nothing and a changed row is a new profile.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from streams.broker.producer import nothing_sent
from streams.core.events import TYPE_TOPIC, Event
from streams.ingest.config import IngestConfig
from streams.ingest.segment import SegmentSource
from streams.ingest.sink import Sink, record
from streams.ingest.source import Parsed, Rejected, Source, parse_time, to_event
from streams.ingest.stripe_webhooks import StripeSource
from streams.ingest.webhook import WebhookSource
from streams.ingest.zendesk import ZendeskSource


class ImportFailed(ValueError):
    """The file cannot be imported as asked; the message says where and why."""


#: Account fields a CSV column can fill: the contract's, and two it keeps as extra fields until it names them.
ACCOUNT_FIELDS = (
    "account_id",
    "name",
    "segment",
    "csm_name",
    "csm_email",
    "slack_channel",
    "signed_up_at",
    "renewal_date",
    "executive_sponsor",
)
REQUIRED_COLUMNS = ("account_id", "name", "segment", "csm_name", "csm_email", "signed_up_at")
SEGMENT_ALIASES = {
    "smb": "smb",
    "mid_market": "mid_market",
    "mid-market": "mid_market",
    "enterprise": "enterprise",
}


@dataclass
class Report:
    """What a file held: events by topic kind, rows/lines ignored, and the first problems (file:line: why)."""

    events: int = 0
    ignored: int = 0
    invalid: int = 0
    problems: list[str] = field(default_factory=list)
    sent: int = 0

    MAX_PROBLEMS = 20

    def problem(self, where: str, reason: str) -> None:
        self.invalid += 1
        if len(self.problems) < self.MAX_PROBLEMS:
            self.problems.append(f"{where}: {reason}")

    def refuse_if_invalid(self, path: Path, skip_invalid: bool) -> None:
        if self.invalid and not skip_invalid:
            raise ImportFailed(nothing_sent(self.invalid, self.problems, path, "row(s)/line(s)", "ones"))


# --- accounts from a CSV -----------------------------------------------------------------------


def account_rows(
    path: Path,
    columns: dict[str, str],
    segment_values: dict[str, str],
    as_of: datetime,
    report: Report,
) -> Iterator[Event]:
    """One ``account`` event per CSV row. ``columns``: field -> column name (missing fields: same name)."""
    unknown = sorted(set(columns) - set(ACCOUNT_FIELDS))
    if unknown:
        raise ImportFailed(f"unknown account field(s) {unknown}; fields: {', '.join(ACCOUNT_FIELDS)}")
    with path.open(newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        mapping = {f: columns.get(f, f) for f in ACCOUNT_FIELDS}
        missing = [f"{f} (column {mapping[f]!r})" for f in REQUIRED_COLUMNS if mapping[f] not in header]
        if missing:
            raise ImportFailed(
                f"{path}:1: the header has no column for {', '.join(missing)}; columns: {header}; "
                "map them with --column FIELD=COLUMN"
            )
        values = {k.lower(): v for k, v in {**SEGMENT_ALIASES, **segment_values}.items()}
        for row in reader:
            where = f"{path}:{reader.line_num}"
            fields: dict[str, Any] = {"type": "account"}
            for f, col in mapping.items():
                value = (row.get(col) or "").strip()
                if value:
                    fields[f] = value
            if "segment" in fields:
                fields["segment"] = values.get(fields["segment"].lower(), fields["segment"])
            for f in ("signed_up_at",):
                when = parse_time(fields.get(f))
                if when is not None:
                    fields[f] = when.isoformat()
            digest = hashlib.sha256(orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)).hexdigest()[:20]
            fields["event_id"] = f"import-account-{fields.get('account_id', '')}-{digest}"
            fields["occurred_at"] = as_of.isoformat()
            try:
                event = to_event(fields)
            except Rejected as exc:
                report.problem(where, exc.reason)
                continue
            report.events += 1
            yield event


# --- events from JSON lines --------------------------------------------------------------------

FORMATS = ("auto", "contract", "segment", "stripe", "zendesk")
_SEGMENT_TYPES = ("track", "identify", "group", "page", "screen", "alias")


class LineParser:
    """Turns one JSON line of any source's format (or a contract event) into events, without verifying:
    the file comes from the operator, not from the network."""

    def __init__(self, cfg: IngestConfig, fmt: str) -> None:
        if fmt not in FORMATS and not fmt.startswith("webhook:"):
            raise ImportFailed(f"--format {fmt!r}: one of {', '.join(FORMATS)} or webhook:NAME")
        self.cfg, self.fmt = cfg, fmt
        self._sources: dict[str, Source] = {}

    def source(self, kind: str) -> Source:
        if kind not in self._sources:
            self._sources[kind] = self._make(kind)
        return self._sources[kind]

    def _make(self, kind: str) -> Source:
        c = self.cfg
        if kind.startswith("segment:") and c.segment is not None:
            return SegmentSource(c.segment, [], kind.split(":", 1)[1])
        if kind == "stripe" and c.stripe is not None:
            return StripeSource(c.stripe, None)
        if kind == "zendesk" and c.zendesk is not None:
            return ZendeskSource(c.zendesk, None)
        if kind.startswith("webhook:") and kind[8:] in c.webhooks:
            return WebhookSource(kind[8:], c.webhooks[kind[8:]], None)
        raise Rejected(
            f"the ingest configuration has no mapping for {kind.split(':')[0]} (HEALTHMON_INGEST_CONFIG)"
        )

    def detect(self, obj: dict[str, Any]) -> str:
        kind = obj.get("type")
        if self.fmt == "contract" or (self.fmt == "auto" and "event_id" in obj and kind in TYPE_TOPIC):
            return "contract"
        if self.fmt == "stripe" or (self.fmt == "auto" and obj.get("object") == "event" and "data" in obj):
            return "stripe"
        if self.fmt == "zendesk" or (self.fmt == "auto" and str(kind).startswith("zen:")):
            return "zendesk"
        if self.fmt.startswith("webhook:"):
            return self.fmt
        if self.fmt in ("segment", "auto"):
            if "batch" in obj:
                return "segment:batch"
            if kind in _SEGMENT_TYPES:
                # page/screen/alias: nothing in contract v1 carries them; identify ignores them alike.
                return f"segment:{kind if kind in ('track', 'group') else 'identify'}"
            if self.fmt == "segment" and "event" in obj:
                return "segment:track"
        raise Rejected(
            "format not recognised (contract event, Stripe event, Segment message or Zendesk payload): give --format"
        )

    def parse(self, raw: bytes, now: float) -> Parsed:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise Rejected(f"not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise Rejected("expected a JSON object")
        kind = self.detect(obj)
        if kind == "contract":
            parsed = Parsed()
            parsed.events.append(to_event(obj))
            return parsed
        return self.source(kind).parse({}, raw, now)


def event_lines(path: Path, parser: LineParser, now: float, report: Report) -> Iterator[Event]:
    with path.open("rb") as fh:
        for lineno, raw in enumerate(fh, 1):
            raw = raw.strip()
            if not raw:
                continue
            try:
                parsed = parser.parse(raw, now)
            except Rejected as exc:
                report.problem(f"{path}:{lineno}", exc.reason)
                continue
            for problem in parsed.problems:
                report.problem(f"{path}:{lineno}", problem)
            report.ignored += parsed.ignored
            report.events += len(parsed.events)
            yield from parsed.events


async def send_all(
    sink: Sink, events: Iterator[Event], on_sent: Callable[[int], None] | None = None, chunk: int = 1000
) -> int:
    """Send in chunks, each acknowledged by all replicas before the next (BrokerUnavailable otherwise)."""
    sent = 0
    buf: list[Event] = []

    async def flush() -> None:
        nonlocal sent
        await sink.send([(*record(sink.s, e), None) for e in buf])
        sent += len(buf)
        if on_sent is not None:
            on_sent(len(buf))
        buf.clear()

    for event in events:
        buf.append(event)
        if len(buf) >= chunk:
            await flush()
    if buf:
        await flush()
    return sent


def parse_pairs(pairs: Sequence[str], what: str) -> dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}`` (command-line mappings)."""
    out: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ImportFailed(f"{what} {pair!r}: expected KEY=VALUE")
        out[key.strip()] = value.strip()
    return out
