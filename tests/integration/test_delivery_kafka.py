"""Alert delivery end to end: real Kafka, Redis, an SMTP server (aiosmtpd) and a local HTTP server."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import socket
import time
from email import message_from_bytes
from email.policy import default
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from alerts.config import RoutingConfig
from alerts.store import DeliveryStore, Silence
from alerts.worker import DeliveryWorker
from tests.alert_fixtures import make_alert
from tests.conftest import WorkerProcess
from tests.helpers import collect, produce, setup_topics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
SECRET = "hook-secret"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class HttpChannel:
    """A real HTTP server that answers from a script: 200, 429, 500, 404 or 'hang'."""

    def __init__(self) -> None:
        self.script: list[int | str] = []
        self.received: list[tuple[str, dict, bytes]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.received.append((request.path, dict(request.headers), body))
        step = self.script.pop(0) if self.script else 200
        if step == "hang":
            await asyncio.sleep(30)
        if step == 429:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=int(step) if step != "hang" else 200, text="ok")

    def bodies(self, path: str) -> list[dict]:
        return [orjson.loads(b) for p, _, b in self.received if p.strip("/") == path]

    async def __aenter__(self) -> HttpChannel:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


class Mailbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content, policy=default)))
        return "250 OK"


@pytest.fixture
def mailbox():
    box = Mailbox()
    ctl = Controller(box, hostname="127.0.0.1", port=free_port())
    ctl.start()
    box.port = ctl.port
    yield box
    ctl.stop()


def routing(http_port: int, slack_timeout: float = 10.0) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "csm-email",
                    "email": {"to": ["account_csm"], "sender": "healthmon@example.com"},
                    "rate_per_s": 100,
                },
                {
                    "name": "slack",
                    "slack": {
                        "webhook_url": f"http://127.0.0.1:{http_port}/slack",
                        "timeout_s": slack_timeout,
                    },
                    "rate_per_s": 100,
                },
                {
                    "name": "hook",
                    "webhook": {"url": f"http://127.0.0.1:{http_port}/hook", "secret": SECRET},
                    "rate_per_s": 100,
                },
            ],
            "route": {
                "receiver": "csm-email",
                "group_by": ["csm"],
                "group_wait": 1,
                "group_interval": 1,
                "repeat_interval": 3600,
                "routes": [
                    {"match": {"rule": "webhook_only"}, "receiver": "hook"},
                    {"match": {"rule": "slack_only"}, "receiver": "slack"},
                    {"receiver": "slack", "continue": True},
                    {"receiver": "csm-email"},
                ],
            },
        }
    )


async def produce_alerts(s, alerts) -> None:
    await produce(
        s, [(s.topic("alerts"), a.account_id.encode(), a.model_dump_json().encode()) for a in alerts]
    )


RUNNING: list = []


async def until(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        for r in RUNNING:
            if r.task.done():
                raise AssertionError(f"the delivery worker stopped: {r.task.exception()!r}")
        await asyncio.sleep(0.1)
    state = [
        (
            {k: (len(g.alerts), g.last_flush, g.attempts) for k, g in r.worker.dispatcher.groups.items()},
            [
                (m.name, m.samples[0].labels, m.samples[0].value)
                for m in r.worker.metrics.registry.collect()
                if m.samples and m.samples[0].value
            ],
        )
        for r in RUNNING
    ]
    raise AssertionError(f"condition not met in time; groups: {state}")


class Running:
    def __init__(self, worker: DeliveryWorker) -> None:
        self.worker = worker

    async def __aenter__(self) -> DeliveryWorker:
        self.task = asyncio.create_task(self.worker.run())
        RUNNING.append(self)
        return self.worker

    async def __aexit__(self, *exc) -> None:
        RUNNING.remove(self)
        self.worker._stop.set()
        await asyncio.wait_for(self.task, 20)


def settings_for(kafka_settings, mailbox=None):
    return kafka_settings.model_copy(
        update={"smtp_port": mailbox.port if mailbox else 25, "retry_max_delay_s": 2.0}
    )


async def test_a_storm_of_200_alerts_becomes_one_email_and_one_slack_message(kafka_settings, mailbox):
    s = settings_for(kafka_settings, mailbox)
    await setup_topics(s)
    hostile = "Evil <!channel> & Co @here\r\nBcc: victim@example.com"
    alerts = [make_alert(account=f"acc-{i}", name=hostile if i == 0 else None) for i in range(200)]
    async with HttpChannel() as http:
        worker = DeliveryWorker(s, routing(http.port))
        async with Running(worker):
            await produce_alerts(s, alerts)
            await until(lambda: mailbox.messages and http.bodies("slack"))
            await asyncio.sleep(2.5)  # a second message would come within group_interval
        assert len(mailbox.messages) == 1 and len(http.bodies("slack")) == 1
        rcpts, msg = mailbox.messages[0]
        assert rcpts == ["ana@example.com"] and msg["Bcc"] is None
        assert (
            msg["Subject"].strip().startswith("[healthmon] 200 firing (200 new)")
            and "\n" not in msg["Subject"]
        )
        html = msg.get_body(("html",)).get_content()
        text = msg.get_body(("plain",)).get_content()
        assert (
            "200 accounts need attention (200 new)" in text
            and "Next step: Send the re-engagement email" in text
        )
        assert "&lt;!channel&gt;" in html and "<!channel>" not in html
        slack = http.bodies("slack")[0]
        raw = orjson.dumps(slack)
        assert b"<!channel>" not in raw and b"@here" not in raw
        assert slack["blocks"][0]["text"]["text"] == "healthmon: 200 firing"
        assert "and 185 more accounts" in slack["blocks"][-1]["elements"][0]["text"]
        assert (
            worker.metrics.value("healthmon_notifications_sent", channel="email", receiver="csm-email") == 1
        )


async def test_slack_outage_429_500_timeout_then_delivered_once_and_404_dead_lettered(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    async with HttpChannel() as http:
        http.script = [429, 500, "hang", 200]
        worker = DeliveryWorker(s, routing(http.port, slack_timeout=1.0))
        async with Running(worker):
            await produce_alerts(s, [make_alert(account="a1", rule="slack_only")])
            await until(lambda: len(http.received) >= 4, timeout=40)  # 429, 500, timeout, 200
            await asyncio.sleep(1.5)
            sent = worker.metrics.value("healthmon_notifications_sent", channel="slack", receiver="slack")
            assert sent == 1
            assert (
                worker.metrics.value("healthmon_notifications_retried", channel="slack", receiver="slack")
                >= 3
            )
            http.script = [404, 404]
            await produce_alerts(s, [make_alert(account="a2", rule="slack_only", csm="two@example.com")])
            dead = await collect(s, "alerts_deadletter", lambda rs: len(rs) >= 1, timeout=20)
            attempts = len(http.received)
            await asyncio.sleep(2)
            assert len(http.received) == attempts == 5  # dead-lettered at once: no retries
        body = orjson.loads(dead[0].value)
        assert "rejected with 404" in body["reason"]
        assert body["notification"]["firing"][0]["account_id"] == "a2"
        assert b"127.0.0.1" not in dead[0].value  # the webhook URL is a secret


async def test_webhook_is_signed_and_idempotent(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    async with HttpChannel() as http:
        async with Running(DeliveryWorker(s, routing(http.port))):
            await produce_alerts(s, [make_alert(account="w1", rule="webhook_only")])
            await until(lambda: http.bodies("hook"))
        _, headers, body = next(r for r in http.received if r[0] == "/hook")
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Healthmon-Signature"] == expected
        assert len(headers["Idempotency-Key"]) == 32
        assert orjson.loads(body)["firing"][0]["rule_id"] == "webhook_only"


async def test_silenced_alerts_are_recorded_not_sent(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    redis = Redis.from_url(s.redis_url)
    store = DeliveryStore(redis, s.redis_prefix)
    await store.add_silence(
        Silence(matchers={"account": "quiet"}, ends_at=time.time() + 3600, created_by="ana")
    )
    try:
        async with HttpChannel() as http:
            async with Running(DeliveryWorker(s, routing(http.port))) as worker:
                await produce_alerts(
                    s,
                    [
                        make_alert(account="quiet", rule="webhook_only"),
                        make_alert(account="loud", rule="webhook_only", csm="b@example.com"),
                    ],
                )
                await until(lambda: http.bodies("hook"))
                await asyncio.sleep(1.5)
            accounts = [a["account_id"] for b in http.bodies("hook") for a in b["firing"]]
            assert accounts == ["loud"]
            assert worker.metrics.value("healthmon_alerts_silenced", receiver="hook") == 1
            recorded = [orjson.loads(x) for x in await redis.lrange(f"{s.redis_prefix}silenced", 0, -1)]
            assert recorded[0]["alert_id"] == make_alert(account="quiet", rule="webhook_only").alert_id
    finally:
        await redis.aclose()


async def test_restart_mid_way_neither_duplicates_nor_loses(kafka_settings, tmp_path: Path):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    async with HttpChannel() as http:
        cfg = tmp_path / "routing.yaml"
        cfg.write_text(
            "receivers:\n"
            f"  - {{name: hook, webhook: {{url: 'http://127.0.0.1:{http.port}/hook', secret: {SECRET}}}, rate_per_s: 100}}\n"
            "route: {receiver: hook, group_by: [csm], group_wait: 1s, group_interval: 1s, repeat_interval: 1d}\n"
        )
        proc = DeliveryProcess(s.model_copy(update={"routing": cfg}), tmp_path / "deliver.log")
        first = [make_alert(account=f"a{i}", csm="one@example.com") for i in range(3)]
        proc.start()
        await produce_alerts(s, first)
        await until(lambda: http.bodies("hook"))
        proc.stop()
        resolved = [make_alert(account=f"a{i}", csm="one@example.com", status="resolved") for i in range(3)]
        later = [make_alert(account=f"b{i}", csm="two@example.com") for i in range(2)]
        await produce_alerts(s, [*resolved, *later])
        proc.start()
        await until(lambda: len(http.bodies("hook")) >= 3)
        await asyncio.sleep(2.5)
        proc.stop()
    seen = [(a["account_id"], a["status"]) for b in http.bodies("hook") for a in b["firing"] + b["resolved"]]
    expected = [(a.account_id, a.status) for a in [*first, *resolved, *later]]
    assert sorted(seen) == sorted(expected), seen  # each once: nothing lost, nothing twice


class DeliveryProcess(WorkerProcess):
    """``healthmon deliver`` as its own process."""

    def start(self, timeout: float = 30) -> DeliveryProcess:
        import subprocess
        import sys

        from tests.conftest import ROOT, settings_env

        env = settings_env(self.settings)
        env["HEALTHMON_ROUTING"] = str(self.settings.routing)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "deliver"],
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        return self


def test_silence_cli_validates_and_lists_in_human_time(kafka_settings, monkeypatch):
    import redis
    from click.testing import CliRunner

    from streams.cli.main import main
    from streams.settings import get_settings

    monkeypatch.setenv("HEALTHMON_REDIS_URL", kafka_settings.redis_url)
    monkeypatch.setenv("HEALTHMON_REDIS_PREFIX", kafka_settings.redis_prefix)
    r = redis.Redis.from_url(kafka_settings.redis_url)
    r.hset(f"{kafka_settings.redis_prefix}account:acme", mapping={"name": "Acme Corp", "csm": "ana@x.com"})
    r.close()
    get_settings.cache_clear()
    try:
        runner = CliRunner()
        added = runner.invoke(main, ["silence", "add", "--account", "acme", "--for", "2d", "--by", "ana"])
        assert added.exit_code == 0, added.output
        silence_id = added.output.split()[1].rstrip(":")
        assert "account=acme until 20" in added.output and " UTC (2d)" in added.output
        listed = runner.invoke(main, ["silence", "list"])
        assert listed.output.startswith(f"{silence_id}  account=acme  until 20")
        assert "(1d23h59m left) by ana" in listed.output or "(2d left) by ana" in listed.output
        assert '"account":"acme"' in runner.invoke(main, ["silence", "list", "--json"]).output
        for bad, why in [
            (["--for", "2d"], "give at least one of"),
            (["--account", "Acme Corp", "--for", "2d"], "is not a known account id"),
            (["--rule", "no_such_rule", "--for", "2d"], "is not a rule; known rules: "),
            (["--csm", "ana", "--for", "2d"], "is not an email address"),
            (["--account", "acme", "--for", "soon"], "is not a duration"),
        ]:
            out = runner.invoke(main, ["silence", "add", *bad])
            assert out.exit_code == 1 and why in out.output, (bad, out.output)
        ok = runner.invoke(
            main, ["silence", "add", "--rule", "band_red", "--csm", "b@example.com", "--for", "1h"]
        )
        assert ok.exit_code == 0, ok.output
        assert runner.invoke(main, ["silence", "remove", silence_id]).exit_code == 0
        assert silence_id not in runner.invoke(main, ["silence", "list"]).output
    finally:
        get_settings.cache_clear()
