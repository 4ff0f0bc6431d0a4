"""Trigger rules through real Kafka: once per episode, absence rules on event time, restarts."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from tests.conftest import ROOT, settings_env
from tests.helpers import T0, account_event, at, collect, event, produce_events, setup_topics

pytestmark = pytest.mark.kafka
DAY = 86_400


def scenario() -> list[dict]:
    """Four accounts on one partition; 'clock' keeps event time moving while 'silent' sends nothing."""
    evs = [account_event(a) for a in ("silent", "clock", "nps", "billing", "quits")]
    evs.append(
        event("subscription", "silent", at(0), mrr="300", plan="team", seats=3, renewal_date="2027-01-01")
    )
    evs += [event("login", "silent", at(d, 9 + u), user_id=f"u{u}") for d in range(10) for u in range(3)]
    evs += [event("login", "clock", at(d, 12), user_id="c") for d in range(41)]
    evs.append(event("nps", "nps", at(5, 10), user_id="n1", score=2, comment="<!channel> this is broken"))
    evs.append(
        event("subscription", "billing", at(0), mrr="80", plan="solo", seats=1, renewal_date="2027-01-01")
    )
    evs.append(event("payment_failed", "billing", at(3, 8), invoice_id="inv-1", amount="80"))
    evs.append(event("invoice_paid", "billing", at(8, 8), invoice_id="inv-1", amount="80"))
    # 'quits' fails a payment, then cancels: its open alert closes as cancelled, not recovered
    evs.append(
        event("subscription", "quits", at(0), mrr="50", plan="solo", seats=1, renewal_date="2027-01-01")
    )
    evs.append(event("payment_failed", "quits", at(4, 8), invoice_id="inv-q", amount="50"))
    evs.append(event("subscription_canceled", "quits", at(6, 8), reason="budget"))
    return sorted(evs, key=lambda e: e["occurred_at"])


def offset_days(iso: str) -> float:
    """Days since midnight of the scenario's first day (T0 is 09:00 that day)."""
    midnight = T0.replace(hour=0).timestamp()
    return (datetime.fromisoformat(iso).timestamp() - midnight) / DAY


def alerts_of(records) -> list[dict]:
    return [orjson.loads(r.value) for r in records]


def key(a: dict) -> tuple[str, str, str]:
    return (a["account_id"], a["rule_id"], a["status"])


def once_per_episode(alerts: list[dict]) -> None:
    """Each (alert_id, status) appears once, and an episode's id is its own."""
    counts = Counter((a["alert_id"], a["status"]) for a in alerts)
    assert all(n == 1 for n in counts.values()), f"an episode alerted twice: {counts}"
    assert len({(a["alert_id"], a["rule_id"], a["account_id"]) for a in alerts}) == len(
        {a["alert_id"] for a in alerts}
    )


def has(rule: str, account: str, status: str = "firing"):
    return lambda rs: any(key(a) == (account, rule, status) for a in alerts_of(rs))


async def test_replay_fires_each_episode_once_on_event_time(kafka_settings, worker, tmp_path: Path):
    s = kafka_settings.model_copy(update={"partitions": 1})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    stream = tmp_path / "scenario.jsonl"
    stream.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in scenario()))
    out = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "streams", "replay", str(stream)],
        cwd=ROOT,
        env=settings_env(s),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    assert f"produced {len(scenario())} events" in out.stdout

    expected = {
        ("silent", "no_login_14d", "firing"),
        ("silent", "daily_user_silent_7d", "firing"),
        ("nps", "nps_detractor", "firing"),
        ("nps", "nps_detractor", "resolved"),
        ("billing", "payment_failed", "firing"),
        ("billing", "payment_failed", "resolved"),
        ("quits", "payment_failed", "resolved"),
    }
    await collect(s, "alerts", lambda rs: expected <= {key(a) for a in alerts_of(rs)}, timeout=60)
    records = await collect(s, "alerts", None, timeout=3)  # and whatever else arrives: no repeats
    alerts = alerts_of(records)
    once_per_episode(alerts)
    # In this scenario every rule has a single episode per account.
    assert Counter(key(a) for a in alerts).most_common(1)[0][1] == 1, [
        (key(a), a["starts_at"]) for a in alerts
    ]
    by = {key(a): a for a in alerts}

    # Absence rules fire at the event time they became true, although 'silent' sent nothing since day 9.
    assert offset_days(by["silent", "no_login_14d", "firing"]["starts_at"]) == 23  # last login day 9
    assert offset_days(by["silent", "daily_user_silent_7d", "firing"]["starts_at"]) == 16
    nps = by["nps", "nps_detractor", "firing"]
    assert offset_days(nps["starts_at"]) == pytest.approx(5 + 19 / 24)
    assert nps["severity"] == "critical" and nps["values"]["nps_latest_score"] == 2
    assert nps["action"].startswith("A senior CSM")
    assert nps["account"]["csm_email"] == "ana@example.com"
    resolved = by["nps", "nps_detractor", "resolved"]
    assert resolved["alert_id"] == nps["alert_id"] and offset_days(resolved["ends_at"]) == 12
    paid = by["billing", "payment_failed", "resolved"]
    assert paid["alert_id"] == by["billing", "payment_failed", "firing"]["alert_id"]
    assert ("clock", "no_login_14d", "firing") not in by
    assert (paid["ended_by"], by["quits", "payment_failed", "resolved"]["ended_by"]) == (
        "recovered",
        "cancelled",
    )
    assert offset_days(by["quits", "payment_failed", "resolved"]["ends_at"]) == offset_days(at(6, 8))
    assert all(r.key.decode() == a["account_id"] for r, a in zip(records, alerts, strict=True))

    # a cancelled account is no longer scored: its snapshots from the cancellation on have no score
    health = [orjson.loads(r.value) for r in await collect(s, "health", None, timeout=3) if r.key == b"quits"]
    cancelled_at = datetime.fromisoformat(at(6, 8)).timestamp()
    after = [h for h in health if datetime.fromisoformat(h["as_of"]).timestamp() >= cancelled_at]
    before = [h for h in health if h not in after and h["status"] == "scored"]
    assert after and before
    assert {(h["status"], h["score"], h["band"]) for h in after} == {("cancelled", None, None)}
    assert {h["last_band"] for h in after} == {before[-1]["band"]}


async def test_restart_mid_episode_neither_duplicates_nor_loses(kafka_settings, worker):
    s = kafka_settings.model_copy(update={"partitions": 1})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    events = scenario()
    cut = next(i for i, e in enumerate(events) if e["occurred_at"] >= at(20))
    await produce_events(s, events[:cut])
    first = await collect(s, "alerts", has("daily_user_silent_7d", "silent"), timeout=60)

    assert worker.stop() == 0, worker.log_tail()
    worker.start()  # state, rule state and the engine clock come back from the changelogs
    await produce_events(s, events[cut:])
    await produce_events(s, events[cut - 5 : cut])  # redelivered duplicates across the restart
    await collect(s, "alerts", has("no_login_14d", "silent"), timeout=60)
    records = await collect(s, "alerts", None, timeout=3)
    alerts = alerts_of(records)
    once_per_episode(alerts)
    silent_7d = [a for a in alerts if key(a) == ("silent", "daily_user_silent_7d", "firing")]
    assert (
        silent_7d[0]["alert_id"]
        == alerts_of(first)[[key(a) for a in alerts_of(first)].index(key(silent_7d[0]))]["alert_id"]
    )
    no_login = next(a for a in alerts if key(a) == ("silent", "no_login_14d", "firing"))
    assert offset_days(no_login["starts_at"]) == 23
