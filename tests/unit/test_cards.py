"""The card schedule and the promotion book (streams/core/cards.py): which card scores which event
time, and which decisions the book refuses."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from rules.engine import DEFAULT_RULES, load_rules
from streams.core.cards import CardBook, CardChange, CardRecord, CardRefused, CardSchedule
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import Bands, ScoringConfig, load_scoring
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from tests.helpers import at
from tests.integration.test_scoring_kafka import healthy_month

NOW = datetime(2026, 1, 1, tzinfo=UTC)
BASE = load_scoring()
#: Everything red below 99: a healthy account changes band the moment this card is in force.
STRICT = BASE.model_copy(
    update={
        "default": BASE.default.model_copy(update={"bands": Bands(red_below=99, yellow_below=99.5)}),
        "segments": {},
    }
)


def ts(days: float) -> int:
    return int(datetime.fromisoformat(at(days)).timestamp())


def test_the_schedule_picks_the_card_by_event_time() -> None:
    other = BASE.model_copy(update={"revision": "v2"})
    sched = CardSchedule(BASE, [(200, BASE.model_copy(update={"revision": "v3"})), (100, other)])
    assert [sched.at(t).card_version for t in (99, 100, 199, 200, 10**9)] == [
        BASE.card_version,
        "v2",
        "v2",
        "v3",
        "v3",
    ]
    assert (sched.since(99), sched.since(150)) == (None, 100)


def _run(engine: Engine) -> tuple[list[dict], list[dict]]:
    evs = [EVENT_ADAPTER.validate_python(e) for e in healthy_month("acc-1")]
    outs: list[Output] = []
    run_offline(evs, engine, on_output=outs.append)
    snaps = [orjson.loads(v) for o in outs for topic, _, v, _ in o.records if topic == "health"]
    changes = [orjson.loads(v) for o in outs for topic, _, v, _ in o.records if topic == "changes"]
    return snaps, changes


def _engine(cards: CardSchedule | None) -> Engine:
    return Engine(BASE, load_rules(DEFAULT_RULES), cards=cards)


def test_a_promoted_card_scores_from_its_effective_time_only_and_a_rollback_restores() -> None:
    t1, t2 = ts(15), ts(22)
    book = CardBook(BASE)
    book.add([book.propose(STRICT, None, "ana", "calibrated", NOW)])
    book.add([book.accept(STRICT.card_version, t1, "ana", "beats the card in force", NOW)])
    book.add([book.rollback(t2, "ana", "too many reds", NOW)])
    snaps, changes = _run(_engine(book.schedule()))
    by_version: dict[str, list[int]] = {}
    for s in snaps:
        when = int(datetime.fromisoformat(s["as_of"]).timestamp())
        by_version.setdefault(s["scorecard_version"], []).append(when)
        expected = STRICT if t1 <= when < t2 else BASE
        assert s["scorecard_version"] == expected.card_version, s["as_of"]
    assert by_version[STRICT.card_version] and max(by_version[BASE.card_version]) >= t2
    scored = [s for s in snaps if s["score"] is not None]
    assert {s["band"] for s in scored if t1 <= int(datetime.fromisoformat(s["as_of"]).timestamp()) < t2} == {
        "red"
    }
    # the first change under each new card names the card it replaced
    named = [c for c in changes if c["scorecard_changed_from"]]
    assert [(c["scorecard_changed_from"], c["scorecard_version"]) for c in named] == [
        (BASE.card_version, STRICT.card_version),
        (STRICT.card_version, BASE.card_version),
    ]
    # determinism: the same input and records give the same outputs; without them, the base card only
    assert _run(_engine(book.schedule())) == (snaps, changes)
    plain, _ = _run(_engine(None))
    assert {s["scorecard_version"] for s in plain} == {BASE.card_version}
    assert plain != snaps


def test_the_book_refuses_what_it_cannot_do() -> None:
    book = CardBook(BASE)
    with pytest.raises(CardRefused) as e:
        book.rollback(100, "ana", "", NOW)
    assert e.value.status == 409
    with pytest.raises(CardRefused) as e:
        book.accept("sha256:000000000000", 100, "ana", "", NOW)
    assert e.value.status == 404
    book.add([book.propose(STRICT, None, "ana", "", NOW)])
    book.add([book.accept(STRICT.card_version, 100, "ana", "", NOW)])
    with pytest.raises(CardRefused) as e:  # accepted already: no longer a proposal
        book.accept(STRICT.card_version, 200, "ana", "", NOW)
    assert e.value.status == 409
    other = BASE.model_copy(update={"revision": "v9"})
    book.add([book.propose(other, None, "ana", "", NOW)])
    with pytest.raises(CardRefused) as e:  # the schedule never moves back
        book.accept("v9", 99, "ana", "", NOW)
    assert e.value.status == 409
    folds = BASE.model_copy(
        update={"revision": "v10", "metrics": BASE.metrics.model_copy(update={"key_features": ["x"]})}
    )
    book.add([book.propose(folds, None, "ana", "", NOW)])
    with pytest.raises(CardRefused, match="metrics"):
        book.accept("v10", 300, "ana", "", NOW)
    assert book.latest() == (STRICT, 100)


def test_two_promotions_roll_back_one_at_a_time_and_records_round_trip() -> None:
    v2, v3 = (BASE.model_copy(update={"revision": r}) for r in ("v2", "v3"))
    book = CardBook(BASE)
    for t, card in ((100, v2), (200, v3)):
        book.add([book.propose(card, None, "ana", "", NOW)])
        book.add([book.accept(card.card_version, t, "ana", "", NOW)])
    first = book.rollback(300, "ana", "", NOW)
    assert (first.version, first.restores) == ("v3", "v2")
    assert book.change_event(first).model_dump(include={"action", "version", "previous_version"}) == {
        "action": "rolled_back",
        "version": "v2",
        "previous_version": "v3",
    }
    book.add([first])
    book.add([book.rollback(400, "ana", "", NOW)])
    with pytest.raises(CardRefused):
        book.rollback(500, "ana", "", NOW)
    # as the topic carries them: keys distinct (compaction keeps the history), records equal
    again = CardBook(BASE, [CardRecord.model_validate_json(r.model_dump_json()) for r in book.records])
    assert len({r.key for r in book.records}) == len(book.records)
    sched = again.schedule()
    assert [sched.at(t).card_version for t in (50, 100, 200, 300, 400)] == [
        BASE.card_version,
        "v2",
        "v3",
        "v2",
        BASE.card_version,
    ]


def test_a_record_names_its_own_card() -> None:
    with pytest.raises(ValueError, match="version"):
        CardRecord(version="v2", config=BASE, status="proposed", by="ana", recorded_at=NOW)
    with pytest.raises(ValueError, match="effective_from"):
        CardRecord(version=BASE.card_version, config=BASE, status="accepted", by="ana", recorded_at=NOW)


def test_a_hashed_version_survives_the_topic() -> None:
    raw = CardBook(BASE).propose(STRICT, None, "ana", "", NOW).model_dump_json()
    assert ScoringConfig.model_validate(orjson.loads(raw)["config"]).card_version == STRICT.card_version


class FakeStore:
    """The card topic in memory: what the API reads and what it publishes."""

    def __init__(self) -> None:
        self.book = CardBook(BASE)
        self.published: list[tuple[CardRecord, CardChange | None]] = []

    async def read(self) -> CardBook:
        return CardBook(BASE, list(self.book.records))

    async def publish(self, record: CardRecord, change: CardChange | None) -> None:
        self.published.append((record, change))
        self.book.add([record])


async def test_the_api_refuses_bad_decisions_and_changes_nothing() -> None:
    from aiohttp import web
    from aiohttp.test_utils import TestClient, TestServer

    from streams.settings import Settings
    from streams.web import cards_api
    from streams.web.server import errors_as_json

    store = FakeStore()
    app = web.Application(middlewares=[errors_as_json])
    app[cards_api.CARDS] = store
    cards_api.add_routes(app, Settings(), BASE)
    async with TestClient(TestServer(app)) as http:
        who = {"by": "ana@example.com", "reason": "held-out AUC"}
        resp = await http.post("/api/cards/rollback", json=who)
        assert (resp.status, (await resp.json())["error"]["message"]) == (
            409,
            "nothing to roll back: the configured card is in force",
        )
        assert (await http.post("/api/cards/sha256:nope/accept", json=who)).status == 404
        assert (await http.post(f"/api/cards/{STRICT.card_version}/accept", json={})).status == 400  # no `by`
        assert (await http.post("/api/cards/rollback", data=b"{not json")).status == 400
        assert store.published == []

        store.book.add([store.book.propose(STRICT, None, "calibrate", "", NOW)])
        view = await (await http.get("/api/cards")).json()
        assert (
            view["in_force"]["version"] == BASE.card_version
            and view["proposed"]["version"] == STRICT.card_version
        )
        when = {**who, "effective_from": at(15)}
        resp = await http.post(f"/api/cards/{STRICT.card_version}/accept", json=when)
        assert resp.status == 202, await resp.text()
        assert (await resp.json())["change"]["previous_version"] == BASE.card_version
        assert (await http.post(f"/api/cards/{STRICT.card_version}/accept", json=when)).status == 409
        early = {**who, "effective_from": at(14)}
        assert (await http.post("/api/cards/rollback", json=early)).status == 409  # before the last change
        assert len(store.published) == 1
        resp = await http.post("/api/cards/rollback", json={**who, "effective_from": at(16)})
        assert resp.status == 202
        record, change = store.published[-1]
        assert (record.status, record.restores, change and change.version) == (
            "rolled_back",
            BASE.card_version,
            BASE.card_version,
        )
        view = await (await http.get("/api/cards")).json()
        assert view["in_force"]["status"] == "rolled_back" and not view["can_roll_back"]
        assert [h["status"] for h in view["history"]] == ["rolled_back", "accepted", "proposed"]


@pytest.mark.parametrize("mode", ["manual", "auto"])
def test_calibrate_publishes_the_proposal_and_accepts_it_only_when_automatic(monkeypatch, mode) -> None:
    import streams.broker.cards
    from streams.cli.main import _publish_proposal
    from streams.settings import Settings

    sent: list[tuple[CardRecord, CardChange | None]] = []

    async def fake_publish(s, record: CardRecord, change: CardChange | None = None) -> None:
        sent.append((record, change))

    monkeypatch.setattr(streams.broker.cards, "publish", fake_publish)
    book = CardBook(BASE)
    _publish_proposal(Settings(card_promotion=mode), book, STRICT, None, datetime(2026, 3, 20, tzinfo=UTC))  # type: ignore[arg-type]
    assert [(r.status, r.version) for r, _ in sent] == [("proposed", STRICT.card_version)] + (
        [("accepted", STRICT.card_version)] if mode == "auto" else []
    )
    if mode == "auto":
        record, change = sent[-1]
        assert record.effective_from == ts(18) - 9 * 3600  # 2026-03-20T00:00Z
        assert change is not None and change.previous_version == BASE.card_version


def test_the_view_names_the_card_a_rollback_restores() -> None:
    from streams.web.cards_api import cards_view

    book = CardBook(BASE)
    book.add([book.propose(STRICT, None, "ana", "", NOW)])
    book.add([book.accept(STRICT.card_version, 100, "ana", "", NOW)])
    assert cards_view(book)["in_force"]["version"] == STRICT.card_version
    book.add([book.rollback(200, "ana", "", NOW)])
    view = cards_view(book)
    assert (view["in_force"]["version"], view["in_force"]["status"]) == (BASE.card_version, "rolled_back")
    assert (view["history"][0]["version"], view["history"][0]["card_version"]) == (
        STRICT.card_version,
        BASE.card_version,
    )
