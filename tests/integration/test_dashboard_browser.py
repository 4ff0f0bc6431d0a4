"""The dashboard page in headless Debian chromium: tiles with the worked example's numbers, the at-risk
list, an account's chart, and a live update after events go through a real worker and read model."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.browser import Browser, squash
from tests.conftest import ROOT, settings_env
from tests.helpers import produce_events, setup_topics
from tests.integration.test_scoring_kafka import decline, healthy_month
from tests.integration.test_serve_api import TOKEN, Server, seed, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
async def browser(tmp_path: Path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    await b.stop()


async def tile(browser: Browser, metric: str) -> str:
    return squash(await browser.text(f'.tile[data-metric="{metric}"] .value'))


async def test_tiles_at_risk_and_account_chart(kafka_settings, browser: Browser, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed(s)
    server = Server(s, tmp_path / "serve.log")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("document.querySelectorAll('.tile').length === 9")
        # the worked example of docs/portfolio.md, November 2026
        assert await tile(browser, "nrr") == "95.9%"
        assert await tile(browser, "grr") == "90.2%"
        assert await tile(browser, "logo_churn_rate") == "16.7%"
        assert await tile(browser, "revenue_churn_rate") == "9.8%"
        assert await tile(browser, "healthy_pct") == "50.0%"
        assert await tile(browser, "at_risk_mrr") == "2,100"
        assert "Oct" not in await browser.text('.tile[data-metric="nrr"] .delta')  # no cohort in October
        rows = await browser.evaluate(
            "[...document.querySelectorAll('#at-risk tbody tr')].map(r => r.dataset.account)"
        )
        assert rows == ["e3", "a3"]  # a2 canceled: in churn, not at risk
        assert "e3 driver" in await browser.text('#at-risk tr[data-account="e3"]')
        assert await browser.evaluate(
            "[...document.querySelectorAll('#renewals tbody tr')].map(r => r.dataset.account)"
        ) == ["e3", "e1"]
        assert squash(await browser.text('#bands tr[data-band="green"]')) == "green 3 5,000"
        await browser.screenshot(tmp_path / "portfolio.png")

        await browser.evaluate("document.querySelector('#at-risk a').click()")
        await browser.wait_for("!!window.hmCharts['history-chart']")
        assert "E3" in await browser.text("#account-name")
        assert await browser.evaluate("window.hmCharts['history-chart'].data[1].length") == 2
        assert "no login in 14 days" in await browser.text("#alerts")
        await browser.screenshot(tmp_path / "account.png")
        assert (tmp_path / "account.png").stat().st_size > 10_000
    finally:
        server.stop()


def start(cmd: str, s, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", cmd],
        cwd=ROOT,
        env=settings_env(s),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def test_live_update_after_an_event(kafka_settings, worker, browser: Browser, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings).model_copy(update={"readmodel_enabled": False})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    readmodel = start("readmodel", s, tmp_path / "readmodel.log")
    server = Server(s, tmp_path / "serve.log")
    try:
        await produce_events(s, healthy_month("acc-l"))
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("document.querySelector('#live')?.dataset.state === 'live'")
        await browser.wait_for(
            "(document.querySelector('#bands tr[data-band=\"green\"]')?.textContent || '').includes('1')", 60
        )
        assert "No account in the red band" in await browser.text("main")
        updates = int(await browser.evaluate("document.body.dataset.updates"))

        # the account declines: the page shows it at risk without a reload
        await produce_events(s, decline("acc-l"))
        await browser.wait_for("!!document.querySelector('#at-risk tr[data-account=\"acc-l\"]')", 60)
        assert int(await browser.evaluate("document.body.dataset.updates")) > updates
        assert await browser.evaluate("performance.getEntriesByType('navigation').length") == 1  # no reload
        assert await tile(browser, "healthy_pct") == "0.0%"
        await browser.screenshot(tmp_path / "live.png")
    finally:
        server.stop()
        readmodel.send_signal(signal.SIGTERM)
        readmodel.wait(30)
