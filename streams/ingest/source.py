"""The one small interface every ingest source implements, and the helpers they share.

A source is pure: ``verify`` checks a request's signature or key (the wall-clock time is passed in),
``parse`` turns the verified body into contract-v1 events. Neither touches Kafka nor the clock, so each
is tested on the vendors' published payloads alone; the service (streams/ingest/service.py) does the IO.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from pydantic import ValidationError

from streams.core.events import EVENT_ADAPTER, Event


class Unauthorized(Exception):
    """Bad or missing signature, key or timestamp: 401, nothing written. The message never holds a secret."""


class Rejected(ValueError):
    """A verified request that breaks the contract: it goes to the dead-letter topic with this reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Parsed:
    """What one request became: the events to produce and the parts that break the contract (``problems``:
    one reason per rejected message; a batch may have both)."""

    __slots__ = ("events", "ignored", "problems")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.problems: list[str] = []
        self.ignored = 0  # messages the mapping does not turn into events (not an error)


class Source(Protocol):
    """One kind of sender (Segment, Stripe, Zendesk, a generic webhook)."""

    name: str
    #: The status for a verified request that breaks the contract, by the sender's retry rules: a 2xx
    #: for senders that retry every other status for days (Stripe), a 4xx for those that do not retry it.
    invalid_status: int

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise :class:`Unauthorized` unless the request is signed (or keyed) by the configured secret."""

    def parse(self, headers: Mapping[str, str], body: bytes, now: float) -> Parsed:
        """The contract events of a verified request; raise :class:`Rejected` if none can be made."""


# --- helpers -----------------------------------------------------------------------------------


def load_object(body: bytes) -> dict[str, Any]:
    try:
        obj = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise Rejected(f"body is not JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Rejected("body is not a JSON object")
    return obj


_MISSING = object()


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    """``obj["a"]["b"][0]`` for ``"a.b.0"``; ``default`` when any step is missing."""
    cur = obj
    for part in path.split("."):
        if isinstance(cur, Mapping):
            cur = cur.get(part, _MISSING)
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            return default
        if cur is _MISSING or cur is None:
            return default
    return cur


def first_path(obj: Any, paths: Sequence[str]) -> Any:
    for p in paths:
        value = get_path(obj, p)
        if value not in (None, ""):
            return value
    return None


def as_id(value: Any) -> str | None:
    """An id as the contract wants it: a non-empty string (Zendesk and Stripe ids may be numbers)."""
    if value is None or isinstance(value, bool):
        return None
    text = str(value)
    return text or None


def utc_from_epoch(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


def to_event(fields: dict[str, Any]) -> Event:
    """Validate one event against contract v1 (the same adapter the worker uses), or raise Rejected."""
    try:
        return EVENT_ADAPTER.validate_python(fields)
    except ValidationError as exc:
        errs = exc.errors(include_url=False)
        why = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(event)'}: {e['msg']}" for e in errs[:5])
        raise Rejected(f"breaks contract v1 ({fields.get('type')!r}): {why}") from None


def hmac_sha256(secret: str, message: bytes) -> bytes:
    return hmac.new(secret.encode(), message, hashlib.sha256).digest()


def same(a: bytes | str, b: bytes | str) -> bool:
    """Constant-time comparison (a signature check must not leak how much of it matched)."""
    return hmac.compare_digest(
        a.encode() if isinstance(a, str) else a, b.encode() if isinstance(b, str) else b
    )


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 / ISO 8601 time (a trailing Z included) or epoch seconds; None if it is neither."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return datetime.fromtimestamp(float(value), UTC)
    if isinstance(value, str) and value:
        text = value.strip()
        try:
            dt = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
        except ValueError:
            try:
                return datetime.fromtimestamp(float(text), UTC)
            except ValueError:
                return None
        return dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    return None
