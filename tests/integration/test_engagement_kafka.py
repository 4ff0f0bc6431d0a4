"""Relationship signals through the real broker: meetings and CSM touches on cs.accounts reach the
worker's snapshot as engagement measures, an overdue QBR raises the "QBR overdue" alert with its
playbook, a broken meeting goes to the dead-letter topic with its reason, and an account that sends no
meetings keeps its engagement component out of the score."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from tests.helpers import (
    T0,
    account_event,
    at,
    collect,
    event,
    latest_snapshots,
    produce,
    produce_events,
    setup_topics,
)

pytestmark = pytest.mark.kafka
DAY = 86_400


def scenario() -> list[dict]:
    """'ent' (enterprise) meets from day 1 but holds no QBR; 'plain' (enterprise) sends usage only.
    Both log in daily, so event time runs to day 100 on their partition."""
    evs = [
        account_event("ent", segment="enterprise", signed_up_at=at(-300), executive_sponsor="Alex Novak"),
        account_event("plain", segment="enterprise", signed_up_at=at(-300)),
    ]
    roles = [{"role": "executive", "name": "Alex Novak"}, {"role": "champion"}]
    evs.append(event("meeting", "ent", at(1, 1), kind="check_in", status="held", attendees=roles))
    evs.append(event("meeting", "ent", at(40, 1), kind="check_in", status="cancelled"))
    evs.append(event("meeting", "ent", at(60, 1), kind="training", status="held", attendees=roles[1:]))
    evs.append(event("meeting", "ent", at(85, 1), kind="qbr", status="cancelled"))
    evs.append(event("csm_touch", "ent", at(70, 2), channel="call", contact_role="champion"))
    for d in range(101):
        evs += [event("login", a, at(d, 3), user_id=f"{a}-u1") for a in ("ent", "plain")]
    return sorted(evs, key=lambda e: e["occurred_at"])


def offset_days(iso: str) -> float:
    midnight = T0.replace(hour=0).timestamp()
    return (datetime.fromisoformat(iso).timestamp() - midnight) / DAY


async def test_meetings_reach_the_snapshot_and_an_overdue_qbr_alerts(kafka_settings, worker):
    s = kafka_settings.model_copy(update={"partitions": 1})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    evs = scenario()
    bad = orjson.dumps(event("meeting", "ent", at(2), kind="lunch", status="held"))
    await produce(s, [(s.topic("accounts"), b"ent", bad)])
    await produce_events(s, evs)

    dead = await collect(s, "deadletter", lambda rs: len(rs) >= 1)
    reason = dict((k, v.decode()) for k, v in dead[0].headers)["healthmon.reason"]
    assert "meeting.kind" in reason and dead[0].value == bad

    def qbr_alert(rs) -> bool:
        return any(orjson.loads(r.value)["rule_id"] == "qbr_overdue" for r in rs)

    alerts = [orjson.loads(r.value) for r in await collect(s, "alerts", qbr_alert, timeout=90)]
    qbr = [a for a in alerts if a["rule_id"] == "qbr_overdue"]
    assert [(a["account_id"], a["status"]) for a in qbr] == [("ent", "firing")]
    # meetings recorded from day 1: the 90-day enterprise cadence is past on day 92 (UTC midnight)
    assert offset_days(qbr[0]["starts_at"]) == 92
    assert qbr[0]["values"]["qbr_overdue_days"] == 1 and qbr[0]["severity"] == "warning"
    assert qbr[0]["action"] == "Schedule the QBR within 14 days"

    def both_at_day_100(rs) -> bool:
        snaps = latest_snapshots(rs)
        return all(a in snaps and offset_days(snaps[a]["as_of"]) >= 100 for a in ("ent", "plain"))

    snaps = latest_snapshots(await collect(s, "health", both_at_day_100, timeout=60))
    ent, plain = snaps["ent"], snaps["plain"]
    m = ent["metrics"]
    assert m["has_engagement"] and m["has_executive_sponsor"]
    assert m["days_since_last_meeting"] == 40 and m["days_since_csm_touch"] == 30
    assert m["qbr_cadence_days"] == 90 and m["qbr_overdue_days"] == 9
    assert m["days_since_exec_touch"] == 99 and not m["exec_touch_90d"]  # the day-1 meeting, 99 days ago
    assert (m["meetings_held_90d"], m["meetings_cancelled_90d"]) == (1, 2)
    assert ent["event_counts"]["meeting"] == 4 and ent["event_counts"]["csm_touch"] == 1
    engagement = {c["name"]: c for c in ent["components"]}["engagement"]
    assert engagement["score"] is not None and engagement["effective_weight"] > 0
    # no meetings: the component drops out, its weight shared by the others
    assert not plain["metrics"]["has_engagement"] and plain["metrics"]["qbr_overdue_days"] is None
    engagement = {c["name"]: c for c in plain["components"]}["engagement"]
    assert engagement["score"] is None and engagement["effective_weight"] == 0
