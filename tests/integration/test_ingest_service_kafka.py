"""`healthmon ingest` as a process, over real HTTP, checked on the real broker (and a real worker):
vendors' payloads signed in the test with test secrets, unsigned and badly signed ones refused with
nothing written, retries de-duplicated by the worker, contract breaches dead-lettered with the raw
request, limits, metrics, and the broker stopped mid-request -> 503, then success and nothing lost."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiohttp
import orjson
import pytest

from streams.broker.admin import create_topics
from streams.broker.tail import read_to_end
from streams.settings import Settings
from tests.conftest import ROOT, WorkerProcess, settings_env
from tests.helpers import collect, latest_snapshots

pytestmark = pytest.mark.kafka

DATA = ROOT / "tests" / "data" / "ingest"
WRITE_KEY = "wk_test_" + "k" * 24
STRIPE_SECRET = "whsec_test_" + "s" * 32
TEST_CONFIG = """
segment:
  account_from: [context.groupId]
  track:
    Signed In: {type: login}
    Feature Used: {type: feature_used, feature_from: properties.feature}
    Session Ended: {type: session, duration_from: properties.duration_s}
  group: {segment: plan, segment_values: {Enterprise: enterprise}}
stripe:
  account_metadata_key: healthmon_account_id
  seat_products: [prod_Na6dGcTsmU0I4R]
zendesk:
  accounts: {"8447388091137": initech}
webhooks:
  nps:
    type: nps
    fields:
      event_id: event_data.id
      account_id: event_data.person_properties.account_id
      occurred_at: event_data.created_at
      user_id: event_data.person
      score: event_data.score
      comment: event_data.comment
"""
ZENDESK_SECRET = "zd_test_" + "z" * 32
WEBHOOK_SECRET = "hook_test_" + "h" * 32


class IngestProcess:
    """``healthmon ingest`` in a subprocess, as an operator runs it (port 0: the log says which)."""

    def __init__(self, s: Settings, tmp: Path, **env: str) -> None:
        cfg = tmp / "ingest.yaml"
        cfg.write_text(TEST_CONFIG)
        self.log_path = tmp / "ingest.log"
        self.env = {
            **settings_env(s),
            "HEALTHMON_INGEST_PORT": "0",
            "HEALTHMON_INGEST_CONFIG": str(cfg),
            "HEALTHMON_INGEST_SEGMENT_WRITE_KEYS": f"wk_old_key,{WRITE_KEY}",
            "HEALTHMON_INGEST_STRIPE_SECRET": STRIPE_SECRET,
            "HEALTHMON_INGEST_ZENDESK_SECRET": ZENDESK_SECRET,
            "HEALTHMON_INGEST_WEBHOOK_SECRET": WEBHOOK_SECRET,
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self, timeout: float = 60) -> IngestProcess:
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "ingest"],
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = re.search(rb"listening on (http://127\.0\.0\.1:\d+)", self.log_path.read_bytes())
            if m:
                self.url = m.group(1).decode()
                return self
            if self.proc.poll() is not None:
                raise RuntimeError(f"ingest exited with {self.proc.returncode}:\n{self.log()}")
            time.sleep(0.1)
        raise RuntimeError(f"ingest not listening within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        self.proc.terminate()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        rc, self.proc = self.proc.returncode, None
        return rc


def basic(key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()}


def stripe_signed(body: bytes, secret: str = STRIPE_SECRET, t: int | None = None) -> dict[str, str]:
    """Stripe's scheme: ``t=<unix>,v1=hex(HMAC-SHA256(secret, f"{t}.{body}"))``."""
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return {"Stripe-Signature": f"t={t},v1={sig}", "Content-Type": "application/json"}


def zendesk_signed(body: bytes, secret: str = ZENDESK_SECRET, ts: str | None = None) -> dict[str, str]:
    """Zendesk's scheme: base64(HMAC-SHA256(secret, timestamp + body)), the timestamp in its own header."""
    ts = ts or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    sig = base64.b64encode(hmac.new(secret.encode(), ts.encode() + body, hashlib.sha256).digest()).decode()
    return {"X-Zendesk-Webhook-Signature": sig, "X-Zendesk-Webhook-Signature-Timestamp": ts}


def webhook_signed(body: bytes, secret: str = WEBHOOK_SECRET) -> dict[str, str]:
    ts = str(int(time.time()))
    sig = hmac.new(secret.encode(), ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return {"X-Healthmon-Timestamp": ts, "X-Healthmon-Signature": f"sha256={sig}"}


async def post(
    http: aiohttp.ClientSession, url: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict]:
    async with http.post(url, data=body, headers={"Content-Type": "application/json", **headers}) as resp:
        text = await resp.read()
        return resp.status, orjson.loads(text) if resp.content_type == "application/json" else {"text": text}


async def topic_values(s: Settings, name: str) -> list[tuple[bytes | None, bytes | None, dict[str, bytes]]]:
    return [(m.key, m.value, dict(m.headers or ())) async for m in read_to_end(s, s.topic(name))]


@pytest.fixture
def ingest(kafka_settings: Settings, tmp_path: Path) -> Iterator[IngestProcess]:
    proc = IngestProcess(kafka_settings, tmp_path)
    yield proc
    proc.stop()


def test_refuses_to_start_without_its_secrets(kafka_settings: Settings, tmp_path: Path) -> None:
    proc = IngestProcess(kafka_settings, tmp_path, HEALTHMON_INGEST_STRIPE_SECRET="")
    with pytest.raises(RuntimeError, match="HEALTHMON_INGEST_STRIPE_SECRET"):
        proc.start()
    assert proc.proc is not None and proc.proc.wait(10) != 0
    assert WRITE_KEY not in proc.log()


async def test_signed_unsigned_retries_and_dead_letters_end_to_end(
    kafka_settings: Settings, ingest: IngestProcess, worker: WorkerProcess
) -> None:
    s = kafka_settings
    await create_topics(s)
    ingest.start()
    worker.start()
    batch = (DATA / "segment_batch.json").read_bytes()
    group = (DATA / "segment_group.json").read_bytes()
    sub = (DATA / "stripe_subscription_created.json").read_bytes()
    failed = (DATA / "stripe_invoice_payment_failed.json").read_bytes()
    u = ingest.url
    async with aiohttp.ClientSession() as http:
        # Unsigned / wrongly signed first: 401, and (checked below) nothing of them on any topic.
        assert (await post(http, f"{u}/v1/batch", batch, {}))[0] == 401
        assert (await post(http, f"{u}/v1/batch", batch, basic("wk_wrong")))[0] == 401
        assert (await post(http, f"{u}/v1/stripe", sub, {}))[0] == 401
        assert (await post(http, f"{u}/v1/stripe", sub, stripe_signed(sub, secret="whsec_other")))[0] == 401
        status, body = await post(http, f"{u}/v1/stripe", sub, stripe_signed(sub, t=int(time.time()) - 400))
        assert status == 401 and "tolerance" in body["detail"]

        assert await post(http, f"{u}/v1/group", group, basic(WRITE_KEY)) == (
            200,
            {"success": True, "accepted": 1, "ignored": 0},
        )
        assert await post(http, f"{u}/v1/batch", batch, basic(WRITE_KEY)) == (
            200,
            {"success": True, "accepted": 3, "ignored": 2},
        )
        # The library retries the batch (same messageIds): answered 2xx, not written again.
        assert await post(http, f"{u}/v1/batch", batch, basic(WRITE_KEY)) == (
            200,
            {"success": True, "accepted": 3, "ignored": 2, "duplicates": 3},
        )
        assert (await post(http, f"{u}/v1/stripe", sub, stripe_signed(sub)))[0] == 200
        assert (await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed)))[0] == 200
        # Stripe re-delivers the event (same evt_ id): likewise.
        status, body = await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed))
        assert status == 200 and body["duplicates"] == 1

        # Verified but breaking the contract: the raw request to the dead-letter topic, and the status the
        # sender's retry rules need (Stripe: 200, or it retries for three days; Segment: 400).
        no_account = orjson.loads(failed)
        no_account["id"] = "evt_no_account"
        no_account["data"]["object"]["subscription_details"]["metadata"] = {}
        raw_stripe = orjson.dumps(no_account)
        status, body = await post(http, f"{u}/v1/stripe", raw_stripe, stripe_signed(raw_stripe))
        assert status == 200 and body["dead_lettered"] is True and "no account" in body["detail"][0]
        raw_track = b'{"type":"track","event":"Signed In","userId":"u1","messageId":"m-bad"}'
        status, body = await post(http, f"{u}/v1/track", raw_track, basic(WRITE_KEY))
        assert status == 400 and body["dead_lettered"] is True

        # A later login of initech: once the worker has counted it, it has seen the retries before it
        # (same account, same partition, produced earlier).
        marker = orjson.dumps(
            {
                "type": "track",
                "event": "Signed In",
                "userId": "u2",
                "messageId": "m-marker",
                "context": {"groupId": "initech"},
                "timestamp": "2026-12-07T07:00:00Z",
            }
        )
        assert (await post(http, f"{u}/v1/track", marker, basic(WRITE_KEY)))[0] == 200

        async with http.get(f"{u}/metrics") as resp:
            metrics = await resp.text()

    usage = await topic_values(s, "usage")
    ids = sorted(orjson.loads(v)["event_id"] for _, v, _ in usage if v)
    batch_ids = [m["messageId"] for m in orjson.loads(batch)["batch"] if m["type"] == "track"][:3]
    assert ids == sorted([*batch_ids, "m-marker"])  # once each: not the retry, nor the 401s
    assert all(k == b"initech" for k, _, _ in usage)
    billing = [orjson.loads(v) for _, v, _ in await topic_values(s, "billing") if v]
    assert sorted(e["type"] for e in billing) == ["payment_failed", "subscription"]
    assert next(e for e in billing if e["type"] == "subscription")["mrr"] == "1080.00"
    assert len(await topic_values(s, "accounts")) == 1

    dead = await topic_values(s, "deadletter")
    assert sorted(v for _, v, _ in dead) == sorted([raw_stripe, raw_track])  # the raw requests
    by_source = {h["healthmon.topic"]: h for _, _, h in dead}
    assert b"no account for Stripe customer" in by_source[b"ingest:stripe/v1/stripe"]["healthmon.reason"]
    assert b"no account" in by_source[b"ingest:segment/v1/track"]["healthmon.reason"]

    # The worker counts each event once.
    def counted(rs) -> bool:
        snaps = latest_snapshots(rs)
        return "initech" in snaps and snaps["initech"]["event_counts"].get("login") == 2 and "acme" in snaps

    health = await collect(s, "health", counted, timeout=90)
    snaps = latest_snapshots(health)
    assert snaps["initech"]["event_counts"] == {"account": 1, "login": 2, "feature_used": 1, "session": 1}

    def acme_done(rs) -> bool:
        return latest_snapshots(rs)["acme"]["event_counts"].get("payment_failed", 0) >= 1

    health = await collect(s, "health", acme_done, timeout=60)
    assert latest_snapshots(health)["acme"]["event_counts"] == {"subscription": 1, "payment_failed": 1}
    # Nothing the ingest service accepted was refused by the worker's contract check.
    assert len(await topic_values(s, "deadletter")) == 2
    assert worker.alive(), worker.log_tail()

    assert 'healthmon_ingest_events_accepted_total{source="segment"} 5.0' in metrics
    assert 'healthmon_ingest_events_accepted_total{source="stripe"} 2.0' in metrics
    assert 'healthmon_ingest_events_duplicate_total{source="segment"} 3.0' in metrics
    assert 'healthmon_ingest_events_duplicate_total{source="stripe"} 1.0' in metrics
    assert 'healthmon_ingest_requests_rejected_total{reason="unauthorized",source="segment"} 2.0' in metrics
    assert 'healthmon_ingest_requests_rejected_total{reason="unauthorized",source="stripe"} 3.0' in metrics
    assert 'healthmon_ingest_messages_dead_lettered_total{source="stripe"} 1.0' in metrics
    assert 'healthmon_ingest_request_seconds_count{source="stripe"} 7.0' in metrics
    assert WRITE_KEY not in ingest.log() and STRIPE_SECRET not in ingest.log()


async def test_a_late_retry_is_answered_and_counted_once(
    kafka_settings: Settings, ingest: IngestProcess, worker: WorkerProcess
) -> None:
    """Stripe re-delivers an event after the account's last 64 events moved past it (the worker's own
    window no longer holds its id): ingest remembers it was acknowledged, so it is counted once."""
    s = kafka_settings
    await create_topics(s)
    ingest.start()
    worker.start()
    u = ingest.url
    failed = (DATA / "stripe_invoice_payment_failed.json").read_bytes()
    logins = orjson.dumps(
        {
            "batch": [
                {
                    "type": "track",
                    "event": "Signed In",
                    "userId": f"u{i % 7}",
                    "messageId": f"m-busy-{i}",
                    "context": {"groupId": "acme"},
                    "timestamp": f"2026-12-07T09:{10 + i // 60:02d}:{i % 60:02d}Z",  # after the evt_
                }
                for i in range(70)
            ]
        }
    )
    later = orjson.loads((DATA / "stripe_subscription_created.json").read_bytes())
    later["id"] = "evt_after_the_retry"
    later["created"] = 1796641200  # 11:00, after the logins: every event is in event-time order
    later_body = orjson.dumps(later)
    async with aiohttp.ClientSession() as http:
        assert (await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed)))[0] == 200
        assert (await post(http, f"{u}/v1/batch", logins, basic(WRITE_KEY)))[0] == 200

        def busy(rs) -> bool:
            snap = latest_snapshots(rs).get("acme")
            return snap is not None and snap["event_counts"].get("login") == 70

        await collect(s, "health", busy, timeout=90)  # the worker's window has moved past the evt_ id
        status, body = await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed))
        assert status == 200 and body["duplicates"] == 1, body
        assert (await post(http, f"{u}/v1/stripe", later_body, stripe_signed(later_body)))[0] == 200

    def after_the_retry(rs) -> bool:  # same account, same billing partition, sent after the retry
        snap = latest_snapshots(rs).get("acme")
        return snap is not None and snap["event_counts"].get("subscription") == 1

    health = await collect(s, "health", after_the_retry, timeout=90)
    assert latest_snapshots(health)["acme"]["event_counts"] == {
        "payment_failed": 1,
        "login": 70,
        "subscription": 1,
    }
    billing = [orjson.loads(v)["event_id"] for _, v, _ in await topic_values(s, "billing") if v]
    assert billing == ["evt_1NG8FaILkdIwHu7ixPaymentFail", "evt_after_the_retry"]


async def test_zendesk_and_generic_webhook_signed_and_unsigned(
    kafka_settings: Settings, ingest: IngestProcess
) -> None:
    s = kafka_settings
    await create_topics(s)
    ingest.start()
    u = ingest.url
    created = (DATA / "zendesk_ticket_created.json").read_bytes()
    comment = (DATA / "zendesk_comment_added.json").read_bytes()
    csat = (DATA / "zendesk_satisfaction_trigger.json").read_bytes()
    nps = (DATA / "nps_survey_response.json").read_bytes()
    async with aiohttp.ClientSession() as http:
        assert (await post(http, f"{u}/v1/zendesk", created, {}))[0] == 401
        assert (await post(http, f"{u}/v1/zendesk", created, zendesk_signed(created, secret="other")))[
            0
        ] == 401
        old = zendesk_signed(created, ts="2026-01-01T00:00:00Z")
        assert (await post(http, f"{u}/v1/zendesk", created, old))[0] == 401
        assert (await post(http, f"{u}/v1/webhooks/nps", nps, {}))[0] == 401
        assert (await post(http, f"{u}/v1/webhooks/nps", nps, webhook_signed(nps, secret="other")))[0] == 401
        assert (await post(http, f"{u}/v1/webhooks/unknown", nps, webhook_signed(nps)))[0] == 404

        for body in (created, comment, csat):
            assert (await post(http, f"{u}/v1/zendesk", body, zendesk_signed(body)))[0] == 200
        status, answer = await post(http, f"{u}/v1/zendesk", created, zendesk_signed(created))
        assert status == 200 and answer["duplicates"] == 1  # Zendesk re-delivers: not written again
        assert (await post(http, f"{u}/v1/webhooks/nps", nps, webhook_signed(nps)))[0] == 200

        bad_ticket = orjson.loads(created)
        bad_ticket["detail"]["organization_id"] = "0"
        raw_ticket = orjson.dumps(bad_ticket)
        status, body = await post(http, f"{u}/v1/zendesk", raw_ticket, zendesk_signed(raw_ticket))
        assert status == 400 and body["dead_lettered"] is True
        bad_nps = orjson.loads(nps)
        bad_nps["event_data"]["score"] = 11
        raw_nps = orjson.dumps(bad_nps)
        status, body = await post(http, f"{u}/v1/webhooks/nps", raw_nps, webhook_signed(raw_nps))
        assert status == 422 and "score" in body["detail"][0]

    tickets = [orjson.loads(v) for _, v, _ in await topic_values(s, "tickets") if v]
    assert sorted((e["type"], e["event_id"]) for e in tickets) == sorted(
        [
            ("ticket_opened", "cbe4028c-7239-495d-b020-f22348516046"),
            ("ticket_replied", "9f0c3a5e-1b2d-4c6e-8a7f-0d1e2f3a4b5c"),
            ("csat", "zendesk-csat-5158-1796635200"),
        ]
    )
    assert {e["account_id"] for e in tickets} == {"initech"}
    surveys = [orjson.loads(v) for _, v, _ in await topic_values(s, "surveys") if v]
    assert [(e["type"], e["score"], e["account_id"]) for e in surveys] == [("nps", 6, "initech")]
    dead = await topic_values(s, "deadletter")
    assert sorted(v for _, v, _ in dead) == sorted([raw_ticket, raw_nps])
    assert {h["healthmon.topic"] for _, _, h in dead} == {
        b"ingest:zendesk/v1/zendesk",
        b"ingest:webhook/nps/v1/webhooks/nps",
    }
    assert ZENDESK_SECRET not in ingest.log() and WEBHOOK_SECRET not in ingest.log()


async def test_body_size_and_rate_limits(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    await create_topics(s)
    proc = IngestProcess(s, tmp_path, HEALTHMON_INGEST_MAX_BODY_BYTES="4096", HEALTHMON_INGEST_RATE_PER_S="3")
    proc.start()
    try:
        async with aiohttp.ClientSession() as http:
            big = orjson.dumps({"batch": [], "padding": "x" * 5000})
            status, body = await post(http, f"{proc.url}/v1/batch", big, basic(WRITE_KEY))
            assert status == 413 and body["error"] == "too_large"
            await asyncio.sleep(1.1)  # the bucket refills (a second of requests)
            small = b'{"batch": []}'
            results = await asyncio.gather(
                *(post(http, f"{proc.url}/v1/batch", small, basic(WRITE_KEY)) for _ in range(8))
            )
            statuses = sorted(st for st, _ in results)
            # A bucket of 3 a second: of 8 at once, some pass, the rest are told to come back later (429).
            assert statuses.count(200) >= 1 and statuses.count(429) >= 2, statuses
            assert set(statuses) == {200, 429}, statuses
            async with http.get(f"{proc.url}/metrics") as resp:
                metrics = await resp.text()
        assert 'healthmon_ingest_requests_rejected_total{reason="too_large",source="segment"} 1.0' in metrics
        assert 'healthmon_ingest_requests_rejected_total{reason="rate_limited",source="segment"}' in metrics
    finally:
        proc.stop()


# --- the broker stopped mid-request ------------------------------------------------------------


def _free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


class PrivateKafka:
    """A Kafka of this test's own (.ci/stack.sh, its own directory and ports) that it may stop and start."""

    def __init__(self, tmp: Path) -> None:
        base = int(os.environ.get("HEALTHMON_TEST_PRIVATE_KAFKA_PORT", "0")) or (
            int(os.environ.get("HEALTHMON_TEST_KAFKA_PORT", "19092")) + 5
        )
        self.port = base
        self.env = {
            **os.environ,
            "HEALTHMON_KAFKA_PORT": str(base),
            "HEALTHMON_KAFKA_CONTROLLER_PORT": str(base + 1),
            "HEALTHMON_KAFKA_SASL": "0",
            "HEALTHMON_STACK_DIR": str(tmp / "private-stack"),
        }

    def _run(self, *args: str) -> None:
        res = subprocess.run(
            [str(ROOT / ".ci" / "stack.sh"), *args], env=self.env, capture_output=True, text=True
        )
        assert res.returncode == 0, res.stdout + res.stderr

    def up(self) -> None:
        self._run("kafka")

    def down(self) -> None:
        self._run("down")  # stops only the processes of this stack directory (PID files)


async def test_broker_down_mid_request_is_503_then_success_and_nothing_lost(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    kafka = PrivateKafka(tmp_path)
    if not (_free(kafka.port) and _free(kafka.port + 1)):
        pytest.fail(
            f"ports {kafka.port}/{kafka.port + 1} for the private broker are taken: set HEALTHMON_TEST_PRIVATE_KAFKA_PORT"
        )
    s = kafka_settings.model_copy(update={"broker": f"kafka://127.0.0.1:{kafka.port}"})
    kafka.up()
    proc = IngestProcess(s, tmp_path, HEALTHMON_INGEST_ACK_TIMEOUT_S="3")
    try:
        await create_topics(s)
        proc.start()
        u = proc.url
        sub = (DATA / "stripe_subscription_created.json").read_bytes()
        failed = (DATA / "stripe_invoice_payment_failed.json").read_bytes()
        async with aiohttp.ClientSession() as http:
            assert (await post(http, f"{u}/v1/stripe", sub, stripe_signed(sub)))[0] == 200
            kafka.down()
            status, body = await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed))
            assert status == 503 and body["error"] == "broker_unavailable", body
            kafka.up()
            # The sender retries, as Stripe does on a 503, until it is acknowledged.
            deadline = time.monotonic() + 90
            while True:
                status, body = await post(http, f"{u}/v1/stripe", failed, stripe_signed(failed))
                if status == 200 or time.monotonic() > deadline:
                    break
                assert status == 503, body
                await asyncio.sleep(1)
            assert status == 200, (body, proc.log()[-3000:])
        ids = [orjson.loads(v)["event_id"] for _, v, _ in await topic_values(s, "billing") if v]
        # Both events are there (the 503'd one maybe twice: the worker counts it once).
        assert set(ids) == {"evt_1NG8Du2eZvKYlo2CUI79vXWy", "evt_1NG8FaILkdIwHu7ixPaymentFail"}
        assert ids.count("evt_1NG8Du2eZvKYlo2CUI79vXWy") == 1
    finally:
        proc.stop()
        kafka.down()
