"""Delivery under faults, with real parts: Kafka, Redis, an SMTP server (aiosmtpd), an HTTP server.

Each test breaks something and asserts: every routed notification delivered (none lost), no identical
duplicate, the rate limit held, no process exits. Negative assertions wait on a positive signal: the
delivery group's committed offsets reaching the end of cs.alerts (nothing is pending any more).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from alerts.config import RoutingConfig
from alerts.store import DeliveryStore, Silence
from alerts.worker import DeliveryWorker
from tests.alert_fixtures import make_alert
from tests.helpers import setup_topics
from tests.integration.test_delivery_kafka import (
    SECRET,
    DeliveryProcess,
    Mailbox,
    Running,
    free_port,
    produce_alerts,
    until,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


class Http:
    """A real HTTP server; per path a script of answers (200, 429, 500) and an optional delay."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.script: list[int] = []
        self.received: list[tuple[float, str, dict, bytes, int]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        arrived = time.monotonic()
        if self.delay:
            await asyncio.sleep(self.delay)  # the server is slow: alerts keep arriving meanwhile
        status = self.script.pop(0) if self.script else 200
        self.received.append((arrived, request.path.strip("/"), dict(request.headers), body, status))
        if status == 429:
            return web.Response(status=429, headers={"Retry-After": "1"})
        return web.Response(status=status, text="ok")

    def delivered(self, path: str) -> list[dict]:
        return [orjson.loads(b) for _, p, _, b, st in self.received if p == path and st == 200]

    async def __aenter__(self) -> Http:
        app = web.Application()
        app.router.add_post("/{name}", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        self.port = free_port()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()
        return self

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


def hook_routing(port: int, group_by: list[str], rate: float = 100, **extra) -> RoutingConfig:
    return RoutingConfig.model_validate(
        {
            "receivers": [
                {
                    "name": "hook",
                    "webhook": {"url": f"http://127.0.0.1:{port}/hook", "secret": SECRET},
                    "rate_per_s": rate,
                },
                {
                    "name": "fallback",
                    "webhook": {"url": f"http://127.0.0.1:{port}/fallback", "secret": SECRET},
                },
            ],
            "route": {
                "receiver": "hook",
                "group_by": group_by,
                "group_wait": 1,
                "group_interval": 1,
                "repeat_interval": 3600,
            },
            **extra,
        }
    )


async def caught_up(s) -> bool:
    """The delivery group has committed everything on cs.alerts: no notification is pending."""
    admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    await admin.start()
    await consumer.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{s.app_id}-delivery")
        tps = [TopicPartition(s.topic("alerts"), p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        return all(ends[tp] == 0 or (tp in committed and committed[tp].offset == ends[tp]) for tp in tps)
    finally:
        await admin.close()
        await consumer.stop()


async def until_caught_up(s, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await caught_up(s):
            return
        await asyncio.sleep(0.3)
    raise AssertionError("delivery did not commit to the end of cs.alerts in time")


def events(bodies: list[dict]) -> list[tuple[str, str, str]]:
    return [
        (a["account_id"], a["rule_id"], a["status"]) for b in bodies for a in [*b["firing"], *b["resolved"]]
    ]


def settings_for(kafka_settings, **over):
    return kafka_settings.model_copy(update={"retry_max_delay_s": 2.0, **over})


async def test_alerts_arriving_mid_flush_are_all_delivered(kafka_settings):
    """The bug: a flush released everything its group held, also what arrived while it was sending."""
    s = settings_for(kafka_settings)
    await setup_topics(s)
    csms = [f"csm{i}@example.com" for i in range(3)]
    firing = [make_alert(account=f"a{i}", csm=csms[i % 3]) for i in range(45)]
    resolved = [make_alert(account=f"a{i}", csm=csms[i % 3], status="resolved") for i in range(0, 45, 3)]
    async with Http(delay=0.4) as http:
        async with Running(DeliveryWorker(s, hook_routing(http.port, ["csm"]))):
            for i in range(0, 45, 5):  # bursts while the groups' messages are being sent
                await produce_alerts(s, firing[i : i + 5])
                if i % 15 == 10:
                    await produce_alerts(s, resolved[i // 15 * 5 : i // 15 * 5 + 5])
                await asyncio.sleep(0.35)
            await until_caught_up(s)
            sent = len(http.received)
            assert await caught_up(s) and len(http.received) == sent
    bodies = http.delivered("hook")
    keys = [h["Idempotency-Key"] for _, p, h, _, st in http.received if p == "hook"]
    assert len(keys) == len(set(keys)), "an identical notification was sent twice"
    order = events(bodies)
    fired = {a for a, _, st in order if st == "firing"}
    gone = {a.account_id for a in resolved}
    assert {a.account_id for a in firing} - gone <= fired  # every still-firing alert was delivered
    for account in gone:
        told = [st for a, _, st in order if a == account]
        # told and then told it resolved (once), or fired and resolved before anyone was told: nothing
        assert told == [] or (told[0] == "firing" and told.count("resolved") == 1), (account, told)
    assert any(st == "resolved" for _, _, st in order)


async def test_slack_429_with_retry_after_and_the_rate_limit_holds(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    async with Http() as http:
        http.script = [429, 429]
        routing = hook_routing(http.port, ["account"], rate=2)
        async with Running(DeliveryWorker(s, routing)) as worker:
            alerts = [make_alert(account=f"r{i}") for i in range(10)]
            await produce_alerts(s, alerts)
            await until(lambda: len(http.delivered("hook")) >= 10, timeout=60)
            await until_caught_up(s)
            assert (
                worker.metrics.value("healthmon_notifications_retried", channel="webhook", receiver="hook")
                == 2
            )
    times = [t for t, p, *_ in http.received if p == "hook"]
    statuses = [st for *_, st in http.received]
    assert statuses[:2] == [429, 429] and len(http.delivered("hook")) == 10  # none lost, none twice
    assert sorted(a for a, _, _ in events(http.delivered("hook"))) == sorted(a.account_id for a in alerts)
    # a request sent after a 429 came back waits its Retry-After (1 s); only those already on the way
    # when it came back (within a few ms) may arrive in between
    for t429 in [t for t, p, *_, st in http.received if st == 429]:
        early = [t - t429 for t in times if 0.05 < t - t429 < 0.95]
        assert early == [], f"Retry-After not honoured: requests {early} s after a 429"
    # leaky bucket of 2 a second (bucket 2): within any 1 s window at most 2 + 2 requests
    for t0 in times:
        assert sum(t0 <= t < t0 + 1.0 for t in times) <= 4


class SwitchableSmtp:
    def __init__(self) -> None:
        self.box = Mailbox()
        self.port = free_port()
        self.ctl: Controller | None = None

    def up(self) -> None:
        self.ctl = Controller(self.box, hostname="127.0.0.1", port=self.port)
        self.ctl.start()

    def down(self) -> None:
        if self.ctl is not None:
            self.ctl.stop()
            self.ctl = None


async def test_smtp_down_mid_run_then_back_loses_nothing(kafka_settings):
    smtp = SwitchableSmtp()
    smtp.up()
    s = settings_for(kafka_settings, smtp_port=smtp.port)
    await setup_topics(s)
    routing = RoutingConfig.model_validate(
        {
            "receivers": [{"name": "mail", "email": {"to": ["account_csm"]}, "rate_per_s": 50}],
            "route": {"receiver": "mail", "group_by": ["account"], "group_wait": 1, "group_interval": 1},
        }
    )
    try:
        async with Running(DeliveryWorker(s, routing)) as worker:
            await produce_alerts(s, [make_alert(account=f"m{i}") for i in range(3)])
            await until(lambda: len(smtp.box.messages) == 3)
            smtp.down()
            await produce_alerts(s, [make_alert(account=f"m{i}") for i in range(3, 8)])
            await until(
                lambda: (
                    worker.metrics.value("healthmon_notifications_retried", channel="email", receiver="mail")
                    >= 5
                )
            )
            assert len(smtp.box.messages) == 3 and not await caught_up(s)  # held, not committed
            smtp.up()
            await until(lambda: len(smtp.box.messages) >= 8, timeout=60)
            await until_caught_up(s)
    finally:
        smtp.down()
    groups = [m["X-Healthmon-Group"] for _, m in smtp.box.messages]
    assert len(groups) == len(set(groups)) == 8
    subjects = sorted(m["Subject"].strip() for _, m in smtp.box.messages)
    assert all("1 firing" in x for x in subjects)


async def test_a_silence_expiring_while_the_alert_fires_notifies_it(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    redis = Redis.from_url(s.redis_url)
    store = DeliveryStore(redis, s.redis_prefix)
    ends = time.time() + 4
    await store.add_silence(Silence(matchers={"account": "snoozed"}, ends_at=ends, created_by="ana"))
    try:
        async with Http() as http:
            async with Running(DeliveryWorker(s, hook_routing(http.port, ["account"]))) as worker:
                await produce_alerts(s, [make_alert(account="snoozed"), make_alert(account="other")])
                await until(lambda: worker.metrics.value("healthmon_alerts_silenced", receiver="hook") >= 1)
                assert [a for a, _, _ in events(http.delivered("hook"))] == ["other"]
                assert not await caught_up(s)  # the snoozed alert's offset is still held
                await until(lambda: len(http.delivered("hook")) == 2, timeout=20)
                delivered_at = time.time()
                await until_caught_up(s)
        assert delivered_at >= ends
        assert sorted(a for a, _, _ in events(http.delivered("hook"))) == ["other", "snoozed"]
    finally:
        await redis.aclose()


async def test_never_notified_resolution_is_not_sent_and_unknown_csm_waits_then_falls_back(kafka_settings):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    redis = Redis.from_url(s.redis_url)
    try:
        async with Http() as http:
            routing = hook_routing(http.port, ["csm"], fallback_receiver="fallback", profile_wait=3)
            async with Running(DeliveryWorker(s, routing)):
                await produce_alerts(
                    s,
                    [
                        # fired and resolved within group_wait: nobody was told, so no "0 firing, 1 resolved"
                        make_alert(account="blip"),
                        make_alert(account="blip", status="resolved"),
                        # the profile arrives later (the read model learns the CSM)
                        make_alert(account="late", csm=""),
                        # never any profile: the fallback receiver after profile_wait
                        make_alert(account="orphan", csm=""),
                    ],
                )
                await asyncio.sleep(0.5)
                await redis.hset(f"{s.redis_prefix}account:late", mapping={"csm": "late-csm@example.com"})
                await until(lambda: http.delivered("fallback") and http.delivered("hook"))
                await until_caught_up(s)
        hook = events(http.delivered("hook"))
        assert ("blip", "no_login_14d", "resolved") not in hook and ("late", "no_login_14d", "firing") in hook
        late = next(a for b in http.delivered("hook") for a in b["firing"] if a["account_id"] == "late")
        assert late["account"]["csm_email"] == "late-csm@example.com"
        assert events(http.delivered("fallback")) == [("orphan", "no_login_14d", "firing")]
        assert sum(st == "resolved" for _, _, st in hook) == 0
    finally:
        await redis.aclose()


async def test_two_deliver_processes_one_joining_one_killed(kafka_settings, tmp_path: Path):
    s = settings_for(kafka_settings)
    await setup_topics(s)
    async with Http() as http:
        cfg = tmp_path / "routing.yaml"
        cfg.write_text(
            "receivers:\n"
            f"  - {{name: hook, webhook: {{url: 'http://127.0.0.1:{http.port}/hook', secret: {SECRET}}}, rate_per_s: 100}}\n"
            "route: {receiver: hook, group_by: [account], group_wait: 1s, group_interval: 1s, repeat_interval: 1d}\n"
        )
        ps = s.model_copy(update={"routing": cfg})
        one = DeliveryProcess(ps, tmp_path / "one.log").start()
        two = DeliveryProcess(ps, tmp_path / "two.log")
        try:
            batches = [[make_alert(account=f"b{n}-{i}") for i in range(12)] for n in range(3)]
            await produce_alerts(s, batches[0])
            await until(lambda: len(http.delivered("hook")) >= 12)
            two.start()  # joins the group: the partitions are shared out
            await until(lambda: b"delivery owns partitions" in two.log())
            await produce_alerts(s, batches[1])
            await until(lambda: len(http.delivered("hook")) >= 24)
            await until_caught_up(s)
            assert one.alive() and two.alive(), "a deliver process exited on the rebalance"
            assert one.proc is not None
            one.proc.send_signal(signal.SIGKILL)
            one.proc.wait()
            await produce_alerts(s, batches[2])
            await until(lambda: len(http.delivered("hook")) >= 36, timeout=60)
            await until_caught_up(s, timeout=60)
            assert two.alive()
        finally:
            one.stop()
            rc = two.stop()
    assert rc == 0, two.log_tail()
    assert b"IllegalStateError" not in one.log() + two.log()
    got = Counter(a for a, _, _ in events(http.delivered("hook")))
    assert set(got) == {a.account_id for b in batches for a in b}
    assert all(n == 1 for n in got.values()), [a for a, n in got.items() if n > 1]


REDIS_FLAGS = ["--save", "", "--appendonly", "yes", "--appendfsync", "everysec"]  # as .ci/stack.sh


def start_redis(port: int, data: Path) -> subprocess.Popen:
    exe = shutil.which("redis-server")
    assert exe, "redis-server is installed by .ci/stack.sh"
    proc = subprocess.Popen(
        [exe, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), *REDIS_FLAGS],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return proc
        time.sleep(0.05)
    raise AssertionError("redis-server did not start")


async def test_redis_restart_keeps_silences_and_delivery_goes_on(kafka_settings, tmp_path: Path):
    port = free_port()
    data = tmp_path / "redis"
    data.mkdir()
    proc = start_redis(port, data)
    s = settings_for(kafka_settings, redis_url=f"redis://127.0.0.1:{port}/0")
    await setup_topics(s)
    try:
        redis = Redis.from_url(s.redis_url)
        store = DeliveryStore(redis, s.redis_prefix)
        await store.add_silence(Silence(matchers={"account": "quiet"}, ends_at=time.time() + 3600))
        async with Http() as http:
            async with Running(DeliveryWorker(s, hook_routing(http.port, ["account"]))) as worker:
                await produce_alerts(s, [make_alert(account="before")])
                await until(lambda: len(http.delivered("hook")) == 1)
                proc.send_signal(signal.SIGTERM)  # no RDB snapshot (--save ""): only the AOF keeps data
                proc.wait(10)
                await produce_alerts(s, [make_alert(account="during")])  # its flush finds Redis down
                await until(lambda: any(g.attempts for g in worker.dispatcher.groups.values()))
                proc = start_redis(port, data)
                await produce_alerts(s, [make_alert(account="quiet"), make_alert(account="after")])
                await until(lambda: len(http.delivered("hook")) >= 3, timeout=40)
                await until(lambda: worker.metrics.value("healthmon_alerts_silenced", receiver="hook") >= 1)
            assert [x.matchers for x in await store.silences()] == [{"account": "quiet"}]
        got = Counter(a for a, _, _ in events(http.delivered("hook")))
        assert got == Counter({"before": 1, "during": 1, "after": 1})
        await redis.aclose()
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(10)
