"""A generic signed JSON webhook whose fields are mapped by configuration: other help desks (Intercom,
Freshdesk) and survey tools (NPS, CES) without a source of their own, at ``POST /v1/webhooks/{name}``.

Signature: ``X-Healthmon-Timestamp: <unix seconds>`` and ``X-Healthmon-Signature: sha256=<hex>``, the
HMAC-SHA256 of ``f"{timestamp}.{body}"`` with the webhook secret (Stripe's scheme: a replayed request
with an old timestamp is refused). Most tools can sign that way in a small relay or workflow step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from streams.ingest.config import WebhookConfig
from streams.ingest.source import (
    Parsed,
    Rejected,
    Unauthorized,
    get_path,
    hmac_sha256,
    load_object,
    parse_time,
    same,
    to_event,
)

SIGNATURE = "X-Healthmon-Signature"
TIMESTAMP = "X-Healthmon-Timestamp"
_TIME_FIELDS = ("occurred_at", "signed_up_at")


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    return "sha256=" + hmac_sha256(secret, timestamp.encode() + b"." + body).hex()


class WebhookSource:
    invalid_status = 422  # the request is well-formed but cannot be an event: a sender should not retry it

    def __init__(self, name: str, cfg: WebhookConfig, secret: str | None, tolerance_s: float = 300.0) -> None:
        self.name = f"webhook/{name}"
        self.cfg = cfg
        self._secret = secret
        self.tolerance = tolerance_s

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        sig, ts = headers.get(SIGNATURE), headers.get(TIMESTAMP)
        if not self._secret or not sig or not ts:
            raise Unauthorized(f"{SIGNATURE} and {TIMESTAMP} are required")
        try:
            age = abs(now - float(ts))
        except ValueError:
            raise Unauthorized(f"{TIMESTAMP} is not unix seconds") from None
        if age > self.tolerance:
            raise Unauthorized(f"{TIMESTAMP} is outside the {self.tolerance:g} s tolerance")
        if not same(sig, webhook_signature(self._secret, ts, body)):
            raise Unauthorized("signature does not match")

    def parse(self, headers: Mapping[str, str], body: bytes, now: float) -> Parsed:
        obj = load_object(body)
        items: Any = [obj]
        if self.cfg.items_from:
            items = get_path(obj, self.cfg.items_from)
            if not isinstance(items, list):
                raise Rejected(f"{self.cfg.items_from}: expected a list")
        out = Parsed()
        for i, item in enumerate(items):
            try:
                out.events.append(to_event(self.fields(item)))
            except Rejected as exc:
                out.problems.append(f"item {i}: {exc.reason}" if self.cfg.items_from else exc.reason)
        if not out.events and out.problems:
            raise Rejected("; ".join(out.problems[:10]))
        return out

    def fields(self, item: Any) -> dict[str, Any]:
        fields: dict[str, Any] = {"type": self.cfg.type}
        for name in self.cfg.fields:
            spec = self.cfg.field(name)
            value = spec.value if spec.path is None else get_path(item, spec.path)
            if spec.map and value is not None:
                value = spec.map.get(str(value), value)
            if name in _TIME_FIELDS and value is not None:
                when = parse_time(value)
                value = when.isoformat() if when else value
            elif name in ("event_id", "account_id", "ticket_id", "user_id") and isinstance(
                value, int | float
            ):
                value = str(value)
            elif name == "score" and isinstance(value, str) and value.strip().lstrip("-").isdigit():
                value = int(value)  # survey tools often send the score as text; the contract wants a number
            if value is not None:
                fields[name] = value
        return fields
