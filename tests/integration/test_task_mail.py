"""Task reminders, escalations and one-click links in real mail: `healthmon tasks-worker` (a process),
delivery, the real broker, Redis and an SMTP server (aiosmtpd); the link through `healthmon serve`."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime, timedelta
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from alerts.config import RoutingConfig
from alerts.worker import NOTICE_PARTITIONS, DeliveryWorker
from rules.model import Action, AlertEvent
from streams.readmodel.tasks import get_task, list_tasks
from tests.alert_fixtures import make_alert
from tests.conftest import WorkerProcess
from tests.helpers import collect, produce, setup_topics
from tests.integration.test_delivery_kafka import HttpChannel, Running, free_port, until
from tests.integration.test_delivery_kafka import mailbox as mailbox  # the fixture: a real SMTP server
from tests.integration.test_serve_api import Server

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
CHECK_IN = Action.model_validate({"step": "Check-in call", "respond_within": "48h"})
MANAGERS = "managers@example.com"
SLACK_SECRET = "slack-signing-secret"


def alert(account: str, starts_at: datetime, playbook: Action | None, csm: str) -> AlertEvent:
    a = make_alert(account=account, rule="band_red", episode=int(starts_at.timestamp()), csm=csm)
    return a.model_copy(update={"playbook": playbook, "starts_at": starts_at, "active_since": starts_at})


def routing(slack_port: int | None = None) -> RoutingConfig:
    """The shipped tree's shape: escalations to the managers, everything else into the CSM's digest
    (and, with ``slack_port``, to Slack as well)."""
    slack = [] if slack_port is None else [{"receiver": "slack", "continue": True}]
    hook = {"webhook_url": f"http://127.0.0.1:{slack_port}/slack"}
    return RoutingConfig.model_validate(
        {
            "profile_wait": 0,
            "receivers": [
                {"name": "csm-email", "email": {"to": ["account_csm"], "sender": "hm@example.com"}},
                {"name": "cs-managers", "email": {"to": [MANAGERS], "sender": "hm@example.com"}},
                *([{"name": "slack", "slack": hook}] if slack_port is not None else []),
            ],
            "route": {
                "receiver": "csm-email",
                "group_by": ["csm"],
                "group_wait": 1,
                "group_interval": 1,
                "repeat_interval": 3600,
                "routes": [*slack, {"match": {"to_role": "manager"}, "receiver": "cs-managers"}, {}],
            },
        }
    )


def texts(box, rcpt: str) -> list[str]:
    return [m.get_body(("plain",)).get_content() for to, m in box.messages if to == [rcpt]]


async def test_no_action_one_reminder_in_the_digest_and_one_escalation_to_the_managers(
    kafka_settings, mailbox, tmp_path
):
    s = kafka_settings.model_copy(update={"partitions": 1, "smtp_port": mailbox.port})  # event clock
    assert s.clock == "event"
    await setup_topics(s)
    w = WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker").start()
    try:
        t0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
        records = [
            alert("acme", t0, CHECK_IN, "ana@example.com"),
            # another account's alert 50 h later moves the partition's event clock past the deadline
            alert("beta", t0 + timedelta(hours=50), None, "bo@example.com"),
        ]
        await produce(
            s, [(s.topic("alerts"), a.account_id.encode(), a.model_dump_json().encode()) for a in records]
        )
        notices = await collect(
            s, "task_notices", lambda rs: any(b'"escalation"' in r.value for r in rs), timeout=60
        )
        async with Running(DeliveryWorker(s, routing())) as worker:
            await until(
                lambda: (
                    texts(mailbox, MANAGERS)
                    and any("Reminder" in t for t in texts(mailbox, "ana@example.com"))
                )
            )
            # the positive signal: every notice read and nothing in flight; then count
            last = notices[-1].offset
            await until(lambda: worker.consumed.get(NOTICE_PARTITIONS) == last and not worker.tasks)
            await until(
                lambda: worker.dispatcher.committable(worker.consumed) == {0: 2, NOTICE_PARTITIONS: last + 1}
            )
        ana = texts(mailbox, "ana@example.com")
        reminders = [t for t in ana if "Reminder: task due 2026-10-03 09:00 UTC (band_red)" in t]
        assert len(reminders) == 1, ana
        assert "Next step: Check-in call" in reminders[0]
        (escalation,) = texts(mailbox, MANAGERS)
        assert "acme Inc" in escalation
        assert (
            "Escalated: not acknowledged by ana@example.com at its deadline 2026-10-03 09:00 UTC"
            in escalation
        )
        assert "health 42 (yellow) when it last fired" in escalation
        assert "Escalated" not in "".join(ana)  # to the managers only
        assert not [m for to, m in mailbox.messages if to == ["bo@example.com"] and "Reminder" in str(m)]
    finally:
        w.stop()


async def test_a_link_from_the_digest_acknowledges_and_a_slack_button_completes_the_task_through_serve(
    kafka_settings, mailbox, tmp_path
):
    port = free_port()
    s = kafka_settings.model_copy(
        update={
            "clock": "live",
            "partitions": 1,
            "smtp_port": mailbox.port,
            "serve_port": port,
            "api_token": SecretStr("token"),
            "task_link_secret": SecretStr("link-secret"),
            "public_url": f"http://127.0.0.1:{port}",
            "slack_signing_secret": SecretStr(SLACK_SECRET),
        }
    )
    await setup_topics(s)
    w = WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker").start()
    srv = Server(s, tmp_path / "serve.log")
    redis = Redis.from_url(s.redis_url)
    try:
        a = alert("acme", datetime.now(UTC).replace(microsecond=0), CHECK_IN, "ana@example.com")
        await produce(s, [(s.topic("alerts"), b"acme", a.model_dump_json().encode())])
        deadline = time.monotonic() + 30
        while not (tasks := await list_tasks(redis, s.redis_prefix, owner="ana@example.com")):
            assert time.monotonic() < deadline, "no task opened"
            await asyncio.sleep(0.1)
        (task,) = tasks
        async with HttpChannel() as slack, Running(DeliveryWorker(s, routing(slack.port))):
            await until(lambda: texts(mailbox, "ana@example.com") and slack.bodies("slack"))
        (text,) = texts(mailbox, "ana@example.com")
        (html,) = [m.get_body(("html",)).get_content() for _, m in mailbox.messages]
        links = dict(re.findall(r"(Acknowledge|Done: reached): (http\S+)", text))
        assert set(links) == {"Acknowledge", "Done: reached"}, text
        assert links["Acknowledge"] in html
        path = urlsplit(links["Acknowledge"]).path
        async with aiohttp.ClientSession(base_url=srv.base) as http:
            async with http.get(path) as r:
                assert r.status == 200 and '<form method="post">' in await r.text()
            async with http.post(path) as r:
                assert r.status == 200 and "Task acknowledged" in await r.text()
        deadline = time.monotonic() + 30
        while (
            got := await get_task(redis, s.redis_prefix, task.task_id)
        ) is None or got.state != "acknowledged":
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.1)
        assert [(h.by, h.action) for h in got.history][-1] == ("ana@example.com", "acknowledge")

        # the Slack message carries the task's buttons; clicking "Done: reached" (signed as Slack does)
        (message,) = slack.bodies("slack")
        (buttons,) = [b for b in message["blocks"] if b["type"] == "actions"]
        done = next(e for e in buttons["elements"] if e["text"]["text"] == "Done: reached")
        assert done["value"] == task.task_id
        click = {
            "type": "block_actions",
            "user": {"id": "U1", "username": "ana"},
            "actions": [{"action_id": done["action_id"], "value": done["value"], "action_ts": "1.1"}],
        }
        body = urlencode({"payload": orjson.dumps(click).decode()})
        ts = str(int(time.time()))
        signed = {
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": SignatureVerifier(SLACK_SECRET).generate_signature(timestamp=ts, body=body),
            "Content-Type": "application/x-www-form-urlencoded",
        }
        async with aiohttp.ClientSession(base_url=srv.base) as http:
            async with http.post("/slack/interactions", data=body, headers=signed) as r:
                assert r.status == 200 and "done by slack:ana" in (await r.json())["text"]
        deadline = time.monotonic() + 30
        while (got := await get_task(redis, s.redis_prefix, task.task_id)) is None or got.state != "done":
            assert time.monotonic() < deadline, got
            await asyncio.sleep(0.1)
        assert (got.outcome, got.history[-1].by) == ("reached", "slack:ana")
    finally:
        await redis.aclose()
        srv.stop()
        w.stop()


async def test_a_same_day_task_is_due_at_the_end_of_the_account_s_own_day(kafka_settings, tmp_path):
    s = kafka_settings.model_copy(update={"partitions": 1, "tasks_time_zone": "America/Los_Angeles"})
    await setup_topics(s)
    w = WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker").start()
    try:
        t0 = datetime(2026, 12, 7, 20, tzinfo=UTC)  # 05:00 on the 8th in Tokyo, 12:00 on the 7th in LA
        same_day = Action.model_validate({"step": "Reach out", "respond_within": "same_day"})
        tokyo, la = (
            alert("tokyo", t0, same_day, "ana@example.com"),
            alert("la", t0, same_day, "ana@example.com"),
        )
        tokyo = tokyo.model_copy(
            update={"account": tokyo.account.model_copy(update={"time_zone": "Asia/Tokyo"})}
        )
        await produce(
            s, [(s.topic("alerts"), a.account_id.encode(), a.model_dump_json().encode()) for a in (tokyo, la)]
        )
        recs = await collect(s, "task_notices", lambda rs: len(rs) >= 2, timeout=60)
        due = {n["account_id"]: n["task"]["due_at"] for n in map(orjson.loads, (r.value for r in recs))}
        assert due == {"tokyo": "2026-12-08T15:00:00Z", "la": "2026-12-08T08:00:00Z"}  # la: the fallback zone
    finally:
        w.stop()
