"""Zendesk webhooks: ticket events as the contract's ticket events.

Signed the Zendesk way: ``X-Zendesk-Webhook-Signature`` is base64(HMAC-SHA256(secret, timestamp + body))
with ``X-Zendesk-Webhook-Signature-Timestamp``; a timestamp outside the tolerance is refused (replays).

Ticket event webhooks (``zen:event-type:ticket.created``, ``ticket.comment_added``,
``ticket.status_changed``) carry the payload id, which becomes ``event_id``. Zendesk has no such event
for a satisfaction rating, so it comes from a trigger ("Satisfaction is ...") whose JSON body is
``{"type": "zen:healthmon:satisfaction_rating", "ticket_id": "{{ticket.id}}", "organization_id":
"{{ticket.organization.id}}", "rating": "{{satisfaction.current_rating}}", "time":
"{{ticket.updated_at_with_timestamp}}"}`` (README); good/bad becomes CSAT 5/1, a 1-5 score passes.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.ingest.config import ZendeskConfig
from streams.ingest.source import (
    Parsed,
    Rejected,
    Unauthorized,
    as_id,
    first_path,
    get_path,
    hmac_sha256,
    load_object,
    parse_time,
    same,
    to_event,
)

PREFIX = "zen:event-type:ticket."
SATISFACTION = "zen:healthmon:satisfaction_rating"
_OPEN = ("NEW", "OPEN", "PENDING", "HOLD")
_DONE = ("SOLVED", "CLOSED")


def zendesk_signature(secret: str, timestamp: str, body: bytes) -> str:
    return base64.b64encode(hmac_sha256(secret, timestamp.encode() + body)).decode()


def _status(value: Any) -> str:
    if isinstance(value, dict):  # some payloads nest it: {"status": "Open"}
        value = value.get("status")
    return str(value or "").upper()


class ZendeskSource:
    name = "zendesk"
    # Zendesk retries 409, 429 and 5xx only: a payload that can never be valid gets a 400.
    invalid_status = 400

    def __init__(self, cfg: ZendeskConfig, secret: str | None, tolerance_s: float = 300.0) -> None:
        self.cfg = cfg
        self._secret = secret
        self.tolerance = tolerance_s

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        sig = headers.get("X-Zendesk-Webhook-Signature")
        ts = headers.get("X-Zendesk-Webhook-Signature-Timestamp")
        if not self._secret or not sig or not ts:
            raise Unauthorized("X-Zendesk-Webhook-Signature and -Timestamp are required")
        when = parse_time(ts)
        if when is None or abs(now - when.timestamp()) > self.tolerance:
            raise Unauthorized(
                f"signature timestamp {ts[:40]!r} is outside the {self.tolerance:g} s tolerance"
            )
        try:
            given = base64.b64decode(sig, validate=True)
        except (binascii.Error, ValueError):
            raise Unauthorized("signature is not base64") from None
        if not same(given, hmac_sha256(self._secret, ts.encode() + body)):
            raise Unauthorized("signature does not match")

    def _account(self, payload: dict[str, Any]) -> str:
        raw = as_id(first_path(payload, self.cfg.account_from))
        if raw is None or raw == "0":  # Zendesk's "no organization"
            raise Rejected("no account: none of " + ", ".join(self.cfg.account_from) + " is set")
        return self.cfg.accounts.get(raw, raw)

    def parse(self, headers: Mapping[str, str], body: bytes, now: float) -> Parsed:
        p = load_object(body)
        out = Parsed()
        kind = str(p.get("type") or "")
        fields = self._fields(p, kind, now)
        if fields is None:
            out.ignored += 1
        else:
            out.events.append(to_event(fields))
        return out

    def _fields(self, p: dict[str, Any], kind: str, now: float) -> dict[str, Any] | None:
        if kind == SATISFACTION:
            return self._satisfaction(p, now)
        if not kind.startswith(PREFIX):
            return None
        what = kind[len(PREFIX) :]
        if what not in ("created", "comment_added", "status_changed"):
            return None
        ticket = as_id(get_path(p, "detail.id")) or as_id(str(p.get("subject", "")).rpartition(":")[2])
        event_id = as_id(p.get("id"))
        when = parse_time(p.get("time")) or parse_time(get_path(p, "detail.updated_at"))
        if event_id is None or ticket is None or when is None:
            raise Rejected("not a Zendesk ticket event: id, time and detail.id are required")
        base = {
            "event_id": event_id,
            "account_id": self._account(p),
            "occurred_at": when.isoformat(),
            "ticket_id": ticket,
        }
        if what == "created":
            raw = str(get_path(p, "detail.priority") or "").lower()
            priority = self.cfg.priorities.get(raw) if raw else self.cfg.default_priority
            if priority is None:
                raise Rejected(
                    f"priority {raw!r} is not in the configured priorities {sorted(self.cfg.priorities)}"
                )
            return {**base, "type": "ticket_opened", "priority": priority}
        if what == "comment_added":
            staff = get_path(p, "event.comment.author.is_staff")
            if not isinstance(staff, bool):
                raise Rejected("event.comment.author.is_staff is missing: agent or customer is unknown")
            return {**base, "type": "ticket_replied", "author": "agent" if staff else "customer"}
        current, previous = _status(get_path(p, "event.current")), _status(get_path(p, "event.previous"))
        if current == "SOLVED":
            return {**base, "type": "ticket_resolved"}
        if previous in _DONE and current in _OPEN:
            return {**base, "type": "ticket_reopened"}
        return None  # open -> pending, solved -> closed, ...: no contract event

    def _satisfaction(self, p: dict[str, Any], now: float) -> dict[str, Any]:
        ticket = as_id(p.get("ticket_id"))
        rating = str(p.get("rating") or "").strip().lower()
        if rating.startswith("good"):
            score: Any = 5
        elif rating.startswith("bad"):
            score = 1
        elif rating.isdigit():
            score = int(rating)
        else:
            raise Rejected(f"rating {rating[:40]!r} is neither good/bad nor a 1-5 score")
        when = parse_time(p.get("time")) or datetime.fromtimestamp(now, UTC)
        event_id = as_id(p.get("id")) or f"zendesk-csat-{ticket}-{int(when.timestamp())}"
        return {
            "event_id": event_id,
            "account_id": self._account(p),
            "occurred_at": when.isoformat(),
            "type": "csat",
            "ticket_id": ticket,
            "score": score,
        }
