"""The account page and the charts in headless Debian chromium, through the real topics, read model and
`healthmon serve`: an NPS comment shown escaped, one row per alert episode with how it ended, the band
lines of the scorecard in force, a cancelled account without score or renewal, and the charting library
loaded from this server only, drawing each headline figure against its target."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from streams.readmodel.tasks import write_book
from streams.tasks.model import Task, TaskBook
from tests.browser import Browser, squash
from tests.helpers import produce, produce_events, setup_topics
from tests.integration.test_portfolio_readmodel_kafka import doc_snapshots, run_until_built
from tests.integration.test_serve_api import TOKEN, Server, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

HOSTILE = '<img src=x onerror="document.body.dataset.pwned=1"> too slow & "buggy"'


def episode(alert_id: str, account: str, status: str, starts: str, **extra) -> dict:
    return {
        "alert_id": alert_id,
        "rule_id": alert_id.rsplit("-", 1)[0],
        "account_id": account,
        "status": status,
        "severity": "high",
        "active_since": starts,
        "starts_at": starts,
        "summary": f"{alert_id} summary",
        "action": "call them",
        **extra,
    }


def nps(event_id: str, account: str, score: int, at: str, comment: str | None = None) -> dict:
    e = {"type": "nps", "event_id": event_id, "account_id": account, "occurred_at": at, "user_id": "u1"}
    return {**e, "score": score, **({"comment": comment} if comment is not None else {})}


@pytest.fixture
async def browser(tmp_path: Path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    await b.stop()


async def seed(s) -> None:
    """The worked example of docs/portfolio.md, alert episodes on e3 and a2, NPS and CSAT answers on e3."""
    await setup_topics(s)
    snaps = doc_snapshots()
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    alerts = [
        episode("usage_drop-1", "e3", "firing", "2026-11-10T09:00:00Z"),
        episode("no_login-2", "e3", "firing", "2026-11-25T09:00:00Z"),
        episode(
            "usage_drop-1",
            "e3",
            "resolved",
            "2026-11-10T09:00:00Z",
            ends_at="2026-11-20T09:00:00Z",
            ended_by="recovered",
        ),
        episode("payment-3", "a2", "firing", "2026-11-05T09:00:00Z"),
        episode(
            "payment-3",
            "a2",
            "resolved",
            "2026-11-05T09:00:00Z",
            ends_at="2026-11-15T09:00:00Z",
            ended_by="cancelled",
        ),
    ]
    await produce(s, [(s.topic("alerts"), a["account_id"].encode(), orjson.dumps(a)) for a in alerts])
    await produce_events(
        s,
        [
            nps("n1", "e3", 3, "2026-11-28T10:00:00Z", HOSTILE),
            nps("n2", "e3", 9, "2026-11-29T10:00:00Z"),  # no comment: nothing to show
            nps("n3", "e3", 8, "2026-11-27T10:00:00Z", "fine, mostly"),
            {  # a CSAT answer, on the tickets topic
                "type": "csat",
                "event_id": "c1",
                "account_id": "e3",
                "occurred_at": "2026-11-29T12:00:00Z",
                "ticket_id": "t1",
                "score": 1,
                "comment": "still <script>document.body.dataset.pwned=2</script> broken",
            },
        ],
    )
    redis = Redis.from_url(s.redis_url)
    try:
        await run_until_built(s, redis)
        # the playbook task the first e3 episode opened, as the task worker writes it
        opened = datetime(2026, 11, 10, 9, tzinfo=UTC)
        task = Task(
            task_id="task-e3",
            account_id="e3",
            rule_id="usage_drop",
            step="call the champion",
            opened_by_alert="usage_drop-1",
            alert_id="usage_drop-1",
            alert_ids=("usage_drop-1",),
            owner="bo@example.com",
            opened_at=opened,
            due_at=opened + timedelta(days=2),
            remind_at=opened + timedelta(days=1),
        )
        await write_book(redis, s.redis_prefix, TaskBook(account_id="e3", tasks={task.task_id: task}))
    finally:
        await redis.aclose()


async def open_account(browser: Browser, account: str) -> None:
    await browser.evaluate(f"location.hash = '#/account/{account}'")
    await browser.wait_for(
        f"document.querySelector('#account-name')?.textContent.includes('{account.upper()}')"
    )


async def test_account_page_and_charts(kafka_settings, browser: Browser, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings)
    await seed(s)
    server = Server(s, tmp_path / "serve.log")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        # the portfolio: a trend chart per headline figure, drawn by uPlot, with its target a month
        await browser.wait_for("!!window.hmCharts && !!window.hmCharts['trend-grr']")
        assert await browser.evaluate("typeof uPlot") == "function"
        assert await browser.evaluate("document.querySelectorAll('#trends .chart-box canvas').length") == 9
        grr = await browser.evaluate(
            "(c => ({labels: c.series.map(x => x.label), target: c.data[2], values: c.data[1]}))"
            "(window.hmCharts['trend-grr'])"
        )
        assert grr["labels"][1:] == ["GRR", "Target ≥ 99.1% a month"]
        assert grr["target"] == [99.13, 99.13] and grr["values"][1] == pytest.approx(90.2, abs=0.05)
        assert await browser.evaluate("window.hmCharts['trend-healthy_pct'].data[2][0]") == 80
        bands = await browser.evaluate(
            "(c => ({labels: c.series.map(x => x.label), green: c.data[1]}))(window.hmCharts['bands-over-time'])"
        )
        assert bands["labels"][1:] == ["green", "yellow", "red", "no score"]
        assert bands["green"][-1] == pytest.approx(50.0)  # 3 of 6 active accounts green in November
        # everything the page loaded came from this server (the library is vendored, no CDN)
        urls = await browser.evaluate("performance.getEntriesByType('resource').map(e => e.name)")
        assert any(u.endswith("/static/vendor/uPlot.iife.min.js") for u in urls)
        assert all(u.startswith(server.base) for u in urls), urls
        await browser.screenshot(tmp_path / "portfolio.png")

        # an account: the comment escaped, one row per episode with its end, band lines from the scorecard
        await open_account(browser, "e3")
        await browser.wait_for("!!window.hmCharts['history-chart']")
        said = await browser.evaluate(
            "[...document.querySelectorAll('#comments li')].map(li => [li.dataset.kind, "
            "li.querySelector('blockquote').textContent])"
        )
        assert said == [
            ["csat", "still <script>document.body.dataset.pwned=2</script> broken"],
            ["nps", HOSTILE],
            ["nps", "fine, mostly"],
        ]
        assert "CSAT 1" in await browser.text('#comments li[data-kind="csat"]')
        assert await browser.evaluate("document.querySelector('#comments img') === null")
        assert await browser.evaluate("document.body.dataset.pwned === undefined")
        rows = await browser.evaluate(
            "[...document.querySelectorAll('#alerts tbody tr')].map(r => [r.dataset.alert, r.dataset.status, "
            "r.dataset.endedBy])"
        )
        assert rows == [["no_login-2", "firing", ""], ["usage_drop-1", "resolved", "recovered"]]
        task = await browser.evaluate(
            "[...document.querySelectorAll('#alerts tbody tr')].map(r => r.querySelector('a.task')?.dataset.task ?? null)"
        )
        assert task == [None, "task-e3"]
        assert "call the champion" in await browser.text(
            '#alerts tr[data-alert="usage_drop-1"] td:nth-child(7)'
        )
        ended = squash(await browser.text('#alerts tr[data-alert="usage_drop-1"] td:nth-child(5)'))
        assert ended.endswith("· recovered") and "20 Nov 2026, 09:00 UTC" in ended and "ago" in ended
        assert (
            await browser.evaluate(
                "document.querySelector('#alerts tr[data-alert=\"usage_drop-1\"] td:nth-child(5) time').getAttribute('datetime')"
            )
            == "2026-11-20T09:00:00Z"
        )
        history = await browser.evaluate(
            "(c => ({labels: c.series.map(x => x.label), red: c.data[2][0], yellow: c.data[3][0]}))"
            "(window.hmCharts['history-chart'])"
        )
        assert history["labels"][1:] == ["Score", "Red below 60", "Yellow below 75"]
        assert (history["red"], history["yellow"]) == (60, 75)  # the shipped scorecard's bands
        assert await browser.evaluate("document.querySelectorAll('#history-chart canvas').length") == 1
        assert await browser.evaluate("!!window.hmCharts['usage-chart']")
        assert await browser.evaluate("!!document.querySelector('[data-field=\"score\"]')")
        await browser.screenshot(tmp_path / "account.png")

        # a cancelled account: said so, no score, no "renews in", its episode ended by the cancellation
        await open_account(browser, "a2")
        assert await browser.evaluate("document.querySelector('#account-name').dataset.canceled") == "true"
        assert "cancelled" in await browser.text("#account-name")
        assert squash(await browser.text('[data-field="status"]')) == "Cancelled"
        assert await browser.evaluate("document.querySelector('[data-field=\"score\"]') === null")
        assert await browser.evaluate("document.querySelector('[data-field=\"renews\"]') === null")
        assert "Renews in" not in await browser.text(".kv")
        rows = await browser.evaluate(
            "[...document.querySelectorAll('#alerts tbody tr')].map(r => [r.dataset.alert, r.dataset.endedBy])"
        )
        assert rows == [["payment-3", "cancelled"]]
        assert "account cancelled" in await browser.text("#alerts")
    finally:
        server.stop()
