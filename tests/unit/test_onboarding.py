"""Onboarding completion per account: the worked example of docs/portfolio.md ("Onboarding completion"),
folded through the real reducer, the state codec and the metrics."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER
from streams.core.metrics import MetricsConfig, compute_metrics
from streams.core.state import AccountState

KEY = ["dashboards", "reports", "integrations", "automation"]
CFG = MetricsConfig(key_features=KEY)


def iso(day: int, hour: int = 9) -> str:
    return f"2026-11-{day:02d}T{hour:02d}:00:00Z"


def ts(day: int, hour: int = 9) -> int:
    return int(datetime(2026, 11, day, hour, tzinfo=UTC).timestamp())


def example() -> list[dict]:
    """Signed up 1 November 09:00, then the key features one by one (dashboards twice)."""
    account = {
        "event_id": "acct",
        "account_id": "a",
        "type": "account",
        "occurred_at": iso(1),
        "name": "A",
        "segment": "smb",
        "csm_name": "Ana",
        "csm_email": "ana@example.com",
        "signed_up_at": iso(1),
    }
    uses = [(3, 9, "dashboards"), (5, 9, "reports"), (6, 9, "dashboards"), (10, 9, "integrations")]
    uses.append((12, 15, "automation"))
    return [account] + [
        {
            "event_id": f"f{i}",
            "account_id": "a",
            "type": "feature_used",
            "occurred_at": iso(day, hour),
            "user_id": "u1",
            "feature": feature,
        }
        for i, (day, hour, feature) in enumerate(uses)
    ]


def fold(events: list[dict], key_features: list[str]) -> AccountState:
    state = AccountState(account_id="a")
    for e in events:
        apply_event(state, EVENT_ADAPTER.validate_python(e), key_features=frozenset(key_features))
    return state


def test_onboarding_matches_the_docs() -> None:
    state = fold(example(), KEY)
    assert state.onboarded_at == ts(12, 15)
    done = compute_metrics(state, ts(12, 16), CFG)
    assert done.onboarded is True
    assert done.onboarding_days == pytest.approx(11.25)
    assert done.ttfv_days == pytest.approx(2.0)
    # Before the automation use the set is incomplete (the metrics read the state at their own time).
    before = fold(example()[:-1], KEY)
    assert before.onboarded_at is None
    m = compute_metrics(before, ts(12, 14), CFG)
    assert m.onboarded is False and m.onboarding_days is None
    # Kept for good: months later, with every feature long out of the 30-day window, still onboarded.
    later = compute_metrics(state, ts(28, 9) + 60 * 86400, CFG)
    assert later.onboarded is True and later.feature_breadth == 0.0


def test_no_key_features_means_no_milestone() -> None:
    state = fold(example(), [])
    assert state.onboarded_at is None
    m = compute_metrics(state, ts(13), MetricsConfig())
    assert m.onboarded is None and m.onboarding_days is None


def test_onboarded_at_survives_the_state_codec() -> None:
    state = fold(example(), KEY)
    assert AccountState.loads(state.dumps()).onboarded_at == ts(12, 15)
    assert AccountState.loads(state.dumps_json()).onboarded_at == ts(12, 15)


def test_times_from_sign_up_need_the_account_known_since_then() -> None:
    """An account first seen long after its sign-up: onboarded, but no time to onboard (or first value)."""
    events = example()
    events[0] = {**events[0], "signed_up_at": "2024-11-01T09:00:00Z"}
    m = compute_metrics(fold(events, KEY), ts(13), CFG)
    assert m.onboarded is True
    assert m.onboarding_days is None and m.ttfv_days is None
