"""Relationship and engagement signals (contract 1.1): meetings, CSM touches and the executive sponsor,
folded into the state, written by every state layout, and measured (days since the last meeting, QBR
overdue against the segment's cadence, executive touch in 90 days, meetings held vs cancelled)."""

from __future__ import annotations

import random
from datetime import datetime

import msgspec
import pytest

from streams.core import state as state_module
from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER
from streams.core.metrics import MetricsConfig, compute_metrics
from streams.core.scoring import load_scoring, score_account
from streams.core.state import (
    DAY_S,
    FORMAT_V1,
    LAYOUT_V1,
    AccountState,
    encode_state_v1,
    encode_state_v2,
)
from tests.helpers import account_event, at, event

CFG = load_scoring().metrics  # the shipped cadences: enterprise 90 days, mid-market 180, smb none


def ts(days: float) -> int:
    return int(datetime.fromisoformat(at(days)).timestamp())


def fold(*evs: dict, state: AccountState | None = None) -> AccountState:
    state = state or AccountState(account_id="a")
    for ev in evs:
        apply_event(state, EVENT_ADAPTER.validate_python(ev))
    return state


def meeting(days: float, kind: str = "check_in", status: str = "held", *roles: str) -> dict:
    return event(
        "meeting",
        "a",
        at(days),
        kind=kind,
        status=status,
        attendees=[{"role": r} for r in roles or ("user",)],
    )


def touch(days: float, role: str = "champion") -> dict:
    return event("csm_touch", "a", at(days), channel="email", contact_role=role)


def book(segment: str = "enterprise") -> list[dict]:
    return [
        account_event("a", segment=segment, signed_up_at=at(-400), executive_sponsor="Alex Novak"),
        meeting(0, "qbr", "held", "executive", "champion"),
        meeting(20, "check_in", "cancelled"),
        meeting(30, "check_in", "held", "champion"),
        touch(40, "executive"),
        meeting(50, "training", "held", "user"),
        meeting(60, "check_in", "cancelled"),
        touch(70),
    ]


def test_the_relationship_measures_of_an_enterprise_account() -> None:
    s = fold(*book())
    m = compute_metrics(s, ts(100), CFG)
    assert m.has_engagement and m.has_executive_sponsor
    assert m.days_since_last_meeting == 50  # the training on day 50; cancelled ones do not count
    assert m.days_since_qbr == 100
    assert m.qbr_cadence_days == 90 and m.qbr_overdue_days == 10
    assert m.days_since_exec_touch == 60 and m.exec_touch_90d  # the call with the executive on day 40
    assert m.days_since_csm_touch == 30
    # 90 days back from day 100: days 11..100 -> held 30, 50; cancelled 20, 60 (the QBR on day 0 is out)
    assert (m.meetings_held_90d, m.meetings_cancelled_90d) == (2, 2)
    assert m.meeting_cancel_rate_90d == pytest.approx(0.5)
    later = compute_metrics(s, ts(131), CFG)
    assert not later.exec_touch_90d and later.days_since_exec_touch == 91


def test_the_cadence_follows_the_segment_and_none_is_owed_without_one() -> None:
    mid = compute_metrics(fold(*book("mid_market")), ts(100), CFG)
    assert mid.qbr_cadence_days == 180 and mid.qbr_overdue_days == 0
    smb = compute_metrics(fold(*book("smb")), ts(100), CFG)
    assert smb.qbr_cadence_days is None and smb.qbr_overdue_days is None
    assert smb.days_since_last_meeting == 50  # the other measures hold in every segment
    custom = MetricsConfig(qbr_cadence_days={"smb": 60})
    assert compute_metrics(fold(*book("smb")), ts(100), custom).qbr_overdue_days == 40


def test_without_a_qbr_the_cadence_counts_from_the_first_relationship_record() -> None:
    """A book's review history starts with its first meeting or touch: an account signed up years ago
    is not a year overdue on the day its meetings start arriving."""
    s = fold(account_event("a", segment="enterprise", signed_up_at=at(-400)), meeting(10))
    assert compute_metrics(s, ts(100), CFG).qbr_overdue_days == 0
    assert compute_metrics(s, ts(101), CFG).qbr_overdue_days == 1
    young = fold(account_event("a", segment="enterprise", signed_up_at=at(30)), touch(0))
    assert compute_metrics(young, ts(121), CFG).qbr_overdue_days == 1  # from sign-up, the later one
    only_cancelled = fold(account_event("a", segment="smb"), meeting(5, status="cancelled"))
    m = compute_metrics(only_cancelled, ts(25), CFG)
    assert m.days_since_last_meeting == 20 and m.meeting_cancel_rate_90d == 1.0


def test_an_account_without_relationship_events_has_no_such_measures() -> None:
    s = fold(account_event("a", segment="enterprise"), event("login", "a", at(1), user_id="u"))
    m = compute_metrics(s, ts(200), CFG)
    assert not m.has_engagement and m.has_executive_sponsor is False
    assert m.days_since_last_meeting is None and m.qbr_overdue_days is None
    assert m.meeting_cancel_rate_90d is None and not m.exec_touch_90d
    assert compute_metrics(AccountState(account_id="a"), ts(1), CFG).has_executive_sponsor is None


def test_the_engagement_component_drops_out_without_data_and_leaves_the_score_as_it_was() -> None:
    """A book without meetings (ChurnSim, a CS team that sends none) scores exactly as before the
    component existed: its weight is shared out, the score does not move."""
    config = load_scoring()
    before = config.model_copy(
        update={
            "default": config.default.model_copy(
                update={
                    "components": {k: v for k, v in config.default.components.items() if k != "engagement"}
                }
            )
        }
    )
    s = fold(
        account_event("a", segment="enterprise"),
        *(event("login", "a", at(d), user_id=f"u{d % 3}") for d in range(30)),
        event("nps", "a", at(3), user_id="u1", score=6),
    )
    m = compute_metrics(s, ts(30), config.metrics)
    now, old = score_account(m, config, "enterprise"), score_account(m, before, "enterprise")
    assert now.score == old.score and now.drivers == old.drivers
    engagement = next(c for c in now.components if c.name == "engagement")
    assert engagement.score is None and engagement.effective_weight == 0
    # with meetings it counts, and a QBR long overdue with cancelled meetings costs points
    s2 = fold(*book(), *(event("login", "a", at(d), user_id=f"u{d % 3}") for d in range(71, 101)))
    h = score_account(compute_metrics(s2, ts(160), config.metrics), config, "enterprise")
    engagement = next(c for c in h.components if c.name == "engagement")
    assert engagement.score is not None and engagement.score < 50
    assert any(d.component == "engagement" for d in h.drivers)


def test_the_order_of_relationship_events_does_not_change_the_state() -> None:
    evs = book()
    want = fold(*evs)
    for seed in range(5):
        shuffled = evs[:]
        random.Random(seed).shuffle(shuffled)
        got = fold(*shuffled)
        assert got.meetings == want.meetings
        for name in (
            "last_meeting_day",
            "last_qbr_day",
            "last_exec_day",
            "last_touch_day",
            "engaged_since_day",
        ):
            assert getattr(got, name) == getattr(want, name)
        assert got.profile == want.profile


def test_meetings_leave_the_state_with_the_horizon() -> None:
    s = fold(*book(), event("login", "a", at(200), user_id="u"))
    assert s.meetings == []  # older than HORIZON_DAYS behind the newest event
    assert s.last_meeting_day == ts(50) // DAY_S  # the latest ones stay, however old


@pytest.mark.parametrize("encode", [AccountState.dumps, encode_state_v1, encode_state_v2])
def test_every_layout_round_trips_the_relationship_fields(encode) -> None:
    s = fold(*book(), *(event("login", "a", at(d), user_id=f"u{d}") for d in range(70, 100)))
    back = AccountState.loads(encode(s))
    assert back == AccountState.loads(s.dumps_json())  # what every format keeps (buckets trimmed)
    for name in ("meetings", "last_meeting_day", "last_qbr_day", "last_exec_day", "last_touch_day"):
        assert getattr(back, name) == getattr(s, name)
    assert back.engaged_since_day == s.engaged_since_day and back.profile == s.profile


def test_a_state_without_relationship_events_is_written_as_before_they_existed() -> None:
    """Same bytes as a record of the previous release: the relationship entry and the profile's
    sponsor flag are only written when there is something in them."""
    s = fold(account_event("a"), *(event("login", "a", at(d), user_id=f"u{d}") for d in range(40)))
    raw = encode_state_v1(s)
    assert raw[0] == FORMAT_V1 or raw[0] == state_module.FORMAT_V1_ZSTD
    body = raw[1:] if raw[0] == FORMAT_V1 else state_module.cramjam.zstd.decompress(raw[1:])
    values = msgspec.msgpack.decode(bytes(body))
    assert len(values) == LAYOUT_V1.index("last_meeting_day") and len(values[1]) == 7


def test_old_records_load_with_no_relationship_data() -> None:
    """A record of the previous release is shorter than the layout: the new fields take defaults."""
    s = fold(*book())
    values = msgspec.msgpack.decode(encode_state_v1(s)[1:]) if encode_state_v1(s)[0] == FORMAT_V1 else None
    if values is None:
        values = msgspec.msgpack.decode(bytes(state_module.cramjam.zstd.decompress(encode_state_v1(s)[1:])))
    old = values[: LAYOUT_V1.index("last_meeting_day")]
    old[1] = old[1][:7]  # a profile of the previous release has no sponsor entry
    back = AccountState.loads(bytes((FORMAT_V1,)) + msgspec.msgpack.encode(old))
    assert back.meetings == [] and back.engaged_since_day is None and back.last_qbr_day is None
    assert back.profile is not None and not back.profile.has_executive_sponsor
    assert back.counts == s.counts
    assert not compute_metrics(back, ts(100), CFG).has_engagement
