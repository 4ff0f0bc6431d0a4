"""Live score accuracy end to end: events through a real worker, `healthmon readmodel` and `healthmon
serve` (real Kafka, real Redis), then GET /api/accuracy and the dashboard's "Score accuracy" panel in
headless chromium."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import aiohttp
import orjson
import pytest

from tests.browser import Browser
from tests.helpers import at, collect, event, latest_snapshots, produce_events, setup_topics, snapshot_total
from tests.integration.test_dashboard_browser import start
from tests.integration.test_scoring_kafka import decline, healthy_month
from tests.integration.test_serve_api import TOKEN, Server, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
STAYERS = ("acc-s1", "acc-s2", "acc-s3")


def churner(account: str) -> list[dict]:
    """A healthy month, a decline from day 31, the subscription cancelled on day 70."""
    return [*healthy_month(account), *decline(account), event("subscription_canceled", account, at(70))]


async def test_accuracy_api_and_panel(kafka_settings, worker, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings).model_copy(update={"readmodel_enabled": False})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    readmodel = start("readmodel", s, tmp_path / "readmodel.log")
    server = Server(s, tmp_path / "serve.log")
    browser = Browser(tmp_path / "chromium-profile")
    try:
        # in event-time order, as a live book sends them (an account's whole history first would make the
        # others' early events late on a shared partition)
        events = sorted(
            churner("acc-c") + [e for a in STAYERS for e in healthy_month(a)], key=lambda e: e["occurred_at"]
        )
        await produce_events(s, events)
        health = await collect(
            s,
            "health",
            lambda rs: (
                bool((latest_snapshots(rs).get("acc-c") or {}).get("metrics", {}).get("canceled"))
                and all(snapshot_total(rs, a) == len(healthy_month(a)) for a in STAYERS)
            ),
        )
        snaps = sorted((r for r in health if r.key == b"acc-c"), key=lambda r: r.offset)
        headers = {"Authorization": f"Bearer {TOKEN}"}
        async with aiohttp.ClientSession(headers=headers) as http:
            # the read model holds every account's last snapshot (its score line is written with it);
            # only then the accuracy, which serve computes once per 30 s
            last = {aid: snap["as_of"] for aid, snap in latest_snapshots(health).items()}
            for _ in range(300):
                async with http.get(f"{server.base}/api/accounts?include_canceled=true") as resp:
                    rows = {r["account_id"]: r["as_of"] for r in (await resp.json())["items"]}
                if rows == last:
                    break
                await asyncio.sleep(0.2)
            assert rows == last
            async with http.get(f"{server.base}/api/accuracy") as resp:
                assert resp.status == 200, await resp.text()
                body = await resp.json()
            async with http.get(f"{server.base}/api/accuracy?window_days=9999") as resp:
                assert resp.status == 400
            async with http.get(f"{server.base}/api/openapi.json") as resp:
                assert "/api/accuracy" in (await resp.json())["paths"]
        [c] = body["cancellations"]
        assert (c["account_id"], c["canceled_on"], c["month"]) == ("acc-c", at(70)[:10], at(70)[:7])

        # the score and band of acc-c's last snapshot of the day 30 (60) days before, as the worker sent them
        def as_of(days: int) -> tuple[float, str]:
            day = at(70 - days)[:10]
            last = [orjson.loads(r.value) for r in snaps if orjson.loads(r.value)["as_of"][:10] <= day][-1]
            return last["score"], last["band"]

        assert (c["score_30"], c["band_30"]) == pytest.approx(as_of(30))
        assert (c["score_60"], c["band_60"]) == pytest.approx(as_of(60))
        assert c["band_30"] == "red" and c["band_60"] == "green"  # the decline of days 31-33
        w30 = body["window"]["30"]
        assert (w30["churners"], w30["scored"]) == (1, 4)
        assert w30["auc"] == 1.0 and w30["red_precision"] == 1.0 and w30["red_recall"] == 1.0
        assert (body["window"]["60"]["churners"], body["window"]["60"]["scored"]) == (1, 4)
        assert body["months"][0]["month"] == at(70)[:7] and body["months"][0]["red_30"] == 1
        assert isinstance(body["set_aside"], list)

        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("Number(document.querySelector('#accuracy')?.dataset.loaded || 0) >= 1", 60)
        assert "1.00" in await browser.text("#accuracy-headline")
        assert "acc-c" in await browser.text("#accuracy-cancellations")
        assert await browser.evaluate("window.hmAccuracyChart.data[1][0]") == 1.0
        await browser.screenshot(tmp_path / "accuracy.png")
        await browser.evaluate("location.hash = '#/account/acc-c'")
        await browser.wait_for("document.querySelector('#accuracy').hidden === true")
    finally:
        await browser.stop()
        server.stop()
        readmodel.send_signal(signal.SIGTERM)
        readmodel.wait(30)
