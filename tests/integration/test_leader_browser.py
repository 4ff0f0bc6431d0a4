"""The leader's page in headless Debian chromium, over the renewal example of docs/portfolio.md served
through the real topics, read model and `healthmon serve`: the current month is marked "to date", a figure
below its target is flagged by colour and word, the CSM table, the renewal rate and the overdue renewals."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.browser import Browser, squash
from tests.integration.test_leader_api import seed_cohorts, seed_renewals
from tests.integration.test_serve_api import TOKEN, Server, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


@pytest.fixture
async def browser(tmp_path: Path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    await b.stop()


async def test_targets_to_date_and_the_csm_table(kafka_settings, browser: Browser, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed_renewals(s)
    server = Server(s, tmp_path / "serve.log")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("document.querySelectorAll('.tile').length === 9")
        # December 2026 is the month to date (the latest snapshot is of 7 December)
        assert "2026-12" in await browser.text("#portfolio-title")
        assert squash(await browser.text("#period-to-date")) == "to date · day 7 of 31"
        assert await browser.evaluate(
            "[...document.querySelectorAll('.tile')].every(t => t.dataset.toDate === 'true')"
        )
        assert "to date" in await browser.text('.tile[data-metric="healthy_pct"] h3')
        # a monthly target over the days elapsed: churn at most 5 % a month is at most 1.15 % in 7 days
        assert "in 7 days (5.0%/mo)" in await browser.text('.tile[data-metric="logo_churn_rate"] .target')
        assert "compared when the period closes" in await browser.text(
            '.tile[data-metric="healthy_pct"] .delta'
        )
        assert (
            squash(await browser.text('.tile[data-metric="healthy_pct"] .target'))
            == "on track target ≥ 80.0%"
        )
        # the trailing 12 months: November's NRR of 90 % is 28.2 % a year, off track
        assert "annualised from 1 closed month" in await browser.text("#trailing")
        assert "off track" in await browser.text('#trailing tr[data-metric="nrr"]')
        # the overdue renewal is listed apart; the CSMs side by side
        assert await browser.evaluate(
            "[...document.querySelectorAll('#overdue tbody tr')].map(r => r.dataset.account)"
        ) == ["r3"]
        assert await browser.evaluate(
            "[...document.querySelectorAll('#csms tbody tr')].map(r => r.dataset.csm)"
        ) == ["bo@example.com", "ana@example.com"]
        assert "enterprise 3" in await browser.text('#csms tr[data-csm="bo@example.com"]')
        assert "at risk" in await browser.text('#adoption tr[data-metric="adoption"]')
        assert "52.5% · 67.5% · 78.8%" in await browser.text('#adoption tr[data-metric="adoption"]')
        assert "ARPA \u00d7 gross margin" in await browser.text("#economics")
        await browser.screenshot(tmp_path / "december.png")

        # November, closed: logo churn 16.7 % is above its 5 %/month target: red and "off track"
        rendered = int(await browser.evaluate("document.body.dataset.rendered"))
        await browser.evaluate(
            "(() => { const s = document.querySelector('#period'); s.value = '2026-11';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await browser.wait_for(f"Number(document.body.dataset.rendered) > {rendered}")
        assert "2026-11" in await browser.text("#portfolio-title")
        assert await browser.text("#period-to-date") == ""
        churn = '.tile[data-metric="logo_churn_rate"]'
        assert squash(await browser.text(f"{churn} .value")) == "16.7%"
        assert await browser.evaluate(f"document.querySelector('{churn}').dataset.rating") == "off_track"
        assert squash(await browser.text(f"{churn} .rating")) == "off track"
        colour = await browser.evaluate(
            f"getComputedStyle(document.querySelector('{churn} .rating')).backgroundColor"
        )
        assert colour == "rgb(179, 38, 30)"  # --red
        assert "to date" not in await browser.text(f"{churn} h3")
        assert "99.1% a month (90.0%/yr)" in await browser.text('.tile[data-metric="grr"] .target')
        assert "moved by churn" in await browser.text('.tile[data-metric="healthy_pct"] .delta')
        assert "25.0%" in await browser.text("#renewal-rate")
        await browser.screenshot(tmp_path / "november.png")
    finally:
        server.stop()


async def test_cohort_heat_map(kafka_settings, browser: Browser, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed_cohorts(s)
    server = Server(s, tmp_path / "serve.log")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("!!document.querySelector('#cohorts')")
        rows = "[...document.querySelectorAll('#cohorts tbody tr')].map(r => r.dataset.cohort)"
        assert await browser.evaluate(rows) == ["2026-09", "2026-10"]
        cell = '#cohorts tr[data-cohort="2026-09"] td[data-tenure="3"]'
        assert (
            squash(await browser.text(cell)) == "50.0% NRR 75.0% · adoption 90.0% · onboarded 100.0% to date"
        )
        full = '#cohorts tr[data-cohort="2026-09"] td[data-tenure="1"]'
        colours = await browser.evaluate(
            f"[getComputedStyle(document.querySelector('{full}')).backgroundColor,"
            f" getComputedStyle(document.querySelector('{cell}')).backgroundColor]"
        )
        assert colours[0] != colours[1]  # the heat-map: 100 % and 50 % retention differ in colour
        # the heat-map chart (uPlot): a row per cohort, oldest on top, each cell painted in its colour
        await browser.wait_for("!!window.hmCharts['cohort-heatmap']")
        chart = "window.hmCharts['cohort-heatmap']"
        assert await browser.evaluate(f"{chart}.series.slice(1).map(s => s.label)") == ["2026-09", "2026-10"]
        assert await browser.evaluate(f"{chart}.data.slice(1)") == [
            [100, 50, None, None],
            [100, None, None, None],
        ]
        # the canvas pixel at the centre of cell (2026-09, month 3) is the table cell's colour
        pixel = await browser.evaluate(
            f"(() => {{ const u = {chart}; const x = u.valToPos(1, 'x', true), y = u.valToPos(1, 'row', true);"
            " const [r, g, b] = u.ctx.getImageData(Math.round(x) - 20, Math.round(y), 1, 1).data;"
            " return `rgb(${r}, ${g}, ${b})`; })()"
        )
        assert pixel == colours[1]
        top = await browser.evaluate(
            f"(() => {{ const u = {chart}; const x = u.valToPos(0, 'x', true);"
            " const px = (v) => [...u.ctx.getImageData(Math.round(x) - 20, Math.round(u.valToPos(v, 'row', true)), 1, 1).data];"
            " return [px(1), px(0)]; })()"
        )
        assert top[0] == top[1]  # month 1: both cohorts kept all their accounts, the same colour
        # a segment picked: its cohorts only (2026-10 is enterprise's)
        rendered = int(await browser.evaluate("document.body.dataset.rendered"))
        await browser.evaluate(
            "(() => { const s = document.querySelector('#group'); s.value = 'segment:enterprise';"
            " s.dispatchEvent(new Event('change')); })()"
        )
        await browser.wait_for(f"Number(document.body.dataset.rendered) > {rendered}")
        assert await browser.evaluate(rows) == ["2026-10"]
        assert await browser.evaluate(f"{chart}.series.slice(1).map(s => s.label)") == ["2026-10"]
        await browser.screenshot(tmp_path / "cohorts.png")
    finally:
        server.stop()
