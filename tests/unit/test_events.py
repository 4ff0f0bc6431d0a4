import json
from decimal import Decimal

import orjson
import pytest

from streams.core.events import TOPIC_TYPES, InvalidEvent, parse_event
from streams.schema import all_schemas, schema_path
from tests.helpers import account_event, at, event

VALID = [
    account_event("a", slack_channel="#cs-a", executive_sponsor="Alex Novak"),
    event(
        "meeting",
        "a",
        meeting_id="m1",
        kind="qbr",
        status="held",
        attendees=[{"role": "executive", "name": "Alex Novak"}, {"role": "champion"}],
        duration_min=60,
    ),
    event("csm_touch", "a", channel="call", contact_role="executive", note="renewal plans"),
    event("login", "a", user_id="u"),
    event("feature_used", "a", user_id="u", feature="reports"),
    event("session", "a", user_id="u", duration_s=61.5),
    event("ticket_opened", "a", ticket_id="t", priority="urgent", sentiment=-0.5),
    event("ticket_replied", "a", ticket_id="t", author="agent"),
    event("ticket_resolved", "a", ticket_id="t"),
    event("ticket_reopened", "a", ticket_id="t"),
    event("csat", "a", ticket_id="t", score=2),
    event("subscription", "a", mrr="99.90", plan="pro", seats=3, renewal_date="2027-01-31"),
    event("invoice_paid", "a", invoice_id="i", amount="10"),
    event("payment_failed", "a", invoice_id="i", amount="10"),
    event("subscription_canceled", "a", reason="budget"),
    event("nps", "a", user_id="u", score=0, comment="meh"),
    event("ces", "a", user_id="u", score=7),
    event("csm_sentiment", "a", score=-0.4, note="champion left"),
]


def kind(ev: dict) -> str:
    return next(k for k, types in TOPIC_TYPES.items() if ev["type"] in types)


@pytest.mark.parametrize("ev", VALID, ids=lambda e: e["type"])
def test_every_contract_type_parses(ev):
    parsed = parse_event(orjson.dumps(ev), b"a", kind(ev))
    assert parsed.type == ev["type"] and parsed.account_id == "a"


def test_all_types_are_covered():
    assert {e["type"] for e in VALID} == set().union(*TOPIC_TYPES.values())


def test_unknown_fields_are_kept_and_money_is_exact():
    ev = event("subscription", "a", mrr=0.1, plan="p", seats=1, renewal_date="2027-01-01", crm_id="x9")
    parsed = parse_event(orjson.dumps(ev), b"a", "billing")
    assert parsed.mrr == Decimal("0.1")  # a JSON number, not float arithmetic
    assert parsed.model_extra == {"crm_id": "x9"}
    assert '"mrr":"0.1"' in parsed.model_dump_json()


@pytest.mark.parametrize(
    ("raw", "key", "topic", "reason"),
    [
        (b"", b"a", "usage", "empty message value"),
        (b"{", b"a", "usage", "Invalid JSON"),
        (b"42", b"a", "usage", "Input should be an object"),
        (orjson.dumps(event("login", "a", "2026-03-02T09:00:00", user_id="u")), b"a", "usage", "timezone"),
        (orjson.dumps(event("login", "a", user_id="u")), b"b", "usage", "does not match account_id"),
        (orjson.dumps(event("login", "a", user_id="u")), None, "usage", "message key is missing"),
        (orjson.dumps(event("login", "a", user_id="u")), b"a", "billing", "does not belong on the billing"),
        (orjson.dumps(event("nps", "a", user_id="u", score="9")), b"a", "surveys", "valid integer"),
        (
            orjson.dumps(event("ces", "a", user_id="u", score=0)),
            b"a",
            "surveys",
            "greater than or equal to 1",
        ),
        (orjson.dumps(event("teleport", "a")), b"a", "usage", "does not match any of the expected tags"),
        (
            orjson.dumps(event("subscription", "a", mrr="-1", plan="p", seats=1, renewal_date="2027-01-01")),
            b"a",
            "billing",
            "mrr",
        ),
        (
            orjson.dumps(event("meeting", "a", kind="lunch", status="held")),
            b"a",
            "accounts",
            "meeting.kind",
        ),
        (
            orjson.dumps(event("meeting", "a", kind="qbr", status="held", attendees=[{"role": "ceo"}])),
            b"a",
            "accounts",
            "meeting.attendees.0.role",
        ),
        (orjson.dumps(event("meeting", "a", kind="qbr")), b"a", "accounts", "meeting.status: Field required"),
        (orjson.dumps(event("csm_touch", "a", channel="sms")), b"a", "accounts", "csm_touch.channel"),
        (
            orjson.dumps(event("meeting", "a", kind="qbr", status="held")),
            b"a",
            "tickets",
            "does not belong on the tickets",
        ),
        (
            orjson.dumps(account_event("a", csm_email="not an email")),
            b"a",
            "accounts",
            "csm_email",
        ),
    ],
)
def test_invalid_events_are_explained(raw, key, topic, reason):
    with pytest.raises(InvalidEvent) as info:
        parse_event(raw, key, topic)
    assert reason in info.value.reason


@pytest.mark.parametrize("name", ["events", "health", "health-changes", "alerts"])
def test_published_schemas_match_the_models(name):
    committed = json.loads(schema_path(name).read_text())
    assert committed == all_schemas()[name], "run `healthmon schema --write` and commit the result"


def test_sentiment_and_time_offsets():
    ev = event("ticket_opened", "a", "2026-03-02T10:00:00+05:30", ticket_id="t", priority="low", sentiment=-1)
    parsed = parse_event(orjson.dumps(ev), b"a", "tickets")
    assert parsed.occurred_at.isoformat() == "2026-03-02T10:00:00+05:30"
    assert at(0) == "2026-03-02T09:00:00Z"
