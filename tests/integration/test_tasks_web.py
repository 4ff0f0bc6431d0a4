"""Task actions through `healthmon serve` and `healthmon tasks-worker` as processes, the real broker and
Redis: the API (token, who, 4xx that change nothing), signed one-click links (forged, expired, reused
refused) and Slack's signed interactions (unsigned, stale refused)."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from urllib.parse import urlencode, urlsplit

import aiohttp
import orjson
import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from pydantic import SecretStr
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from alerts.links import LINK_SALT
from rules.model import Action
from streams.readmodel.tasks import get_task, list_tasks
from streams.settings import Settings
from streams.tasks.model import Task
from streams.web.tasks_api import sign_link
from tests.alert_fixtures import make_alert
from tests.conftest import WorkerProcess
from tests.helpers import collect, produce, setup_topics
from tests.integration.test_serve_api import Server, free_port

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
TOKEN = "s3cret-token"
LINK_SECRET = "link-secret-for-tests"
SLACK_SECRET = "slack-signing-secret"
CHECK_IN = Action.model_validate({"step": "Check-in call", "respond_within": "48h"})
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def stack(kafka_settings: Settings, tmp_path) -> Iterator[tuple[Settings, Server]]:
    s = kafka_settings.model_copy(
        update={
            "clock": "live",
            "partitions": 1,
            "serve_port": free_port(),
            "api_token": SecretStr(TOKEN),
            "task_link_secret": SecretStr(LINK_SECRET),
            "slack_signing_secret": SecretStr(SLACK_SECRET),
            "public_url": "https://healthmon.example.com",
        }
    )
    asyncio.run(setup_topics(s))
    w = WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker").start()
    srv = Server(s, tmp_path / "serve.log")
    try:
        yield s, srv
    finally:
        srv.stop()
        w.stop()


async def open_task(s: Settings, redis: Redis, account: str) -> Task:
    a = make_alert(account=account, rule="health_below_60", episode=int(time.time()))
    await produce(
        s,
        [
            (
                s.topic("alerts"),
                account.encode(),
                a.model_copy(update={"playbook": CHECK_IN}).model_dump_json().encode(),
            )
        ],
    )
    return await wait_for(redis, s, lambda t: t.account_id == account, owner="ana@example.com")


async def wait_for(
    redis: Redis, s: Settings, pred: Callable[[Task], bool], timeout: float = 30, **query
) -> Task:
    """Poll the read model until a task matches (the positive signal that the worker applied it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for t in await list_tasks(redis, s.redis_prefix, **query):
            if pred(t):
                return t
        await asyncio.sleep(0.1)
    raise AssertionError(
        f"no task matching within {timeout}s: {await list_tasks(redis, s.redis_prefix, **query)}"
    )


async def action_count(s: Settings) -> int:
    return len(await collect(s, "task_actions", None, timeout=1.5))


async def test_the_api_lists_and_acts_on_tasks_recording_who(stack):
    s, srv = stack
    redis = Redis.from_url(s.redis_url)
    try:
        task = await open_task(s, redis, "acme")
        async with aiohttp.ClientSession(base_url=srv.base) as http:
            async with http.get("/api/tasks", params={"owner": "ana@example.com"}) as r:
                assert r.status == 401  # the same token rules as the rest of the API
            async with http.get("/api/tasks", params={"owner": "ana@example.com"}, headers=AUTH) as r:
                assert r.status == 200 and [t["task_id"] for t in (await r.json())["items"]] == [task.task_id]
            async with http.get(f"/api/tasks/{task.task_id}", headers=AUTH) as r:
                assert r.status == 200 and (await r.json())["due_at"] == task.due_at.isoformat().replace(
                    "+00:00", "Z"
                )

            async def post(verb: str, body: dict, task_id: str = task.task_id) -> tuple[int, dict]:
                async with http.post(f"/api/tasks/{task_id}/{verb}", json=body, headers=AUTH) as r:
                    return r.status, await r.json()

            # bad requests: a clear 4xx, nothing produced
            assert (await post("acknowledge", {}))[0] == 400  # who?
            assert (await post("complete", {"by": "ana", "outcome": "great"}))[0] == 400
            assert (await post("acknowledge", {"by": "ana"}, "nope"))[0] == 404
            assert (await post("explode", {"by": "ana"}))[0] == 404
            assert await action_count(s) == 0

            status, body = await post("acknowledge", {"by": "ana@example.com"})
            assert status == 202 and body["task"]["state"] == "acknowledged"
            await wait_for(redis, s, lambda t: t.state == "acknowledged", owner="ana@example.com")
            assert (await post("snooze", {"by": "ana@example.com", "snooze_for": "2h"}))[0] == 202
            assert (await post("reassign", {"by": "lead@example.com", "owner": "bo@example.com"}))[0] == 202
            moved = await wait_for(redis, s, lambda t: t.task_id == task.task_id, owner="bo@example.com")
            assert moved.snoozed_until is not None
            assert (await post("complete", {"by": "bo@example.com", "outcome": "save_plan_agreed"}))[0] == 202
            done = await wait_for(redis, s, lambda t: t.task_id == task.task_id, state="done")
            assert [(h.by, h.action) for h in done.history] == [
                ("healthmon", "opened"),
                ("ana@example.com", "acknowledge"),
                ("ana@example.com", "snooze"),
                ("lead@example.com", "reassign"),
                ("bo@example.com", "complete"),
            ]
            assert done.outcome == "save_plan_agreed"
            # a transition the machine refuses: 409 with the reason, nothing produced
            status, body = await post("dismiss", {"by": "ana", "reason": "dup"})
            assert status == 409 and "is done" in body["error"]["message"]
            assert await action_count(s) == 4
            async with http.get("/api/openapi.json", headers=AUTH) as r:
                doc = await r.json()
                assert {
                    "/api/tasks",
                    "/api/tasks/{task_id}/{verb}",
                    "/t/{token}",
                    "/slack/interactions",
                } <= set(doc["paths"])
    finally:
        await redis.aclose()


async def test_signed_links_and_slack_interactions(stack):
    s, srv = stack
    redis = Redis.from_url(s.redis_url)
    try:
        task = await open_task(s, redis, "beta")
        ack = sign_link(s, task, "acknowledge", by="ana@example.com")
        assert ack.startswith("https://healthmon.example.com/t/")
        path = urlsplit(ack).path
        token = path.removeprefix("/t/")
        forged = path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB")
        other_secret = URLSafeTimedSerializer("not-the-secret", salt=LINK_SALT).dumps(
            {"t": task.task_id, "a": "beta", "v": "acknowledge", "by": "mallory", "o": None}
        )

        class Old(TimestampSigner):
            def get_timestamp(self) -> int:
                return int(time.time()) - 8 * 86400  # signed 8 days ago; valid for 7

        expired = URLSafeTimedSerializer(LINK_SECRET, salt=LINK_SALT, signer=Old).dumps(
            {"t": task.task_id, "a": "beta", "v": "acknowledge", "by": "ana", "o": None}
        )
        async with aiohttp.ClientSession(base_url=srv.base) as http:  # no bearer token: links carry their own
            async with http.get(path) as r:
                page = await r.text()
                assert r.status == 200 and '<form method="post">' in page and "Acknowledge" in page
            for bad, status, says in [
                (forged, 400, "not valid"),
                (f"/t/{other_secret}", 400, "not valid"),
                (f"/t/{expired}", 410, "expired"),
            ]:
                for method in (http.get, http.post):
                    async with method(bad) as r:
                        assert r.status == status and says in await r.text()
            async with http.post(path) as r:
                assert r.status == 200 and "Task acknowledged" in await r.text()
            acked = await wait_for(
                redis,
                s,
                lambda t: t.account_id == "beta" and t.state == "acknowledged",
                owner="ana@example.com",
            )
            assert [(h.by, h.action) for h in acked.history][-1] == ("ana@example.com", "acknowledge")
            # used again: refused with a page that says so, and nothing more is produced
            before = await action_count(s)
            for method in (http.get, http.post):
                async with method(path) as r:
                    assert r.status == 409 and "already used" in await r.text()
            assert await action_count(s) == before == 1
            used = f"{s.redis_prefix}tasklink:used:{hashlib.sha256(token.encode()).hexdigest()[:32]}"
            assert await redis.get(used) is not None

            # Slack: a signed interaction completes the task; unsigned, stale or wrongly signed ones are refused
            payload = {
                "type": "block_actions",
                "user": {"id": "U123", "username": "ana"},
                "actions": [
                    {
                        "action_id": "task_done_reached",
                        "value": task.task_id,
                        "action_ts": "1765000000.000100",
                    }
                ],
            }
            body = urlencode({"payload": orjson.dumps(payload).decode()})

            def headers(ts: int, secret: str = SLACK_SECRET) -> dict:
                sig = SignatureVerifier(secret).generate_signature(timestamp=str(ts), body=body)
                return {
                    "X-Slack-Request-Timestamp": str(ts),
                    "X-Slack-Signature": sig,
                    "Content-Type": "application/x-www-form-urlencoded",
                }

            now = int(time.time())
            for h in [{}, headers(now - 6 * 60), headers(now, "wrong-secret")]:
                async with http.post("/slack/interactions", data=body, headers=h) as r:
                    assert r.status == 401
            assert await action_count(s) == 1
            async with http.post("/slack/interactions", data=body, headers=headers(now)) as r:
                assert r.status == 200
                reply = await r.json()
                assert "done by slack:ana" in reply["text"], reply
            done = await wait_for(redis, s, lambda t: t.task_id == task.task_id, state="done")
            assert done.outcome == "reached" and done.history[-1].by == "slack:ana"
            # Slack retries a request it got no answer to: the same action id, applied once
            async with http.post("/slack/interactions", data=body, headers=headers(int(time.time()))) as r:
                assert r.status == 200
            # a later action on the same partition of cs.task-actions, applied: the retry was read before it
            other = await open_task(s, redis, "gamma")
            async with http.post(
                f"/api/tasks/{other.task_id}/acknowledge", json={"by": "ana"}, headers=AUTH
            ) as r:
                assert r.status == 202
            await wait_for(
                redis,
                s,
                lambda t: t.task_id == other.task_id and t.state == "acknowledged",
                owner="ana@example.com",
            )
            stored = await get_task(redis, s.redis_prefix, task.task_id)
            assert stored is not None and [h.action for h in stored.history].count("complete") == 1
            assert stored.history[-1].by == "slack:ana"
        assert datetime.now(UTC) < task.due_at
    finally:
        await redis.aclose()
