"""Portfolio figures from a real worker's snapshots equal a hand computation: expansion, contraction and
a cancellation in one month, by segment (events -> worker -> cs.health -> read model -> cs.portfolio)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from redis.asyncio import Redis

from streams.core.portfolio import PortfolioMetrics
from tests.helpers import account_event, collect, event, produce_events, setup_topics
from tests.integration.test_portfolio_readmodel_kafka import wait_for

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def sub(account: str, when: str, mrr: str) -> dict:
    return event("subscription", account, when, mrr=mrr, plan="team", seats=10, renewal_date="2026-12-01")


def january_and_february() -> list[dict]:
    evs = []
    for aid, segment, mrr in (("s1", "smb", "1000"), ("s2", "smb", "500"), ("e1", "enterprise", "3000")):
        evs.append(
            account_event(aid, "2026-01-02T09:00:00Z", segment=segment, signed_up_at="2025-06-01T00:00:00Z")
        )
        evs.append(sub(aid, "2026-01-03T09:00:00Z", mrr))
    evs += [
        sub("s1", "2026-02-10T09:00:00Z", "1200"),  # expansion 200
        event("subscription_canceled", "s2", "2026-02-11T09:00:00Z", reason="budget"),  # churn 500
        sub("e1", "2026-02-12T09:00:00Z", "2500"),  # contraction 500
        account_event("n1", "2026-02-13T09:00:00Z", segment="smb", signed_up_at="2026-02-13T00:00:00Z"),
        sub("n1", "2026-02-13T10:00:00Z", "300"),  # new: not in NRR
    ]
    return evs


async def test_worker_snapshots_give_the_hand_computed_month(kafka_settings, worker) -> None:
    from streams.readmodel.projector import ReadModelWorker

    s = kafka_settings.model_copy(update={"readmodel_enabled": False, "portfolio_interval_s": 0.05})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    evs = january_and_february()
    await produce_events(s, evs)
    redis = Redis.from_url(s.redis_url)
    rm = ReadModelWorker(s)
    task = asyncio.create_task(rm.run())
    try:

        async def february() -> dict:
            raw = await redis.hget(f"{s.redis_prefix}portfolio:2026-02", "all")
            figures = orjson.loads(raw) if raw else {}
            # partitions are processed independently: wait until every account's last event is in
            done = (figures.get("new_mrr"), figures.get("churned_accounts"), figures.get("contraction_mrr"))
            return figures if done == (300, 1, 500) and figures.get("expansion_mrr") == 200 else {}

        feb = await wait_for(february, 60)
        # start 1,000 + 500 + 3,000 = 4,500; +200 expansion, -500 contraction, -500 churned
        assert (feb["starting_mrr"], feb["expansion_mrr"], feb["contraction_mrr"], feb["churned_mrr"]) == (
            4500,
            200,
            500,
            500,
        )
        assert (feb["nrr"], feb["grr"]) == (82.22, 77.78)  # 3,700 / 4,500 and 3,500 / 4,500
        assert (feb["logo_churn_rate"], feb["revenue_churn_rate"]) == (33.33, 22.22)
        assert (feb["new_accounts"], feb["new_mrr"], feb["ending_mrr"]) == (1, 300, 4000)
        smb = orjson.loads(await redis.hget(f"{s.redis_prefix}portfolio:2026-02", "segment:smb"))
        assert (smb["nrr"], smb["grr"], smb["logo_churn_rate"]) == (80.0, 66.67, 50.0)  # 1,200 / 1,500
        ent = orjson.loads(await redis.hget(f"{s.redis_prefix}portfolio:2026-02", "segment:enterprise"))
        assert (ent["nrr"], ent["grr"], ent["revenue_churn_rate"]) == (83.33, 83.33, 16.67)
        assert all(a["account_id"] != "s2" for a in feb["at_risk"] + feb["renewals_90d"])  # canceled

        # the same on cs.portfolio, and it is what the published schema describes
        records = await collect(s, "portfolio", lambda rs: any(r.key == b"2026-02|all" for r in rs))
        last = [r for r in records if r.key == b"2026-02|all"][-1]
        assert PortfolioMetrics.model_validate_json(last.value).starting_mrr == 4500
    finally:
        rm.stopping.set()
        await task
        await redis.aclose()
