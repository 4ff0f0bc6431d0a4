"""Scorecard promotion end to end (real Kafka): a candidate on the card topic, accepted through
`healthmon serve`'s API, followed by a running worker: snapshots from its effective time on name the
new card, earlier ones the old; one explaining change event; a rollback restores the old card. The same
decisions clicked in the dashboard, and `healthmon calibrate --propose --publish` run as a command."""

from __future__ import annotations

import contextlib
import time
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from streams.broker.cards import publish
from streams.broker.tail import read_to_end
from streams.core.cards import CARD_CHANGE_KEY, CardBook, CardRecord
from streams.core.scoring import Bands, Component, Measure, ScoreCard, load_scoring
from streams.sim.simulate import Simulator
from tests.browser import Browser
from tests.conftest import WorkerProcess, run_cli
from tests.helpers import at, collect, produce_events, setup_topics
from tests.integration.test_scoring_kafka import healthy_month
from tests.integration.test_serve_api import TOKEN, Server, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
BASE = load_scoring()
#: Red below 99: a healthy account turns red the moment this card is in force.
STRICT = BASE.model_copy(
    update={
        "default": BASE.default.model_copy(update={"bands": Bands(red_below=99, yellow_below=99.5)}),
        "segments": {},
    }
)
ACCOUNTS = ("acc-p1", "acc-p2")
#: Reads usage upside down (the busiest accounts score lowest) and never calls red: a candidate fitted
#: on any real history beats it clearly, while keeping its metrics section (so it may be accepted).
UPSIDE_DOWN = BASE.model_copy(
    update={
        "revision": "upside-down",
        "segments": {},
        "default": ScoreCard(
            components={
                "usage": Component(
                    weight=100,
                    measures={
                        "engagement": Measure(
                            metric="usage_percentile", bad=0.7, good=0.1, explain="upside down"
                        )
                    },
                )
            },
            bands=Bands(red_below=0, yellow_below=0),
        ),
    }
)


def ts(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def wait_log(worker: WorkerProcess, text: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text.encode() in worker.log():
            return
        time.sleep(0.2)
    raise AssertionError(f"worker never logged {text!r}:\n{worker.log_tail()}")


async def card_changes(s) -> list[dict]:
    """The scorecard change events on cs.health.changes, read to the topic's end as of now."""
    out = []
    async with contextlib.aclosing(read_to_end(s, s.topic("health_changes"))) as records:
        async for msg in records:
            if msg.key == CARD_CHANGE_KEY:
                out.append(orjson.loads(msg.value))
    return out


async def card_records(s) -> list[CardRecord]:
    """Every record on the card topic, read to its end as of now (what a command wrote is there)."""
    async with contextlib.aclosing(read_to_end(s, s.topic("scorecards"))) as records:
        return [CardRecord.model_validate_json(msg.value) async for msg in records]


async def test_calibrate_publishes_a_proposal_only_when_the_verdict_proposes_it(
    kafka_settings, tmp_path: Path
) -> None:
    """`calibrate --propose --publish` as an operator runs it, against the card in force on the topic:
    over the configured card the candidate does not win and nothing is published; over a card that reads
    usage upside down it wins and exactly one proposal, the written card with its verdict, lands."""
    s = kafka_settings
    await setup_topics(s)
    # 120 accounts over 100 days: 37 cancel (>= HEALTHMON_CALIBRATION_MIN_CANCELLATIONS, 30)
    book_file = tmp_path / "book.jsonl"
    with book_file.open("wb") as f:
        for e in Simulator(120, 100, 4, datetime(2026, 6, 30, tzinfo=UTC)).events():
            f.write(orjson.dumps(e) + b"\n")

    def calibrate(out: str):
        args = ("calibrate", str(book_file), "--out", str(tmp_path / out), "--propose", "--publish")
        return run_cli(s, *args)

    kept = calibrate("kept.yaml")
    assert kept.returncode == 0, kept.stderr
    assert f"not proposed over {BASE.card_version}" in kept.stdout, kept.stdout
    assert "AUC intervals overlap" in kept.stdout and "published" not in kept.stdout
    assert not orjson.loads((tmp_path / "kept.report.json").read_bytes())["proposal"]["propose"]
    assert await card_records(s) == []

    book = CardBook(BASE)
    now = datetime.now(UTC)
    proposed = book.propose(UPSIDE_DOWN, None, "test", "a bad card in force", now)
    book.add([proposed])
    accepted = book.accept(UPSIDE_DOWN.card_version, ts(at(0)), "test", "a bad card in force", now)
    await publish(s, proposed)
    await publish(s, accepted, book.change_event(accepted))
    book.add([accepted])

    got = calibrate("candidate.yaml")
    assert got.returncode == 0, got.stderr
    candidate = load_scoring(tmp_path / "candidate.yaml")
    assert f"PROPOSED over {UPSIDE_DOWN.card_version}" in got.stdout, got.stdout
    assert f"published proposal {candidate.card_version} on {s.topic('scorecards')}" in got.stdout
    records = await card_records(s)
    assert records[:2] == [proposed, accepted] and len(records) == 3
    new = records[2]
    assert (new.status, new.version, new.effective_from, new.by) == (
        "proposed",
        candidate.card_version,
        None,
        "healthmon calibrate",
    )
    assert new.config == candidate  # the card written to --out, not another
    verdict = orjson.loads((tmp_path / "candidate.report.json").read_bytes())["proposal"]
    assert verdict["propose"] and new.verdict is not None
    assert new.verdict.model_dump(mode="json") == verdict
    # manual promotion (the default): proposed only, and it is the open proposal a person can accept
    assert "accept it in `healthmon serve`" in got.stdout and "promoted" not in got.stdout
    book.add([new])
    assert book.proposed() == new
    assert book.accept(new.version, ts(at(1)), "ana", "", now).config == candidate


async def click_until_in_force(browser: Browser, button: str, version: str) -> None:
    """Click a Scorecard button, then wait until the page shows ``version`` in force."""
    await browser.click(button)
    await browser.wait_for(f"document.querySelector('#cards-in-force')?.innerText.includes('{version}')")


async def cards_view(server: Server) -> dict:
    """``GET /api/cards`` as an operator's script reads it."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with aiohttp.ClientSession(headers=headers, base_url=server.base) as http:
        async with http.get("/api/cards") as resp:
            return await resp.json()


async def test_accept_and_roll_back_a_card_in_the_dashboard(kafka_settings, tmp_path: Path) -> None:
    """The Scorecard section's Accept and Roll back buttons, clicked in chromium against a running
    `healthmon serve` (the cookie from ?token=, real HTTP, real Kafka): each click records one decision
    on the card topic with one change event, and the page and the API both show it."""
    s = serve_settings(kafka_settings)
    await setup_topics(s)
    superseded = STRICT.model_copy(update={"revision": "superseded"})
    await publish(s, CardBook(BASE).propose(superseded, None, "calibrate", "", datetime.now(UTC)))
    server = Server(s, tmp_path / "serve.log")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for(
            "document.querySelector('#cards-accept')?.dataset.version === 'superseded'", 60
        )
        assert await browser.evaluate("document.querySelector('#cards-rollback') === null")
        # The buttons ask who and why with window.prompt, which headless chromium cannot answer:
        # answered here as a person would type, and each question kept to be checked.
        await browser.evaluate(
            "window.asked = []; window.prompt = (q) => { window.asked.push(q);"
            " return q.startsWith('Your name') ? 'ana@example.com' : 'clicked in the dashboard'; }; true"
        )
        # a newer proposal arrives while the page shows the old one: its Accept is refused (409), the
        # page says why and offers the new one, and nothing is recorded
        await publish(s, CardBook(BASE).propose(STRICT, None, "calibrate", "held-out AUC", datetime.now(UTC)))
        await browser.click("#cards-accept")
        await browser.wait_for(
            f"document.querySelector('#cards-accept')?.dataset.version === '{STRICT.card_version}'"
        )
        assert "card superseded is not the open proposal" in await browser.text("#cards-status")
        assert [r.status for r in await card_records(s)] == ["proposed", "proposed"]

        await click_until_in_force(browser, "#cards-accept", STRICT.card_version)
        assert await browser.evaluate("window.asked.length") == 4
        assert await browser.evaluate("document.querySelector('#cards-accept') === null")
        assert "No candidate proposed" in await browser.text("#cards-body")
        history = await browser.text("#cards-history tbody tr")
        assert (
            "accepted" in history and "ana@example.com" in history and "clicked in the dashboard" in history
        )
        assert f"recorded: accepted {STRICT.card_version}" in await browser.text("#cards-status")

        view = await cards_view(server)
        assert (view["in_force"]["version"], view["in_force"]["status"]) == (STRICT.card_version, "accepted")
        assert view["proposed"] is None and view["can_roll_back"]
        records = await card_records(s)
        assert [(r.status, r.version, r.by, r.reason) for r in records[1:]] == [
            ("proposed", STRICT.card_version, "calibrate", "held-out AUC"),
            ("accepted", STRICT.card_version, "ana@example.com", "clicked in the dashboard"),
        ]

        await click_until_in_force(browser, "#cards-rollback", BASE.card_version)
        assert await browser.evaluate("window.asked.length") == 6
        assert await browser.evaluate("document.querySelector('#cards-rollback') === null")
        assert "rolled_back" in await browser.text("#cards-history tbody tr")
        assert f"recorded: rolled_back {BASE.card_version}" in await browser.text("#cards-status")

        view = await cards_view(server)
        assert (view["in_force"]["version"], view["in_force"]["status"]) == (BASE.card_version, "rolled_back")
        assert not view["can_roll_back"]
        records = await card_records(s)
        assert [(r.status, r.version, r.restores) for r in records[2:]] == [
            ("accepted", STRICT.card_version, None),
            ("rolled_back", STRICT.card_version, BASE.card_version),
        ]
        assert records[2].effective_from <= records[3].effective_from  # both "now", in click order
        assert [(c["action"], c["version"], c["by"]) for c in await card_changes(s)] == [
            ("accepted", STRICT.card_version, "ana@example.com"),
            ("rolled_back", BASE.card_version, "ana@example.com"),
        ]
    finally:
        await browser.stop()
        server.stop()


async def test_accept_and_roll_back_a_card_through_the_api(kafka_settings, worker, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    worker.settings = s
    await setup_topics(s)
    # the candidate, as `healthmon calibrate --propose --publish` publishes it
    await publish(s, CardBook(BASE).propose(STRICT, None, "calibrate", "held-out AUC", datetime.now(UTC)))
    worker.start()
    server = Server(s, tmp_path / "serve.log")
    events = sorted((e for a in ACCOUNTS for e in healthy_month(a)), key=lambda e: e["occurred_at"])
    t1, t2 = at(12), at(21)
    headers = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(headers=headers, base_url=server.base) as http:
            async with http.get("/api/cards") as resp:
                view = await resp.json()
            assert view["in_force"]["version"] == BASE.card_version
            assert view["proposed"]["version"] == STRICT.card_version
            async with http.post("/api/cards/rollback", json={"by": "ana"}) as resp:
                assert resp.status == 409  # nothing promoted yet
            async with http.post("/api/cards/sha256:000000000000/accept", json={"by": "ana"}) as resp:
                assert resp.status == 404
            decision = {"by": "ana@example.com", "reason": "beats the card in force", "effective_from": t1}
            async with http.post(f"/api/cards/{STRICT.card_version}/accept", json=decision) as resp:
                assert resp.status == 202, await resp.text()
            # the worker has it before any event is produced: the stream never passes t1 without it
            wait_log(worker, f"card {STRICT.card_version} accepted from event time {ts(t1)}")
            assert [c["version"] for c in await card_changes(s)] == [STRICT.card_version]

            await produce_events(s, [e for e in events if e["occurred_at"] < at(17)])

            def reached(day: float):
                def ok(rs) -> bool:
                    got = {r.key.decode() for r in rs if orjson.loads(r.value)["as_of"] >= at(day)}
                    return got >= set(ACCOUNTS)

                return ok

            await collect(s, "health", reached(16), timeout=120)
            rollback = {"by": "ana@example.com", "reason": "too many reds", "effective_from": t2}
            async with http.post("/api/cards/rollback", json=rollback) as resp:
                assert resp.status == 202, await resp.text()
            wait_log(worker, f"card {BASE.card_version} rolled_back from event time {ts(t2)}")
            async with http.post("/api/cards/rollback", json=rollback) as resp:
                assert resp.status == 409  # the one promotion is rolled back already
            async with http.get("/api/cards") as resp:
                view = await resp.json()
            assert view["in_force"]["status"] == "rolled_back" and view["proposed"] is None
            # the dashboard's section shows the decision (history) and no button left to press
            browser = Browser(tmp_path / "chromium-profile")
            try:
                await browser.start(f"{server.base}/?token={TOKEN}")
                await browser.wait_for(
                    "Number(document.querySelector('#cards')?.dataset.loaded || 0) >= 1", 60
                )
                assert BASE.card_version in await browser.text("#cards-in-force")
                history = await browser.text("#cards-history")
                assert "rolled_back" in history and "accepted" in history and "too many reds" in history
                assert await browser.evaluate("document.querySelector('#cards-rollback') === null")
            finally:
                await browser.stop()

            await produce_events(s, [e for e in events if e["occurred_at"] >= at(17)])
            health = await collect(s, "health", reached(29), timeout=120)
            changes = await collect(
                s,
                "health_changes",
                lambda rs: sum(r.key == CARD_CHANGE_KEY for r in rs) == 2,
            )
    finally:
        server.stop()

    snaps = [orjson.loads(r.value) for r in health if r.key.decode() in ACCOUNTS]
    seen: dict[str, set[str]] = {"before": set(), "promoted": set(), "after": set()}
    for snap in snaps:
        when = "before" if snap["as_of"] < t1 else "promoted" if snap["as_of"] < t2 else "after"
        seen[when].add(snap["scorecard_version"])
        if when == "promoted" and snap["score"] is not None:
            assert snap["band"] == "red", snap["as_of"]
    assert seen == {
        "before": {BASE.card_version},
        "promoted": {STRICT.card_version},
        "after": {BASE.card_version},
    }
    # one explaining event per decision, and the accounts' own changes name the card change
    explained = [orjson.loads(r.value) for r in changes if r.key == CARD_CHANGE_KEY]
    assert [(c["action"], c["version"], c["previous_version"]) for c in explained] == [
        ("accepted", STRICT.card_version, BASE.card_version),
        ("rolled_back", BASE.card_version, STRICT.card_version),
    ]
    named = {
        (r.key.decode(), c["scorecard_changed_from"], c["scorecard_version"])
        for r in changes
        if r.key != CARD_CHANGE_KEY and (c := orjson.loads(r.value))["scorecard_changed_from"]
    }
    assert named == {
        *((a, BASE.card_version, STRICT.card_version) for a in ACCOUNTS),
        *((a, STRICT.card_version, BASE.card_version) for a in ACCOUNTS),
    }
