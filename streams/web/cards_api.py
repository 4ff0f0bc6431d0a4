"""Scorecard promotion on ``healthmon serve`` (docs/promotion.md): the card in force, the open
proposal with its verdict, the history; accept a proposal, roll back a promotion.

Each request reads the card topic whole (a handful of records) and lets :class:`CardBook` decide: a
refused decision (unknown version 404, not the open proposal or nothing to roll back 409, a bad body
400) produces nothing. An accepted decision is produced, then its one change event, and answered 202:
the worker applies it from ``effective_from`` (event time; default: now, which in live mode is where
the stream is; a replay names the time it means).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiohttp import web
from aiokafka.errors import KafkaError
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from streams.core.cards import CardBook, CardChange, CardRecord, CardRefused
from streams.core.scoring import ScoringConfig
from streams.settings import Settings


class CardStore(Protocol):
    async def read(self) -> CardBook: ...

    async def publish(self, record: CardRecord, change: CardChange | None) -> None: ...


class KafkaCardStore:
    """The card topic on the broker (streams/broker/cards.py)."""

    def __init__(self, s: Settings, base: ScoringConfig) -> None:
        self.s, self.base = s, base

    async def read(self) -> CardBook:
        from streams.broker.cards import read_book

        return await read_book(self.s, self.base)

    async def publish(self, record: CardRecord, change: CardChange | None) -> None:
        from streams.broker.cards import publish

        await publish(self.s, record, change)


CARDS = web.AppKey("cards", CardStore)  # type: ignore[type-abstract]


class Decision(BaseModel):
    """Who decides and why; ``effective_from``: the event time the decision takes effect (default now)."""

    model_config = ConfigDict(extra="forbid")

    by: str = Field(min_length=1, max_length=254)
    reason: str = Field(default="", max_length=1000)
    effective_from: AwareDatetime | None = None


def _card(record: CardRecord | None) -> dict[str, Any] | None:
    """A decision as the API shows it: ``version`` the card decided about (for a rollback, the one
    rolled back), ``card_version`` the card in force from ``effective_from`` on."""
    if record is None:
        return None
    body = record.model_dump(mode="json", exclude={"config"})
    body["card_version"] = record.config.card_version
    if record.effective_from is not None:
        body["effective_from_iso"] = datetime.fromtimestamp(record.effective_from, UTC).isoformat()
    return body


def cards_view(book: CardBook) -> dict[str, Any]:
    """What GET /api/cards answers: the card of the last decision (``in_force``; it may take effect at
    an event time the stream has not reached), the open proposal (its verdict has the count of accounts
    that would change band), and every decision newest first."""
    changes = book.changes
    last = changes[-1] if changes else None
    in_force: dict[str, Any] = {
        "version": book.base.card_version,
        "status": "configured",
        "effective_from": None,
    }
    if last is not None:
        decision = _card(last) or {}
        in_force = {
            "version": last.config.card_version,
            "status": last.status,
            "effective_from": last.effective_from,
            "effective_from_iso": decision.get("effective_from_iso"),
            "decision": decision,
        }
    return {
        "in_force": in_force,
        "proposed": _card(book.proposed()),
        "can_roll_back": bool(book.standing()),
        "history": [_card(r) for r in reversed(book.records)],
    }


async def _decision(request: web.Request) -> Decision:
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        raise web.HTTPBadRequest(text=f"the body is not JSON: {exc}") from None
    return Decision.model_validate(body)


def _when(d: Decision) -> int:
    return int(d.effective_from.timestamp()) if d.effective_from is not None else int(time.time())


async def _apply(request: web.Request, decide: Any) -> web.Response:
    from streams.web.server import json_response

    store = request.app[CARDS]
    book = await _read(store)
    try:
        record = decide(book)
    except CardRefused as exc:
        raise _refused(exc) from None
    change = book.change_event(record)
    try:
        await store.publish(record, change)
    except (KafkaError, OSError, TimeoutError) as exc:
        raise web.HTTPServiceUnavailable(
            text=f"the decision could not be recorded ({exc!r}); check GET /api/cards"
        ) from None
    book.add([record])
    return json_response({"record": _card(record), "change": change.model_dump(mode="json")}, 202)


def _refused(exc: CardRefused) -> web.HTTPException:
    cls = web.HTTPNotFound if exc.status == 404 else web.HTTPConflict
    return cls(text=str(exc))


async def _read(store: CardStore) -> CardBook:
    try:
        return await store.read()
    except ValueError as exc:  # no card topic
        raise web.HTTPServiceUnavailable(text=f"{exc}: create it with `healthmon topics create`") from None
    except (KafkaError, OSError, TimeoutError) as exc:
        raise web.HTTPServiceUnavailable(text=f"the card topic cannot be read ({exc!r})") from None


async def cards_get(request: web.Request) -> web.Response:
    from streams.web.server import json_response

    return json_response(cards_view(await _read(request.app[CARDS])))


async def card_accept(request: web.Request) -> web.Response:
    d = await _decision(request)
    version = request.match_info["version"]
    now = datetime.now(UTC)
    return await _apply(request, lambda book: book.accept(version, _when(d), d.by, d.reason, now))


async def card_rollback(request: web.Request) -> web.Response:
    d = await _decision(request)
    now = datetime.now(UTC)
    return await _apply(request, lambda book: book.rollback(_when(d), d.by, d.reason, now))


def add_routes(app: web.Application, s: Settings, base: ScoringConfig) -> None:
    if CARDS not in app:
        app[CARDS] = KafkaCardStore(s, base)
    app.router.add_get("/api/cards", cards_get)
    app.router.add_post("/api/cards/rollback", card_rollback)
    app.router.add_post("/api/cards/{version}/accept", card_accept)


def openapi_paths(ok: Any, json_body: Any) -> tuple[dict, dict]:
    """(paths, component schemas) for the OpenAPI document."""
    comps: dict[str, Any] = {}
    schema = Decision.model_json_schema(ref_template="#/components/schemas/{model}")
    comps.update(schema.pop("$defs", {}))
    comps["CardDecision"] = schema
    refused = {
        "404": {"description": "no such card", **json_body("Error")},
        "409": {
            "description": "refused (not the open proposal, nothing to roll back, "
            "effective_from before the last change); nothing changed",
            **json_body("Error"),
        },
    }
    accepted = {
        "202": {
            "description": "recorded on the card topic, with its change event",
            **json_body({"type": "object"}),
        }
    }
    paths = {
        "/api/cards": {
            "get": {
                "summary": "Scorecards: the card in force, the open proposal with its verdict (held-out AUC "
                "and intervals, accounts that would change band) and every decision",
                "responses": ok("cards", {"type": "object"}),
            }
        },
        "/api/cards/{version}/accept": {
            "post": {
                "summary": "Accept the open proposal: in force from effective_from (event time; default now)",
                "parameters": [
                    {"name": "version", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "requestBody": {"required": True, **json_body("CardDecision")},
                "responses": {**accepted, **ok("", "Error"), **refused},
            }
        },
        "/api/cards/rollback": {
            "post": {
                "summary": "Roll back the last promotion still standing: the card before it, from effective_from",
                "requestBody": {"required": True, **json_body("CardDecision")},
                "responses": {**accepted, **ok("", "Error"), "409": refused["409"]},
            }
        },
    }
    return paths, comps
