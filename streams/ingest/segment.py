"""Segment's HTTP tracking API (``/v1/track``, ``/v1/identify``, ``/v1/group``, ``/v1/batch``).

Anything that sends "the Segment way" (Segment, RudderStack, Jitsu, the analytics libraries) can feed
healthmon. The write key is the HTTP basic-auth username (or ``writeKey`` in the body, as Segment also
accepts); ``messageId`` becomes ``event_id``, so a library's retries are de-duplicated by the worker.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from streams.ingest.config import SegmentConfig, TrackRule
from streams.ingest.source import (
    Parsed,
    Rejected,
    Unauthorized,
    as_id,
    first_path,
    get_path,
    load_object,
    parse_time,
    same,
    to_event,
)

#: The HTTP API's calls, and ``segment``: any one message, its ``type`` saying which (what Segment's own
#: webhook destination sends to a single URL).
CALLS = ("track", "identify", "group", "batch", "segment")
_UNITS = {"s": 1.0, "ms": 0.001, "min": 60.0}
_SEGMENTS = ("smb", "mid_market", "enterprise")


def basic_auth_user(header: str | None) -> str | None:
    if not header or not header.lower().startswith("basic "):
        return None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None
    return decoded.split(":", 1)[0]


class SegmentSource:
    """One Segment call kind (the path says which): ``track``, ``identify``, ``group`` or ``batch``."""

    name = "segment"
    # Segment's libraries retry 5xx and 429 only: a message that can never be valid gets a 400.
    invalid_status = 400

    def __init__(self, cfg: SegmentConfig, write_keys: list[str], call: str) -> None:
        # No write key (``healthmon import events`` parses files, it verifies nothing): verify refuses all.
        if call not in CALLS:
            raise ValueError(f"unknown Segment call {call!r}")
        self.cfg = cfg
        self.keys = [k.encode() for k in write_keys]
        self.call = call

    def _known(self, key: str | None) -> bool:
        if not key:
            return False
        raw = key.encode()
        matches = [same(raw, k) for k in self.keys]  # every key compared: the time says nothing of which
        return any(matches)

    def verify(self, headers: Mapping[str, str], body: bytes, now: float) -> None:
        if self._known(basic_auth_user(headers.get("Authorization"))):
            return
        # Segment also takes the key in the body; only worth a look when the header did not have it.
        if b'"writeKey"' in body:
            try:
                key = load_object(body).get("writeKey")
            except Rejected:
                key = None
            if isinstance(key, str) and self._known(key):
                return
        raise Unauthorized("missing or unknown write key")

    def parse(self, headers: Mapping[str, str], body: bytes, now: float) -> Parsed:
        obj = load_object(body)
        out = Parsed()
        if self.call == "batch":
            batch = obj.get("batch")
            if not isinstance(batch, list):
                raise Rejected("batch: expected a list of messages")
            shared = obj.get("context") if isinstance(obj.get("context"), dict) else None
            for i, msg in enumerate(batch):
                if not isinstance(msg, dict):
                    out.problems.append(f"batch[{i}]: not an object")
                    continue
                if shared:
                    msg = {**msg, "context": {**shared, **(msg.get("context") or {})}}
                self._one(msg, str(msg.get("type") or ""), now, out, f"batch[{i}]")
        elif self.call == "segment":
            self._one(obj, str(obj.get("type") or ""), now, out, "message")
        else:
            self._one(obj, self.call, now, out, self.call)
        if not out.events and out.problems:
            raise Rejected("; ".join(out.problems[:10]))
        return out

    def _one(self, msg: dict[str, Any], call: str, now: float, out: Parsed, where: str) -> None:
        try:
            fields = self._fields(msg, call, now)
        except Rejected as exc:
            out.problems.append(f"{where} (messageId {msg.get('messageId')!r}): {exc.reason}")
            return
        if fields is None:
            out.ignored += 1
            return
        try:
            out.events.append(to_event(fields))
        except Rejected as exc:
            out.problems.append(f"{where} (messageId {msg.get('messageId')!r}): {exc.reason}")

    def _fields(self, msg: dict[str, Any], call: str, now: float) -> dict[str, Any] | None:
        if call == "track":
            rule = self.cfg.track.get(str(msg.get("event")))
            if rule is None:
                return None
            return self._track(msg, rule, now)
        if call == "group":
            return self._group(msg, now) if self.cfg.group else None
        if call in ("identify", "page", "screen", "alias"):
            return None  # nothing in contract v1 to carry them
        raise Rejected(f"unknown message type {call!r}")

    def _common(self, msg: dict[str, Any], now: float, account: Any) -> dict[str, Any]:
        event_id = as_id(msg.get("messageId"))
        if event_id is None:
            raise Rejected("messageId is missing: it is the event_id that de-duplicates retries")
        if as_id(account) is None:
            raise Rejected("no account: none of " + ", ".join(self.cfg.account_from) + " is set")
        ts = msg.get("timestamp") or msg.get("originalTimestamp")
        when = parse_time(ts) if ts is not None else datetime.fromtimestamp(now, UTC)
        if when is None:
            raise Rejected(f"timestamp {ts!r} is not an ISO 8601 time")
        return {"event_id": event_id, "account_id": as_id(account), "occurred_at": when.isoformat()}

    def _track(self, msg: dict[str, Any], rule: TrackRule, now: float) -> dict[str, Any]:
        fields = self._common(msg, now, first_path(msg, self.cfg.account_from))
        user = as_id(msg.get("userId")) or as_id(msg.get("anonymousId"))
        fields.update(type=rule.type, user_id=user)
        if rule.type == "feature_used":
            fields["feature"] = (
                rule.feature if rule.feature is not None else get_path(msg, rule.feature_from or "")
            )
        elif rule.type == "session":
            raw = get_path(msg, rule.duration_from or "")
            if isinstance(raw, int | float) and not isinstance(raw, bool):
                fields["duration_s"] = float(raw) * _UNITS[rule.duration_unit]
            else:
                fields["duration_s"] = raw  # the contract check says what is wrong with it
        return fields

    def _group(self, msg: dict[str, Any], now: float) -> dict[str, Any]:
        g = self.cfg.group
        assert g is not None
        fields = self._common(msg, now, msg.get("groupId"))
        traits: dict[str, Any] = msg["traits"] if isinstance(msg.get("traits"), dict) else {}
        segment = traits.get(g.segment)
        segment = g.segment_values.get(str(segment), segment)
        signed_up = parse_time(traits.get(g.signed_up_at))
        fields.update(
            type="account",
            name=traits.get(g.name),
            segment=segment,
            csm_name=traits.get(g.csm_name),
            csm_email=traits.get(g.csm_email),
            signed_up_at=signed_up.isoformat() if signed_up else traits.get(g.signed_up_at),
        )
        return fields
