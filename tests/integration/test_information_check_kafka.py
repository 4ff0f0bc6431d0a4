"""The information check through the real broker: a product that sends no seats and none of the configured
key features. The worker's snapshots set key-feature breadth aside (0 for every account: it would pull
every score down alike) and list adoption as having no data, exactly as the offline driver does, and
name the scorecard version in force."""

from __future__ import annotations

import orjson
import pytest

from rules.engine import load_rules
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import load_scoring
from streams.engine.driver import run_offline
from streams.engine.engine import Engine
from tests.helpers import account_event, at, collect, event, latest_snapshots, produce_events, setup_topics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

ACCOUNTS = [f"acc-{i:02d}" for i in range(14)]
DAYS = 12


def book() -> list[dict]:
    """14 accounts, no seats on their plans (seats 0), usage of features outside the scorecard's key features."""
    evs: list[dict] = []
    for aid in ACCOUNTS:
        evs.append(account_event(aid, at(-1), segment="smb"))
        evs.append(
            event("subscription", aid, at(0), mrr="300", plan="flat", seats=0, renewal_date="2027-01-01")
        )
    for d in range(DAYS):
        for i, aid in enumerate(ACCOUNTS):
            if d % (i % 4 + 1):
                continue  # accounts differ in how often they come
            for u in range(1 + i % 5):
                evs.append(event("login", aid, at(d, 1 + u / 10), user_id=f"u{u}"))
                evs.append(
                    event("feature_used", aid, at(d, 2), user_id=f"u{u}", feature=("search", "export")[u % 2])
                )
    return sorted(evs, key=lambda e: e["occurred_at"])


def set_aside(snapshot: dict) -> dict[str, str]:
    return {a["measure"]: a["reason"] for a in snapshot["set_aside"]}


async def test_the_worker_sets_a_dead_measure_aside(kafka_settings, worker):
    s = kafka_settings.model_copy(update={"partitions": 1})  # one book: every account in one portfolio
    worker.settings = s
    await setup_topics(s)
    worker.start()
    evs = book()
    await produce_events(s, evs)
    last_day = at(DAYS - 1)[:10]

    def done(records) -> bool:
        snaps = latest_snapshots(records)
        return all(aid in snaps and snaps[aid]["as_of"][:10] >= last_day for aid in ACCOUNTS)

    live = latest_snapshots(await collect(s, "health", done, timeout=90))
    scoring = load_scoring()
    for aid in ACCOUNTS:
        snap = live[aid]
        assert set_aside(snap)["breadth"] == "constant", snap["set_aside"]
        assert set_aside(snap)["adoption"] == "no_data"
        assert "engagement" not in set_aside(snap) and "stickiness" not in set_aside(snap)  # they vary
        usage = next(c for c in snap["components"] if c["name"] == "usage")
        assert next(m for m in usage["measures"] if m["name"] == "breadth")["score"] is None
        assert snap["metrics"]["feature_breadth"] == 0.0
        assert snap["scorecard_version"] == scoring.card_version

    # the same as the production driver offline: a function of the events, not of the run
    offline: dict[str, dict] = {}

    def keep(out) -> None:
        for topic, key, value, _ in out.records:
            if topic == "health":
                offline[key.decode()] = value

    engine = Engine(scoring, load_rules(None))
    run_offline((EVENT_ADAPTER.validate_python(e) for e in evs), engine, on_output=keep)
    same_time = [aid for aid in ACCOUNTS if orjson.loads(offline[aid])["as_of"] == live[aid]["as_of"]]
    assert same_time
    for aid in same_time:
        assert orjson.loads(offline[aid])["set_aside"] == live[aid]["set_aside"]
