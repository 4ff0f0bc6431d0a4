"""An account's optional IANA time zone: the event contract checks it, the state keeps it (every
format), snapshots and alerts carry it, and the tasks worker uses it for ``same_day`` deadlines."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from rules.model import Action
from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER
from streams.core.snapshot import account_info
from streams.core.state import AccountState, encode_state_v1, encode_state_v2
from streams.settings import Settings
from streams.tasks.machine import AlertSeen, apply
from streams.worker.tasks import parse_record
from tests.alert_fixtures import make_alert

T0 = datetime(2026, 12, 7, 20, tzinfo=UTC)  # 05:00 on 8 December in Tokyo, 12:00 on the 7th in LA


def account(**extra) -> dict:
    return {
        "event_id": "a1",
        "account_id": "acme",
        "type": "account",
        "occurred_at": T0.isoformat(),
        "name": "Acme",
        "segment": "smb",
        "csm_name": "Ana",
        "csm_email": "ana@example.com",
        "signed_up_at": "2025-01-01T00:00:00Z",
        **extra,
    }


def test_the_contract_takes_an_iana_zone_and_refuses_anything_else():
    assert EVENT_ADAPTER.validate_python(account(time_zone="Asia/Tokyo")).time_zone == "Asia/Tokyo"
    assert EVENT_ADAPTER.validate_python(account()).time_zone is None  # optional: v1 producers unchanged
    with pytest.raises(ValidationError, match="'Mars/Olympus' is not an IANA time zone"):
        EVENT_ADAPTER.validate_python(account(time_zone="Mars/Olympus"))


def test_the_state_keeps_the_zone_in_every_format_and_snapshots_carry_it():
    s = AccountState(account_id="acme")
    apply_event(s, EVENT_ADAPTER.validate_python(account(time_zone="Asia/Tokyo")))
    assert account_info(s).time_zone == "Asia/Tokyo"
    for raw in (s.dumps(), encode_state_v1(s), encode_state_v2(s)):
        assert AccountState.loads(raw).profile == s.profile
    without = AccountState(account_id="acme")
    apply_event(without, EVENT_ADAPTER.validate_python(account()))
    assert AccountState.loads(without.dumps()).profile.time_zone is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("zone", "fallback", "due"),
    [
        ("Asia/Tokyo", None, datetime(2026, 12, 8, 15, tzinfo=UTC)),  # the end of the 8th in Tokyo
        (
            "America/Los_Angeles",
            "Asia/Tokyo",
            datetime(2026, 12, 8, 8, tzinfo=UTC),
        ),  # the account's zone wins
        (None, "America/Los_Angeles", datetime(2026, 12, 8, 8, tzinfo=UTC)),  # HEALTHMON_TASKS_TIME_ZONE
        (None, None, datetime(2026, 12, 8, tzinfo=UTC)),  # UTC
    ],
)
def test_same_day_deadlines_end_the_account_s_own_day(zone, fallback, due):
    a = make_alert(episode=int(T0.timestamp()))
    a = a.model_copy(
        update={
            "playbook": Action.model_validate({"step": "Reach out", "respond_within": "same_day"}),
            "account": a.account.model_copy(update={"time_zone": zone}),
        }
    )
    s = Settings(tasks_time_zone=fallback)
    event, _ = parse_record(s, s.topic("alerts"), b"acme", a.model_dump_json().encode())
    assert isinstance(event, AlertSeen)
    task, _ = apply(None, event, T0)
    assert task is not None and task.due_at == due
