"""The leader's API through the real topics, read model and `healthmon serve` process: every headline
figure with its target, rating, delta and to-date flag, trailing 12 months, renewals with the overdue
list, the CSM table, errors, and a bad targets file that stops the start naming file, line and field."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from streams.settings import Settings
from tests.helpers import produce, setup_topics
from tests.integration.test_portfolio_readmodel_kafka import run_until_built
from tests.integration.test_serve_api import TOKEN, Server, serve_settings
from tests.unit.test_leader import cohort_snapshots, renewal_snapshots
from tests.unit.test_portfolio import doc_block

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


async def seed_renewals(s: Settings) -> None:
    """The renewal example of docs/portfolio.md (October to 7 December 2026) through the read model."""
    await setup_topics(s)
    snaps = renewal_snapshots()
    adoption = {"r1": 0.9, "r3": 0.6, "r4": 0.3, "r5": 0.75}  # as the adoption example of docs/portfolio.md
    onboarding = {"r1": 5, "r3": None, "r4": None, "r5": 2}  # and its days to onboard (None: not yet)
    for snap in snaps:
        if snap["as_of"].startswith("2026-12") and snap["account_id"] in adoption:
            snap["metrics"]["adoption_rate"] = adoption[snap["account_id"]]
            days = onboarding[snap["account_id"]]
            snap["metrics"].update(onboarded=days is not None, onboarding_days=days)
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    redis = Redis.from_url(s.redis_url)
    try:
        await run_until_built(s, redis)
    finally:
        await redis.aclose()


def by_figure(card: dict) -> dict[str, dict]:
    return {f["figure"]: f for f in card["figures"]}


async def test_scorecard_and_csm_table(kafka_settings: Settings, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed_renewals(s)
    server = Server(s, tmp_path / "serve.log")
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        async with aiohttp.ClientSession(base_url=server.base, headers=auth) as http:

            async def get(path: str, status: int = 200) -> dict:
                async with http.get(path) as r:
                    assert r.status == status, (path, await r.text())
                    return await r.json()

            assert (await get("/api/portfolio/scorecard"))["period"] == "2026-12"
            # December is the month to date: day 7 of 31, every figure says so and none is compared
            dec = await get("/api/portfolio/scorecard")
            assert dec["latest_day"] == "2026-12-07"
            assert (dec["progress"]["to_date"], dec["progress"]["days_elapsed"]) == (True, 7)
            f = by_figure(dec)
            assert list(f)[:6] == [
                "nrr",
                "grr",
                "logo_churn_rate",
                "revenue_churn_rate",
                "healthy_pct",
                "at_risk_mrr",
            ]
            assert all(x["to_date"] for x in dec["figures"])
            assert (
                f["healthy_pct"]["delta"]["note"] == "to date (day 7 of 31): compared when the period closes"
            )
            assert f["healthy_pct"]["value"] == 80.0
            assert f["healthy_pct"]["assessment"]["target"]["good"] == 80.0
            assert f["healthy_pct"]["assessment"]["rating"] == "on_track"
            assert f["renewal_rate"]["value"] == 100.0 and f["renewal_rate"]["assessment"] is None
            assert dec["renewals"]["overdue_accounts"] == 1
            assert [a["account_id"] for a in dec["renewals"]["overdue"]] == ["r3"]
            # the trailing 12 months: only November has a cohort, annualised from it
            t12 = dec["trailing_12"]["trailing"]
            assert (t12["period"], t12["months_counted"], t12["annualised"]) == ("T12-2026-11", 1, True)
            assert t12["nrr"] == pytest.approx(28.24, abs=0.01)  # 0.9^12
            assert {a["figure"]: a["rating"] for a in dec["trailing_12"]["figures"]}["nrr"] == "off_track"
            ue = dec["unit_economics"]
            assert (ue["arr"], ue["arpa"], ue["gross_margin"]) == (
                54000.0,
                900.0,
                1.0,
            )  # 4,500 MRR / 5 paying

            # adoption for the book, with its distribution and target
            ad = {x["figure"]: x for x in dec["adoption"]}
            assert ad["adoption"]["value"] == 63.75 and ad["adoption"]["to_date"] is True
            assert ad["adoption"]["distribution"] == {
                "accounts": 4,
                "mean": 63.75,
                "p25": 52.5,
                "p50": 67.5,
                "p75": 78.75,
            }
            assert ad["adoption"]["assessment"]["rating"] == "at_risk"
            assert ad["dau_mau"]["value"] is None and ad["active_users"]["assessment"] is None
            # onboarding completion (docs/portfolio.md, "Onboarding completion"): 2 of 4, median 3.5 days
            assert ad["onboarding_completion"]["value"] == 50.0
            assert ad["onboarding_completion"]["note"].startswith("2 of 4 accounts used every key feature")
            assert ad["onboarding_days"]["value"] == 3.5
            assert ad["onboarding_days"]["distribution"] == {
                "accounts": 2,
                "mean": 3.5,
                "p25": 2.75,
                "p50": 3.5,
                "p75": 4.25,
            }

            # November is closed: below target is flagged, churn-moved deltas get no verdict
            nov = by_figure(await get("/api/portfolio/scorecard?period=2026-11"))
            assert nov["logo_churn_rate"]["value"] == pytest.approx(16.67)
            assert nov["logo_churn_rate"]["assessment"]["rating"] == "off_track"
            assert nov["logo_churn_rate"]["to_date"] is False
            assert nov["healthy_pct"]["delta"]["verdict"] is None
            assert nov["healthy_pct"]["delta"]["note"].startswith("moved by churn")
            assert nov["renewal_rate"]["value"] == 25.0
            # the enterprise segment is held to its own churn target
            ent = by_figure(await get("/api/portfolio/scorecard?period=2026-11&group=segment:enterprise"))
            assert ent["logo_churn_rate"]["assessment"]["target"]["good"] == 2.0
            # a quarter and a year are periods too; the trailing 12 months as a period
            q4 = await get("/api/portfolio/scorecard?period=2026-Q4")
            assert by_figure(q4)["renewal_rate"]["value"] == 40.0 and q4["progress"]["days_total"] == 92
            assert (await get("/api/portfolio/scorecard?period=2026"))["progress"]["to_date"] is True
            t = by_figure(await get("/api/portfolio/scorecard?period=T12-2026-11"))
            assert t["nrr"]["value"] == pytest.approx(28.24, abs=0.01) and t["nrr"]["to_date"] is False

            csm = await get("/api/portfolio/csms")
            assert csm["period"] == "2026-12" and csm["ranges"]["enterprise"] == [5, 15]
            rows = {r["csm"]: r for r in csm["rows"]}
            assert [r["csm"] for r in csm["rows"]] == ["bo@example.com", "ana@example.com"]  # by ARR
            assert (rows["bo@example.com"]["accounts"], rows["bo@example.com"]["arr"]) == (3, 32400.0)
            assert rows["bo@example.com"]["accounts_by_segment"] == {"enterprise": 3}
            assert rows["bo@example.com"]["guidance"] == "under"
            assert rows["ana@example.com"]["csm_name"] == "Ana"

            closed = await get("/api/portfolio/scorecard?period=T12-2026-12", 400)
            assert "at most T12-2026-11" in closed["error"]["message"]
            for bad in ("2026-13", "T12-nope", "x" * 13):
                assert (await get(f"/api/portfolio/scorecard?period={bad}", 400))["error"]["status"] == 400
            assert (
                "CSM table" in (await get("/api/portfolio/csms?period=T12-2026-11", 400))["error"]["message"]
            )
            await get("/api/portfolio/scorecard?group=csm:nobody@example.com", 404)
            doc = await get("/api/openapi.json")
            assert {"/api/portfolio/scorecard", "/api/portfolio/csms"} <= set(doc["paths"])
            assert "Scorecard" in doc["components"]["schemas"]
        async with aiohttp.ClientSession(base_url=server.base) as anon:
            async with anon.get("/api/portfolio/scorecard") as r:
                assert r.status == 401
    finally:
        server.stop()


def test_a_bad_targets_file_stops_serve(kafka_settings: Settings, tmp_path: Path) -> None:
    bad = tmp_path / "targets.yaml"
    bad.write_text("version: 1\nfigures:\n  nps:\n    direction: up\n    good: 50\n")
    s = serve_settings(kafka_settings).model_copy(update={"targets_file": bad})
    with pytest.raises(RuntimeError, match=rf"{bad}:4: figures.nps.direction"):
        Server(s, tmp_path / "serve.log")


async def seed_cohorts(s: Settings) -> None:
    """The cohort example of docs/portfolio.md through the read model."""
    await setup_topics(s)
    snaps = cohort_snapshots()
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    redis = Redis.from_url(s.redis_url)
    try:
        await run_until_built(s, redis)
    finally:
        await redis.aclose()


async def test_cohorts(kafka_settings: Settings, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed_cohorts(s)
    server = Server(s, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession(
            base_url=server.base, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:
            async with http.get("/api/portfolio/cohorts") as r:
                assert r.status == 200
                body = await r.json()
            # by segment (docs/portfolio.md): smb has the September cohort, enterprise October's
            async with http.get("/api/portfolio/cohorts?group=segment:enterprise") as r:
                assert r.status == 200
                enterprise = await r.json()
            async with http.get("/api/portfolio/cohorts?group=segment:mid_market") as r:
                assert r.status == 404
                assert "segments: enterprise, smb" in (await r.json())["error"]["message"]
            async with http.get("/api/portfolio/cohorts?group=csm:ana@example.com") as r:
                assert r.status == 400
                assert (await r.json())["error"]["issues"][0]["field"] == "group"
        expected = doc_block("cohort-expected")
        assert body["tenures"] == [1, 3, 6, 12]
        assert body["group"] == "all" and body["segments"] == ["enterprise", "smb"]
        assert body["cohorts"] == expected
        assert enterprise["group"] == "segment:enterprise" and enterprise["cohorts"] == expected[1:]
    finally:
        server.stop()
