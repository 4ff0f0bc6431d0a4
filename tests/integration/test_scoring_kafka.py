"""Scoring end to end: events move an account from green to red on cs.health, cs.health.changes and Redis."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis.asyncio import Redis

from tests.helpers import (
    account_event,
    at,
    collect,
    event,
    latest_snapshots,
    produce_events,
    setup_topics,
    snapshot_total,
)

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def healthy_month(account: str) -> list[dict]:
    evs = [
        account_event(account, segment="smb", csm_email="lee@example.com", csm_name="Lee"),
        event("subscription", account, at(0), mrr="500", plan="team", seats=10, renewal_date="2026-09-01"),
    ]
    for d in range(30):
        for u in range(9):
            evs.append(event("login", account, at(d, 1 + u / 10), user_id=f"u{u}"))
            evs.append(event("feature_used", account, at(d, 2), user_id=f"u{u}", feature="reports"))
    evs += [event("nps", account, at(20), user_id=f"u{u}", score=10) for u in range(5)]
    evs += [
        event("feature_used", account, at(29, 3), user_id="u0", feature=f)
        for f in ("dashboards", "integrations", "automation")
    ]
    return evs


def decline(account: str) -> list[dict]:
    """Usage stops, detractors answer, a payment fails; then 30 days pass on the billing stream."""
    evs = [event("nps", account, at(31), user_id=f"u{u}", score=1, comment="unusable") for u in range(5)]
    evs.append(event("payment_failed", account, at(32), invoice_id="inv-9", amount="500"))
    evs.append(
        event("subscription", account, at(33), mrr="250", plan="team", seats=10, renewal_date="2026-09-01")
    )
    evs.append(event("payment_failed", account, at(62), invoice_id="inv-10", amount="250"))
    return evs


async def test_account_moves_from_green_to_red_everywhere(kafka_settings, worker):
    # the read model inside the worker (off by default; one-process setups turn it on)
    s = kafka_settings.model_copy(update={"readmodel_enabled": True})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    month = healthy_month("acc-g")
    await produce_events(s, month)
    health = await collect(s, "health", lambda rs: snapshot_total(rs, "acc-g") == len(month))
    green = latest_snapshots(health)["acc-g"]
    assert green["band"] == "green"
    # no meetings in this history: the relationship component (10 of 110 weight units) has no data
    assert green["score"] >= 60 and green["confidence"] > 0.45
    assert {c["name"] for c in green["components"]} == {
        "usage",
        "support",
        "outcomes",
        "financial",
        "engagement",
    }
    assert green["metrics"]["adoption_rate"] == pytest.approx(0.9)

    down = decline("acc-g")
    await produce_events(s, down)
    health = await collect(s, "health", lambda rs: snapshot_total(rs, "acc-g") == len(month) + len(down))
    red = latest_snapshots(health)["acc-g"]
    assert red["band"] == "red", red
    assert red["score"] < 60  # red_below (bands chosen for lead time)
    assert red["metrics"]["days_since_last_login"] >= 30  # aged by event time, not by new logins
    texts = " | ".join(d["text"] for d in red["drivers"])
    assert "no login for" in texts or "seats active" in texts
    assert red["deltas"]["30d"] is not None and red["deltas"]["30d"] < 0

    def turned_red(body: dict) -> bool:
        return body["band"] == "red" and body["previous_band"] in ("green", "yellow")

    changes = await collect(
        s, "health_changes", lambda rs: any(turned_red(orjson.loads(r.value)) for r in rs)
    )
    bodies = [orjson.loads(r.value) for r in changes]
    assert bodies[0]["previous_band"] is None  # the first score of an account is a change
    assert any(b["band"] == "green" for b in bodies)
    to_red = next(b for b in bodies if turned_red(b))
    assert to_red["score"] < 60 and to_red["drivers"] and to_red["delta"] < 0
    assert all(r.key == b"acc-g" for r in changes)

    redis = Redis.from_url(s.redis_url)
    try:
        p = s.redis_prefix
        # The read model follows cs.health through its own agent: wait until it shows the latest snapshot
        # (due times after the last event may still re-score the account for a moment).
        for _ in range(60):
            latest = latest_snapshots(await collect(s, "health", None, timeout=0.3))["acc-g"]
            if await redis.zscore(f"{p}scores", "acc-g") == latest["score"]:
                break
            await asyncio.sleep(0.2)
        assert latest["band"] == "red"
        assert await redis.zscore(f"{p}scores", "acc-g") == pytest.approx(latest["score"])
        assert await redis.sismember(f"{p}band:red", "acc-g")
        assert not await redis.sismember(f"{p}band:green", "acc-g")
        assert not await redis.sismember(f"{p}band:yellow", "acc-g")
        assert await redis.sismember(f"{p}csm:lee@example.com", "acc-g")
        assert await redis.sismember(f"{p}segment:smb", "acc-g")
        row = await redis.hgetall(f"{p}account:acc-g")
        assert row[b"band"] == b"red" and row[b"csm"] == b"lee@example.com"
        assert orjson.loads(row[b"snapshot"])["as_of"] == latest["as_of"]
    finally:
        await redis.aclose()
