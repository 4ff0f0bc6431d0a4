"""The walking skeleton through a real Kafka broker and real worker processes."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from tests.helpers import (
    account_event,
    at,
    collect,
    event,
    latest_snapshots,
    produce,
    produce_events,
    read_all,
    setup_topics,
    snapshot_total,
)

pytestmark = pytest.mark.kafka


def headers(record) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers}


async def test_snapshot_and_dead_letters(kafka_settings, worker):
    s = kafka_settings
    await setup_topics(s)
    worker.start()
    good_before = [
        account_event("acme"),
        event("subscription", "acme", at(0), mrr="1200.50", plan="pro", seats=20, renewal_date="2026-12-01"),
        event("login", "acme", at(0, 1), user_id="u1"),
    ]
    await produce_events(s, good_before)
    usage, billing = s.topic("usage"), s.topic("billing")
    bad = [
        (usage, b"acme", b"{not json"),
        (usage, b"acme", b"[1, 2, 3]"),
        (usage, b"acme", b"\xff\xfe\x00garbage"),
        (usage, b"acme", None),
        (usage, b"acme", orjson.dumps(event("login", "acme"))[:-1] + b', "user_id": 5}'),
        (
            usage,
            b"acme",
            orjson.dumps({k: v for k, v in event("login", "acme", user_id="u").items() if k != "event_id"}),
        ),
        (usage, b"acme", orjson.dumps(event("login", "acme", "2026-03-02T09:00:00", user_id="u"))),
        (usage, b"acme", orjson.dumps(event("nps", "acme", user_id="u", score=9))),
        (billing, b"other", orjson.dumps(event("invoice_paid", "acme", invoice_id="i", amount="1"))),
        (billing, None, orjson.dumps(event("invoice_paid", "acme", invoice_id="i", amount="1"))),
        (s.topic("surveys"), b"acme", orjson.dumps(event("nps", "acme", user_id="u", score=11))),
        (
            s.topic("tickets"),
            b"acme",
            orjson.dumps(event("ticket_opened", "acme", ticket_id="t", priority="p0")),
        ),
        (usage, b"acme", b'{"a":' * 5000 + b"1" + b"}" * 5000),
    ]
    await produce(s, bad)
    good_after = [
        event("login", "acme", at(0, 2), user_id="u2"),
        event("login", "acme", at(0, 3), user_id="u1"),
    ]
    await produce_events(s, good_after)

    dead = await collect(s, "deadletter", lambda rs: len(rs) >= len(bad))
    assert len(dead) == len(bad)
    reasons = [headers(r)["healthmon.reason"] for r in dead]
    by_value = {r.value: headers(r) for r in dead}
    # Original bytes, source coordinates and a readable reason for each rejected message.
    assert by_value[b"{not json"]["healthmon.topic"] == usage
    assert "Invalid JSON" in by_value[b"{not json"]["healthmon.reason"]
    assert by_value[b"\xff\xfe\x00garbage"]["healthmon.offset"].isdigit()
    assert any("empty message value" in r for r in reasons)
    assert any("user_id: Input should be a valid string" in r for r in reasons)
    assert any("event_id: Field required" in r for r in reasons)
    assert any("timezone" in r for r in reasons)
    assert any("does not belong on the usage topic" in r for r in reasons)
    assert any("does not match account_id" in r for r in reasons)
    assert any("message key is missing" in r for r in reasons)
    assert any("score: Input should be less than or equal to 10" in r for r in reasons)
    assert any("priority" in r for r in reasons)

    health = await collect(s, "health", lambda rs: snapshot_total(rs, "acme") == 5)
    snap = latest_snapshots(health)["acme"]
    # The output header contract (streams/broker/headers.py), with the event time the record describes.
    last = headers(health[-1])
    assert last["content-type"] == "application/json" and last["healthmon.kind"] == "health"
    as_of = orjson.loads(health[-1].value)["as_of"]
    assert int(last["healthmon.event-time"]) == int(datetime.fromisoformat(as_of).timestamp() * 1000)
    assert snap["account"]["name"] == "acme Inc"
    assert snap["account"]["segment"] == "mid_market"
    m = snap["metrics"]
    assert m["mrr"] == "1200.50" and m["seats"] == 20 and m["plan"] == "pro"
    assert snap["event_counts"] == {"account": 1, "subscription": 1, "login": 3}
    assert snap["last_seen"]["login"] == "2026-03-02T12:00:00Z"
    assert worker.alive(), worker.log_tail()


async def test_duplicates_and_restart_recovery(kafka_settings, worker):
    s = kafka_settings
    await setup_topics(s)
    worker.start()
    first = [account_event("a1"), *(event("login", "a1", at(0, i), user_id=f"u{i}") for i in range(4))]
    # Each event twice (a producer retry), plus a whole re-send of the batch.
    await produce_events(s, [e for e in first for _ in (0, 1)])
    await produce_events(s, first)
    await collect(s, "health", lambda rs: snapshot_total(rs, "a1") == 5)

    assert worker.stop() == 0, worker.log_tail()
    worker.start()  # memory store: the state comes back from the changelog only
    more = [event("login", "a1", at(1, i), user_id="u9") for i in range(3)]
    await produce_events(s, [*more, first[2]])  # first[2] is an old duplicate
    health = await collect(s, "health", lambda rs: snapshot_total(rs, "a1") == 8, timeout=45)
    snap = latest_snapshots(health)["a1"]
    assert snap["event_counts"] == {"account": 1, "login": 7}
    assert snap["account"]["name"] == "a1 Inc"
    assert await read_all(s, "deadletter", seconds=2) == []


async def test_dead_letter_keeps_non_utf8_bytes(kafka_settings, worker):
    s = kafka_settings
    await setup_topics(s)
    worker.start()
    raw = bytes(range(256))
    await produce(s, [(s.topic("tickets"), b"k", raw)])
    dead = await collect(s, "deadletter", lambda rs: len(rs) == 1)
    assert dead[0].value == raw and dead[0].key == b"k"
    assert "Invalid JSON" in headers(dead[0])["healthmon.reason"]
