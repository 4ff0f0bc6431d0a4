"""Playbook outcomes through the real broker and Redis: daily snapshots on ``cs.health`` (the read model's
history), band_red alerts on ``cs.alerts`` and a CSM's actions on ``cs.task-actions`` -> ``healthmon
tasks-worker`` -> the task read model -> ``GET /api/tasks/outcomes``, the CSM table, ``healthmon tasks``
and the dashboard's Playbooks section in headless chromium.

Three accounts, each with a band_red task opened 2026-10-01 09:00 (check-in within 48 h), history to
2026-11-15: acme's task is acknowledged after 3 h and done, acme turns green (saved); beta's and cora's
are never acted on: beta cancels (not saved), cora turns yellow and renews (saved). Cora was yellow
before: her band_yellow task (opened 2026-09-29, due in 7 days) is superseded by the band_red one."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from rules.model import Action
from streams.readmodel.tasks import get_task
from streams.settings import Settings
from streams.tasks.model import TaskAction, task_id
from tests.alert_fixtures import make_alert
from tests.browser import Browser
from tests.conftest import WorkerProcess, run_cli
from tests.helpers import produce, setup_topics
from tests.integration.test_portfolio_readmodel_kafka import run_until_built
from tests.integration.test_serve_api import TOKEN, Server, serve_settings

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

CHECK_IN = Action.model_validate({"step": "Check-in call", "respond_within": "48h"})
INTERVENE = Action.model_validate({"step": "Specific interventions", "respond_within": "7d"})
T0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
DAY0 = date(2026, 10, 1)
ANA, BO = "ana@example.com", "bo@example.com"


def snapshots() -> list[dict]:
    def band(account: str, d: date) -> str:
        if account == "acme":
            return "red" if d <= date(2026, 10, 5) else "green"
        if account == "cora":
            return "red" if d <= date(2026, 10, 9) else "yellow"
        return "red"

    def renewal(account: str, d: date) -> date:
        if account == "cora":
            return date(2026, 10, 20) if d < date(2026, 10, 20) else date(2027, 10, 20)
        return date(2027, 3, 1)

    out = []
    for n in range(46):  # 2026-10-01 .. 2026-11-15
        d = DAY0 + timedelta(days=n)
        for account, csm in (("acme", ANA), ("beta", ANA), ("cora", BO)):
            b = band(account, d)
            out.append(
                {
                    "account_id": account,
                    "as_of": f"{d.isoformat()}T12:00:00Z",
                    "account": {"name": account.title(), "segment": "smb", "csm_email": csm},
                    "score": {"red": 40.0, "yellow": 65.0, "green": 85.0}[b],
                    "band": b,
                    "drivers": [],
                    "metrics": {
                        "mrr": "100",
                        "canceled": account == "beta" and d >= date(2026, 10, 25),
                        "days_to_renewal": (renewal(account, d) - d).days,
                    },
                }
            )
    return out


async def seed(s: Settings, tmp_path: Path) -> Redis:
    """Snapshots through the read model, then alerts and actions through the tasks worker; returns when
    the task read model holds the three tasks, acme's done."""
    await setup_topics(s)
    snaps = snapshots()
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    redis = Redis.from_url(s.redis_url)
    await run_until_built(s, redis)
    alerts = {}
    for account, csm in (("acme", ANA), ("beta", ANA), ("cora", BO)):
        a = make_alert(account=account, rule="band_red", csm=csm, episode=int(T0.timestamp()))
        alerts[account] = a.model_copy(update={"playbook": CHECK_IN, "band": "red", "score": 40.0})
    ids = {k: task_id(k, "band_red", a.alert_id) for k, a in alerts.items()}
    yellow = make_alert(account="cora", rule="band_yellow", csm=BO, episode=int(T0.timestamp()) - 2 * 86400)
    yellow = yellow.model_copy(update={"playbook": INTERVENE, "band": "yellow", "score": 65.0})
    alerts["cora"] = alerts["cora"].model_copy(update={"supersedes": ["band_yellow"]})
    yellow_id = task_id("cora", "band_yellow", yellow.alert_id)

    def act(n: int, verb: str, at: datetime, **kw) -> tuple[str, bytes, bytes]:
        a = TaskAction(
            action_id=f"x{n}", account_id="acme", task_id=ids["acme"], action=verb, by=ANA, at=at, **kw
        )
        return (s.topic("task_actions"), b"acme", a.model_dump_json().encode())

    w = WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker").start()
    try:
        in_order = [yellow, *alerts.values()]  # cora's yellow task opens before red supersedes it
        await produce(
            s, [(s.topic("alerts"), a.account_id.encode(), a.model_dump_json().encode()) for a in in_order]
        )
        await produce(
            s,
            [
                act(1, "acknowledge", T0 + timedelta(hours=3)),
                act(2, "complete", T0 + timedelta(days=1), outcome="reached"),
            ],
        )
        deadline = time.monotonic() + 60
        while True:  # a positive signal: every task in the read model, acme's done
            got = [await get_task(redis, s.redis_prefix, i) for i in [*ids.values(), yellow_id]]
            if all(got) and got[0] is not None and got[0].state == "done" and got[-1].state == "superseded":
                break
            assert time.monotonic() < deadline, f"tasks not in the read model: {got}"
            await asyncio.sleep(0.2)
    finally:
        w.stop()
    return redis


async def test_outcomes_api_csm_table_and_cli(kafka_settings: Settings, tmp_path: Path) -> None:
    s = serve_settings(kafka_settings.model_copy(update={"partitions": 1}))
    redis = await seed(s, tmp_path)
    server = Server(s, tmp_path / "serve.log")
    try:
        async with aiohttp.ClientSession(
            base_url=server.base, headers={"Authorization": f"Bearer {TOKEN}"}
        ) as http:

            async def get(path: str, status: int = 200) -> dict:
                async with http.get(path) as r:
                    assert r.status == status, (path, await r.text())
                    return await r.json()

            table = await get("/api/tasks/outcomes?by=playbook")
            assert table["now"].startswith("2026-11-15T23:59:59")  # the read model's clock: its last day
            red, yellow = table["rows"]  # most opened first
            assert (yellow["group"], yellow["opened"], yellow["superseded"], yellow["open"]) == (
                "band_yellow",
                1,
                1,
                0,
            )
            assert (yellow["on_time_pct"], yellow["never_acted"]) == (None, 0)  # closed before its deadline
            assert (red["group"], red["opened"], red["open"], red["overdue"]) == ("band_red", 3, 2, 2)
            assert (red["on_time_pct"], red["median_ack_hours"], red["done"], red["never_acted"]) == (
                33.3,
                3.0,
                1,
                2,
            )
            acted, base = red["acted"], red["baseline"]
            assert (acted["bands_14d"], acted["bands_30d"], acted["save_rate"]) == (
                {"green": 1},
                {"green": 1},
                100.0,
            )
            assert base["bands_30d"] == {"cancelled": 1, "yellow": 1}
            assert (base["saved"], base["red_at_open"], base["renewed_30d"], base["cancelled_30d"]) == (
                1,
                2,
                1,
                1,
            )
            by_csm = {r["group"]: r for r in (await get("/api/tasks/outcomes?by=csm&period=2026-10"))["rows"]}
            assert (by_csm[ANA]["opened"], by_csm[ANA]["on_time_pct"], by_csm[ANA]["acted"]["save_rate"]) == (
                2,
                50.0,
                100.0,
            )
            assert (by_csm[ANA]["baseline"]["save_rate"], by_csm[BO]["baseline"]["save_rate"]) == (0.0, 100.0)
            assert (await get("/api/tasks/outcomes?period=2026-11"))["rows"] == []
            bad = await get("/api/tasks/outcomes?period=october", status=400)
            assert "not a period" in orjson.dumps(bad).decode()
            await get("/api/tasks/outcomes?by=team", status=400)
            assert "/api/tasks/outcomes" in (await get("/api/openapi.json"))["paths"]
            # the CSM table: open and overdue tasks now, on time % of October's
            rows = {r["csm"]: r for r in (await get("/api/portfolio/csms?period=2026-10"))["rows"]}
            assert (rows[ANA]["open_tasks"], rows[ANA]["overdue_tasks"], rows[ANA]["tasks_on_time_pct"]) == (
                1,
                1,
                50.0,
            )
            assert (rows[BO]["open_tasks"], rows[BO]["overdue_tasks"], rows[BO]["tasks_on_time_pct"]) == (
                1,
                1,
                0.0,
            )
    finally:
        server.stop()
        await redis.aclose()
    out = run_cli(s, "tasks", "outcomes", "--by", "playbook")
    assert out.returncode == 0, out.stderr
    line = next(x for x in out.stdout.splitlines() if x.startswith("band_red"))
    assert line.split()[:7] == ["band_red", "3", "2", "2", "33.3%", "3h", "1"], line
    assert "100% (1/1)" in line and "50% (1/2)" in line
    line = next(x for x in out.stdout.splitlines() if x.startswith("band_yellow"))
    assert line.split()[:11] == ["band_yellow", "1", "0", "0", "-", "-", "0", "0", "0", "0", "1"], line
    mine = run_cli(s, "tasks", "--owner", ANA)
    assert mine.returncode == 0, mine.stderr
    assert "beta Inc" in mine.stdout and "OVERDUE" in mine.stdout and "acme" not in mine.stdout
    refused = run_cli(s, "tasks", "outcomes", "--period", "october")
    assert refused.returncode == 2 and "not a period" in refused.stderr


@pytest.fixture
async def browser(tmp_path: Path):
    b = Browser(tmp_path / "chromium-profile")
    yield b
    await b.stop()


async def test_playbooks_section_in_the_dashboard(
    kafka_settings: Settings, browser: Browser, tmp_path: Path
) -> None:
    s = serve_settings(kafka_settings.model_copy(update={"partitions": 1}))
    redis = await seed(s, tmp_path)
    await redis.aclose()
    server = Server(s, tmp_path / "serve.log")
    try:
        await browser.start(f"{server.base}/?token={TOKEN}")
        await browser.wait_for("document.querySelectorAll('#playbooks tbody tr').length === 3")
        assert "12 months to 2026-11" in await browser.text("#playbooks-section h2")
        red = await browser.text('#playbooks tr[data-playbook="band_red"]')
        assert "33.3%" in red and "3.0 h" in red
        assert await browser.text('#playbooks tr[data-playbook="band_red"] .save-done') == "100.0% (1/1)"
        assert await browser.text('#playbooks tr[data-playbook="band_red"] .save-baseline') == "50.0% (1/2)"
        assert await browser.text('#playbooks tr[data-playbook="band_yellow"] .superseded') == "1"
        assert await browser.text('#playbooks tr[data-playbook="band_red"] .superseded') == "0"
        assert await browser.text('#playbooks tr[data-playbook="all"] .superseded') == "1"
        assert await browser.evaluate(
            "[...document.querySelectorAll('#playbook-csms tbody tr')].map(r => r.dataset.owner)"
        ) == [ANA, BO]
        assert await browser.text(f'#playbook-csms tr[data-owner="{BO}"] .save-baseline') == "100.0% (1/1)"
        # the CSM table's task columns (November: nothing opened, so no on time %)
        ana = f'#csms tr[data-csm="{ANA}"]'
        assert (await browser.text(f"{ana} .open-tasks"), await browser.text(f"{ana} .overdue-tasks")) == (
            "1",
            "1",
        )
        assert await browser.text(f"{ana} .on-time") == "\u2013"  # an en dash: none
    finally:
        server.stop()
