"""The ingest sources on the vendors' published payload shapes: verification and mapping (pure: no IO)."""

from __future__ import annotations

import base64
import copy
import hashlib
import hmac
import time
from decimal import Decimal
from pathlib import Path

import orjson
import pytest

from streams.config import ConfigError, parse_yaml
from streams.ingest.config import DEFAULT_CONFIG, IngestConfig, StripeConfig, load_config
from streams.ingest.segment import SegmentSource
from streams.ingest.source import Rejected, Unauthorized
from streams.ingest.stripe_webhooks import StripeSource, subscription_mrr
from streams.ingest.webhook import WebhookSource, webhook_signature
from streams.ingest.zendesk import ZendeskSource

DATA = Path(__file__).resolve().parents[1] / "data" / "ingest"
STRIPE_SECRET = "whsec_test_" + "a" * 32
NOW = 1796630000.0  # 2026-12-07T07:53:20Z


def fixture(name: str) -> dict:
    return orjson.loads((DATA / name).read_bytes())


def stripe_header(body: bytes, secret: str = STRIPE_SECRET, t: int | None = None) -> str:
    """Stripe's signing scheme: t=<unix>,v1=hex(HMAC-SHA256(secret, f"{t}.{body}"))."""
    t = int(time.time()) if t is None else t
    sig = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={sig}"


def basic(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


@pytest.fixture
def cfg() -> IngestConfig:
    return load_config(None)


# --- Segment -----------------------------------------------------------------------------------


def segment(cfg: IngestConfig, call: str) -> SegmentSource:
    assert cfg.segment is not None
    return SegmentSource(cfg.segment, ["wk_one", "wk_two"], call)


def test_segment_write_key_as_basic_auth_or_in_the_body(cfg: IngestConfig) -> None:
    src = segment(cfg, "batch")
    body = (DATA / "segment_batch.json").read_bytes()
    src.verify({"Authorization": basic("wk_two")}, body, NOW)
    keyed = orjson.dumps({**orjson.loads(body), "writeKey": "wk_one"})
    src.verify({}, keyed, NOW)
    for headers, b in [
        ({}, body),
        ({"Authorization": basic("wk_three")}, body),
        ({"Authorization": "Bearer wk_one"}, body),
    ]:
        with pytest.raises(Unauthorized):
            src.verify(headers, b, NOW)


def test_segment_batch_maps_track_events_by_configuration(cfg: IngestConfig) -> None:
    parsed = segment(cfg, "batch").parse({}, (DATA / "segment_batch.json").read_bytes(), NOW)
    got = [e.model_dump(mode="json") for e in parsed.events]
    assert [(e["type"], e["event_id"]) for e in got] == [
        ("login", "ajs-next-1796620001000-7d9e0f1a-3b2c-4d5e-8f6a-7b8c9d0e1f2a"),
        ("feature_used", "ajs-next-1796620002000-9a0b1c2d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"),
        ("session", "ajs-next-1796620003000-1b2c3d4e-5f6a-4b7c-8d9e-0f1a2b3c4d5e"),
    ]
    assert {e["account_id"] for e in got} == {"initech"}
    assert got[1]["feature"] == "dashboards" and got[1]["user_id"] == "019mr8mf4r"
    assert got[2]["duration_s"] == 1260.0
    assert got[0]["occurred_at"] == "2026-12-07T05:06:41Z"
    assert parsed.ignored == 2  # the identify call and the unmapped "Item Purchased"
    assert parsed.problems == []


def test_segment_group_becomes_an_account_event(cfg: IngestConfig) -> None:
    parsed = segment(cfg, "group").parse({}, (DATA / "segment_group.json").read_bytes(), NOW)
    (acc,) = [e.model_dump(mode="json") for e in parsed.events]
    assert acc["type"] == "account" and acc["account_id"] == "initech"
    assert (acc["name"], acc["segment"], acc["csm_email"]) == ("Initech", "enterprise", "joanna@example.com")
    assert acc["signed_up_at"] == "2025-03-14T10:00:00Z"


def test_segment_message_without_account_or_message_id_is_rejected_with_the_reason(cfg: IngestConfig) -> None:
    src = segment(cfg, "track")
    msg = {
        "type": "track",
        "event": "Signed In",
        "userId": "u1",
        "messageId": "m1",
        "timestamp": "2026-12-07T05:00:00Z",
    }
    with pytest.raises(Rejected, match=r"no account: none of context\.groupId"):
        src.parse({}, orjson.dumps(msg), NOW)
    with pytest.raises(Rejected, match="messageId is missing"):
        src.parse({}, orjson.dumps({**msg, "messageId": None, "context": {"groupId": "a"}}), NOW)
    with pytest.raises(Rejected, match="not JSON"):
        src.parse({}, b"{nope", NOW)
    # A batch keeps its valid messages and names the broken one.
    batch = {"batch": [{**msg, "context": {"groupId": "a"}}, {**msg, "messageId": "m2"}]}
    parsed = segment(cfg, "batch").parse({}, orjson.dumps(batch), NOW)
    assert len(parsed.events) == 1 and len(parsed.problems) == 1
    assert parsed.problems[0].startswith("batch[1] (messageId 'm2'): no account")


def test_segment_time_defaults_to_arrival_and_rejects_garbage(cfg: IngestConfig) -> None:
    src = segment(cfg, "track")
    msg = {"event": "Signed In", "userId": "u1", "messageId": "m1", "context": {"groupId": "a"}}
    (ev,) = src.parse({}, orjson.dumps(msg), NOW).events
    assert ev.occurred_at.timestamp() == NOW
    with pytest.raises(Rejected, match="timestamp"):
        src.parse({}, orjson.dumps({**msg, "timestamp": "yesterday"}), NOW)


# --- Stripe ------------------------------------------------------------------------------------


def stripe_source(**over) -> StripeSource:
    return StripeSource(StripeConfig(**over), STRIPE_SECRET)


def test_stripe_signature_is_verified_by_the_library_with_a_five_minute_tolerance() -> None:
    src = stripe_source()
    body = (DATA / "stripe_subscription_created.json").read_bytes()
    src.verify({"Stripe-Signature": stripe_header(body)}, body, NOW)
    bad = [
        {},
        {"Stripe-Signature": stripe_header(body, secret="whsec_other")},
        {"Stripe-Signature": stripe_header(body, t=int(time.time()) - 301)},  # older than 5 minutes
        {"Stripe-Signature": stripe_header(body + b" ")},  # the body changed after signing
        {"Stripe-Signature": "garbage"},
    ]
    for headers in bad:
        with pytest.raises(Unauthorized) as exc:
            src.verify(headers, body, NOW)
        assert STRIPE_SECRET not in str(exc.value)


def test_stripe_subscription_mrr_is_normalised_per_month_with_discounts_and_seats() -> None:
    src = stripe_source(seat_products=["prod_Na6dGcTsmU0I4R"])
    parsed = src.parse({}, (DATA / "stripe_subscription_created.json").read_bytes(), NOW)
    (sub,) = [e.model_dump(mode="json") for e in parsed.events]
    # 25 x $600/year = $1,250/month, + $300 every 3 months = $100/month; 20 % off: $1,080.
    assert sub["type"] == "subscription" and sub["account_id"] == "acme"
    assert Decimal(sub["mrr"]) == Decimal("1080.00")
    assert sub["seats"] == 25 and sub["plan"] == "Pro (annual)"
    assert sub["renewal_date"] == "2027-12-07"
    assert sub["event_id"] == "evt_1NG8Du2eZvKYlo2CUI79vXWy"
    assert sub["occurred_at"] == "2026-12-07T00:00:00Z"


def test_stripe_mrr_amount_off_zero_decimal_and_metered_items() -> None:
    sub = fixture("stripe_subscription_created.json")["data"]["object"]
    sub = copy.deepcopy(sub)
    sub["discount"]["coupon"].update(percent_off=None, amount_off=12000, currency="usd")  # $120 per year
    mrr, seats = subscription_mrr(sub)
    assert mrr == Decimal("1340.00") and seats == 26  # 1350 - 120/12; every licensed quantity
    sub["discount"] = None
    sub["items"]["data"][1]["price"]["recurring"]["usage_type"] = "metered"
    assert subscription_mrr(sub) == (Decimal("1250.00"), 25)
    for item in sub["items"]["data"]:
        item["price"].update(currency="jpy", unit_amount=120000, unit_amount_decimal="120000")
    assert subscription_mrr(sub)[0] == Decimal("250000.00")  # ¥120,000 x 25 a year
    sub["items"]["data"][0]["price"].update(
        unit_amount=None, unit_amount_decimal=None, billing_scheme="tiered"
    )
    del sub["items"]["data"][0]["plan"]
    with pytest.raises(Rejected, match="no unit amount"):
        subscription_mrr(sub)


def test_stripe_invoice_and_cancellation_events_and_the_account_lookup() -> None:
    src = stripe_source()
    (failed,) = src.parse({}, (DATA / "stripe_invoice_payment_failed.json").read_bytes(), NOW).events
    assert failed.model_dump(mode="json") == {
        "event_id": "evt_1NG8FaILkdIwHu7ixPaymentFail",
        "account_id": "acme",  # from subscription_details.metadata
        "occurred_at": "2026-12-07T09:00:00Z",
        "type": "payment_failed",
        "invoice_id": "in_1MtHbELkdIwHu7ixl4OzzPMv",
        "amount": "12600",
    }
    evt = fixture("stripe_invoice_payment_failed.json")
    evt["type"] = "invoice.paid"
    evt["data"]["object"]["amount_paid"] = 1260000
    (paid,) = src.parse({}, orjson.dumps(evt), NOW).events
    assert paid.type == "invoice_paid" and paid.amount == Decimal(12600)  # type: ignore[union-attr]

    deleted = fixture("stripe_subscription_created.json")
    deleted["type"] = "customer.subscription.deleted"
    deleted["data"]["object"].update(
        status="canceled",
        cancellation_details={"feedback": "too_expensive", "reason": "cancellation_requested"},
    )
    (canceled,) = src.parse({}, orjson.dumps(deleted), NOW).events
    assert canceled.type == "subscription_canceled" and canceled.reason == "too_expensive"  # type: ignore[union-attr]

    evt["data"]["object"]["subscription_details"] = {"metadata": {}}
    with pytest.raises(Rejected, match="no account for Stripe customer 'cus_Na6dX7aXxi11N4'"):
        src.parse({}, orjson.dumps(evt), NOW)
    mapped = stripe_source(customers={"cus_Na6dX7aXxi11N4": "acme-by-map"})
    assert mapped.parse({}, orjson.dumps(evt), NOW).events[0].account_id == "acme-by-map"
    fallback = stripe_source(customer_id_fallback=True)
    assert fallback.parse({}, orjson.dumps(evt), NOW).events[0].account_id == "cus_Na6dX7aXxi11N4"

    expanded = copy.deepcopy(evt)
    customer = {
        "id": "cus_Na6dX7aXxi11N4",
        "object": "customer",
        "metadata": {"healthmon_account_id": "acme-c"},
    }
    expanded["data"]["object"]["customer"] = customer  # an expanded customer: its metadata names the account
    assert src.parse({}, orjson.dumps(expanded), NOW).events[0].account_id == "acme-c"

    other = {**evt, "type": "charge.succeeded"}
    assert src.parse({}, orjson.dumps(other), NOW).ignored == 1


# --- configuration -----------------------------------------------------------------------------


def test_the_shipped_mapping_file_is_valid() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    assert cfg.segment is not None and cfg.segment.track["Signed In"].type == "login"


def test_a_bad_mapping_fails_naming_file_line_and_field() -> None:
    text = "segment:\n  track:\n    Signed In: {type: login}\n    Feature Used: {type: feature_used}\n"
    with pytest.raises(ConfigError) as exc:
        parse_yaml(text, IngestConfig, "ingest.yaml")
    assert "ingest.yaml:4: segment.track.Feature Used" in str(exc.value)
    assert "feature_from" in str(exc.value)
    with pytest.raises(ConfigError, match=r"ingest\.yaml:2: stripe\.acount_metadata_key"):
        parse_yaml("stripe:\n  acount_metadata_key: x\n", IngestConfig, "ingest.yaml")
    with pytest.raises(ConfigError, match="no source is configured"):
        parse_yaml("{}\n", IngestConfig, "ingest.yaml")


# --- Zendesk -----------------------------------------------------------------------------------

ZENDESK_SECRET = "dGhpc19zZWNyZXRfaXNfZm9yX3Rlc3RzX29ubHk="


def zendesk_headers(body: bytes, ts: str = "2026-12-07T07:53:20Z", secret: str = ZENDESK_SECRET) -> dict:
    """Zendesk's scheme: base64(HMAC-SHA256(secret, timestamp + body))."""
    sig = base64.b64encode(hmac.new(secret.encode(), ts.encode() + body, hashlib.sha256).digest()).decode()
    return {"X-Zendesk-Webhook-Signature": sig, "X-Zendesk-Webhook-Signature-Timestamp": ts}


def zendesk(cfg: IngestConfig) -> ZendeskSource:
    assert cfg.zendesk is not None
    return ZendeskSource(
        cfg.zendesk.model_copy(update={"accounts": {"8447388091137": "initech"}}), ZENDESK_SECRET
    )


def test_zendesk_signature_and_timestamp(cfg: IngestConfig) -> None:
    src = zendesk(cfg)
    body = (DATA / "zendesk_ticket_created.json").read_bytes()
    src.verify(zendesk_headers(body), body, NOW)
    for headers in [
        {},
        zendesk_headers(body, secret="other"),
        zendesk_headers(body, ts="2026-12-07T07:40:00Z"),  # 13 minutes old
        {**zendesk_headers(body), "X-Zendesk-Webhook-Signature": "not base64!"},
    ]:
        with pytest.raises(Unauthorized):
            src.verify(headers, body, NOW)
    with pytest.raises(Unauthorized):
        src.verify(zendesk_headers(body), body + b"\n", NOW)


def test_zendesk_ticket_events_map_to_the_contract(cfg: IngestConfig) -> None:
    src = zendesk(cfg)

    def one(name: str, **change) -> dict:
        payload = fixture(name)
        for path, value in change.items():
            node = payload
            *parents, last = path.split("__")
            for part in parents:
                node = node[part]
            node[last] = value
        parsed = src.parse({}, orjson.dumps(payload), NOW)
        return parsed.events[0].model_dump(mode="json") if parsed.events else {"ignored": parsed.ignored}

    opened = one("zendesk_ticket_created.json")
    assert opened == {
        "event_id": "cbe4028c-7239-495d-b020-f22348516046",
        "account_id": "initech",
        "occurred_at": "2026-12-07T08:14:05.236443Z",
        "ticket_id": "5158",
        "type": "ticket_opened",
        "priority": "high",
        "sentiment": None,
    }
    assert one("zendesk_ticket_created.json", detail__priority=None)["priority"] == "normal"
    reply = one("zendesk_comment_added.json")
    assert (reply["type"], reply["author"]) == ("ticket_replied", "agent")
    customer = one("zendesk_comment_added.json", event__comment__author__is_staff=False)
    assert customer["author"] == "customer"
    assert one("zendesk_status_changed.json")["type"] == "ticket_resolved"
    reopened = one("zendesk_status_changed.json", event__previous="SOLVED", event__current="OPEN")
    assert reopened["type"] == "ticket_reopened"
    assert one("zendesk_status_changed.json", event__previous="OPEN", event__current="PENDING") == {
        "ignored": 1
    }
    csat = one("zendesk_satisfaction_trigger.json")
    assert (csat["type"], csat["score"], csat["ticket_id"], csat["account_id"]) == (
        "csat",
        5,
        "5158",
        "initech",
    )
    assert one("zendesk_satisfaction_trigger.json", rating="Bad, I'm unsatisfied")["score"] == 1
    with pytest.raises(Rejected, match="no account"):
        one("zendesk_ticket_created.json", detail__organization_id="0")
    with pytest.raises(Rejected, match="priority 'p1'"):
        one("zendesk_ticket_created.json", detail__priority="P1")


# --- the generic webhook -----------------------------------------------------------------------


def test_generic_webhook_signature_and_configured_mapping(cfg: IngestConfig) -> None:
    src = WebhookSource("nps", cfg.webhooks["nps"], "hook-secret")
    body = (DATA / "nps_survey_response.json").read_bytes()
    ts = str(int(NOW))
    good = {"X-Healthmon-Timestamp": ts, "X-Healthmon-Signature": webhook_signature("hook-secret", ts, body)}
    src.verify(good, body, NOW)
    old = str(int(NOW) - 600)
    for headers in [
        {},
        {**good, "X-Healthmon-Signature": webhook_signature("other", ts, body)},
        {"X-Healthmon-Timestamp": old, "X-Healthmon-Signature": webhook_signature("hook-secret", old, body)},
    ]:
        with pytest.raises(Unauthorized):
            src.verify(headers, body, NOW)
    (nps,) = src.parse({}, body, NOW).events
    assert nps.model_dump(mode="json") == {
        "event_id": "178921404",
        "account_id": "initech",
        "occurred_at": "2026-12-07T08:50:00Z",
        "type": "nps",
        "user_id": "163953592",
        "score": 6,
        "comment": "Reporting is slow lately.",
    }
    broken = fixture("nps_survey_response.json")
    broken["event_data"]["score"] = 11
    with pytest.raises(Rejected, match="score"):
        src.parse({}, orjson.dumps(broken), NOW)


def test_generic_webhook_items_and_value_maps() -> None:
    text = """
webhooks:
  ces:
    type: ces
    items_from: responses
    fields:
      event_id: id
      account_id: {path: company}
      occurred_at: answered_at
      user_id: email
      score: {path: answer, map: {very easy: 7, easy: 6, hard: 2}}
"""
    cfg = parse_yaml(text, IngestConfig, "ingest.yaml")
    src = WebhookSource("ces", cfg.webhooks["ces"], "s")
    body = {
        "responses": [
            {
                "id": 1,
                "company": "acme",
                "answered_at": "2026-12-07T08:00:00Z",
                "email": "a@x",
                "answer": "easy",
            },
            {
                "id": 2,
                "company": "acme",
                "answered_at": "2026-12-07T08:01:00Z",
                "email": "b@x",
                "answer": "meh",
            },
        ]
    }
    parsed = src.parse({}, orjson.dumps(body), NOW)
    assert [(e.event_id, e.score) for e in parsed.events] == [("1", 6)]  # type: ignore[union-attr]
    assert parsed.problems and parsed.problems[0].startswith("item 1: breaks contract v1")
    with pytest.raises(ConfigError, match=r"webhooks\.Bad Name"):
        parse_yaml(text.replace("ces:", "Bad Name:", 1), IngestConfig, "ingest.yaml")


def test_segment_single_url_takes_any_message_by_its_type(cfg: IngestConfig) -> None:
    src = segment(cfg, "segment")
    batch = orjson.loads((DATA / "segment_batch.json").read_bytes())["batch"]
    kinds = [[e.type for e in src.parse({}, orjson.dumps(m), NOW).events] for m in batch]
    assert kinds == [[], ["login"], ["feature_used"], ["session"], []]
    (acc,) = src.parse({}, (DATA / "segment_group.json").read_bytes(), NOW).events
    assert acc.type == "account"


def test_a_crm_workflow_pushes_account_changes_through_a_generic_webhook() -> None:
    text = """
webhooks:
  crm:
    type: account
    fields:
      event_id: {path: eventId}
      account_id: {path: properties.healthmon_account_id}
      occurred_at: {path: occurredAt}
      name: {path: properties.name}
      segment: {path: properties.tier, map: {Strategic: enterprise, Growth: mid_market, Starter: smb}}
      csm_name: {path: properties.owner_name}
      csm_email: {path: properties.owner_email}
      signed_up_at: {path: properties.createdate}
"""
    cfg = parse_yaml(text, IngestConfig, "ingest.yaml")
    src = WebhookSource("crm", cfg.webhooks["crm"], "s")
    payload = {
        "eventId": 4242,
        "occurredAt": 1796630000000 / 1000,
        "properties": {
            "healthmon_account_id": "acme",
            "name": "Acme Corp",
            "tier": "Strategic",
            "owner_name": "Dana Lee",
            "owner_email": "dana@example.com",
            "createdate": "2024-02-01T00:00:00Z",
        },
    }
    (acc,) = src.parse({}, orjson.dumps(payload), NOW).events
    assert acc.model_dump(mode="json") == {
        "event_id": "4242",
        "account_id": "acme",
        "occurred_at": "2026-12-07T07:53:20Z",
        "type": "account",
        "name": "Acme Corp",
        "segment": "enterprise",
        "csm_name": "Dana Lee",
        "csm_email": "dana@example.com",
        "slack_channel": None,
        "signed_up_at": "2024-02-01T00:00:00Z",
        "time_zone": None,  # optional in the contract; this CRM maps none
        "executive_sponsor": None,  # contract 1.1: the CRM can map it (a field like the others)
    }


def test_a_crm_logs_meetings_and_calls_through_a_generic_webhook() -> None:
    """Contract 1.1: a CRM workflow (a HubSpot meeting engagement, a logged call) feeds the
    relationship events; outcome and type names map to the contract's values."""
    text = """
webhooks:
  meetings:
    type: meeting
    fields:
      event_id: {path: id}
      account_id: {path: company}
      occurred_at: {path: properties.hs_meeting_start_time}
      kind: {path: properties.hs_activity_type, map: {Quarterly Business Review: qbr, Check-in: check_in}}
      status: {path: properties.hs_meeting_outcome, map: {COMPLETED: held, CANCELED: cancelled}}
      attendees: {path: attendees}
  calls:
    type: csm_touch
    fields:
      event_id: {path: id}
      account_id: {path: company}
      occurred_at: {path: timestamp}
      channel: {value: call}
      contact_role: {path: contact.role}
"""
    cfg = parse_yaml(text, IngestConfig, "ingest.yaml")
    meeting = {
        "id": "m-77",
        "company": "acme",
        "properties": {
            "hs_meeting_start_time": "2026-12-01T15:00:00Z",
            "hs_activity_type": "Quarterly Business Review",
            "hs_meeting_outcome": "COMPLETED",
        },
        "attendees": [{"role": "executive", "email": "cfo@acme.example"}, {"role": "champion"}],
    }
    (ev,) = (
        WebhookSource("meetings", cfg.webhooks["meetings"], "s").parse({}, orjson.dumps(meeting), NOW).events
    )
    assert (ev.type, ev.kind, ev.status) == ("meeting", "qbr", "held")  # type: ignore[union-attr]
    assert [a.role for a in ev.attendees] == ["executive", "champion"]  # type: ignore[union-attr]
    call = {"id": 9, "company": "acme", "timestamp": "2026-12-02T10:00:00Z", "contact": {"role": "executive"}}
    (touch,) = WebhookSource("calls", cfg.webhooks["calls"], "s").parse({}, orjson.dumps(call), NOW).events
    assert (touch.type, touch.channel, touch.contact_role) == ("csm_touch", "call", "executive")  # type: ignore[union-attr]
    meeting["properties"]["hs_meeting_outcome"] = "NO_SHOW"  # not mapped: breaks the contract, said so
    with pytest.raises(Rejected, match="status"):
        WebhookSource("meetings", cfg.webhooks["meetings"], "s").parse({}, orjson.dumps(meeting), NOW)
