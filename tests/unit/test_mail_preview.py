"""healthmon mail-preview: delivery's own dispatcher and templates driven on event time."""

from __future__ import annotations

from datetime import UTC, date, datetime

from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from alerts.config import load_routing
from alerts.dispatch import Dispatcher
from alerts.routing import RouteMatch, alert_labels, group_key, route_alert
from rules.engine import load_rules
from streams.cli.main import main
from streams.sim.mail import MailPreview, _History, busiest, day_of, volume
from tests.alert_fixtures import make_alert

T = 1_770_000_000  # 2026-02-02 02:40 UTC
MATCH = RouteMatch("r", ("csm",), group_wait=30, group_interval=300, repeat_interval=86_400)


def reference_due(g, now: float) -> bool:
    """Group.due as it was written before next_due (the polling form delivery has always used)."""
    if g.inflight or now < g.next_attempt or not g.entries:
        return False
    if g.last_flush is None:
        return now >= g.created + g.match.group_wait
    if g.changed or g.snooze_due(now):
        return now >= g.last_flush + g.match.group_interval
    firing = any(a.status == "firing" for a in g.alerts.values())
    return firing and now >= g.last_flush + g.match.repeat_interval


@settings(max_examples=300, deadline=None)
@given(
    arrivals=st.lists(st.tuples(st.integers(0, 200_000), st.booleans()), min_size=1, max_size=8),
    flushes=st.lists(st.integers(0, 200_000), max_size=8),
    probe=st.integers(0, 300_000),
)
def test_next_due_says_when_due_turns_true(arrivals, flushes, probe):
    """A replay jumps to next_due instead of polling due: the two must agree at every instant."""
    d = Dispatcher()
    events = sorted(
        [(t, "add", resolved) for t, resolved in arrivals] + [(t, "flush", False) for t in flushes]
    )
    for i, (t, what, resolved) in enumerate(events):
        if what == "add":
            a = make_alert(status="resolved" if resolved else "firing", episode=T + i % 3)
            d.add(a, [(MATCH, "g", {})], (0, i), t)
        elif (g := d.groups.get("g")) is not None and g.due(t):
            d.done(d.snapshot(g), t, sent={k for k in g.entries})
    g = d.groups.get("g")
    if g is None:
        return
    for t in (probe, *(x for x, _ in arrivals), *flushes):
        assert g.due(t) == reference_due(g, t)
    at = g.next_due(probe)
    if at is not None:  # the instant a replay jumps to is the first at which polling says due
        assert reference_due(g, max(at, probe)) and (at <= probe or not reference_due(g, at - 1))
    else:
        assert not reference_due(g, probe) and not reference_due(g, probe + 10**7)


def _history(alerts, snaps):
    return _History(alerts, snaps)


def _snap(score: float, band: str, at: int, **metrics) -> tuple[float, dict]:
    as_of = datetime.fromtimestamp(at, UTC).isoformat()
    return float(at), {
        "account_id": "acme",
        "as_of": as_of,
        "score": score,
        "band": band,
        "account": {"name": "Acme Corp"},
        "metrics": {"mrr": 120, **metrics},
    }


def test_timers_run_on_event_time_and_figures_are_those_at_sending():
    fired = make_alert(name="Acme Corp", episode=T)  # no_login_14d, warning: the CSM's route only
    ended = fired.model_copy(
        update={"status": "resolved", "ends_at": datetime.fromtimestamp(T + 3 * 86_400, UTC)}
    )
    snaps = {"acme": [_snap(42.0, "yellow", T - 60), _snap(38.0, "red", T + 2 * 86_400, days_to_renewal=-3)]}
    mail = MailPreview(load_routing(None), load_rules(None), _history([fired, ended], snaps)).run(
        until=T + 5 * 86_400
    )
    # firing after group_wait; re-sent once a day while it fires (repeat_interval 24 h); the resolution
    assert [(m.sent_at.timestamp() - T, m.firing, m.resolved) for m in mail] == [
        (30, 1, 0),
        (30 + 86_400, 1, 0),
        (30 + 2 * 86_400, 1, 0),
        (3 * 86_400, 0, 1),  # overdue (group_interval) when it arrives: sent then
    ]
    assert mail[0].to == ("ana@example.com",)
    assert "Acme Corp: health 42 (yellow), MRR $120" in mail[0].text
    # two days later the account is red and its renewal date has passed: the digest says so
    assert "health 38 (red)" in mail[2].text and "renewal overdue since" in mail[2].text
    assert "Recovered:" in mail[3].text
    assert volume(mail, 5).emails == 4
    assert busiest(mail, {"ana@example.com"}) == ("ana@example.com", mail[0].sent_at.date())
    assert day_of(mail, "ana@example.com", date(2026, 2, 2)) == [mail[0]]


def test_a_resolution_of_a_firing_that_never_went_out_is_not_sent():
    fired = make_alert(name="Acme Corp", episode=T)
    ended = fired.model_copy(update={"status": "resolved", "ends_at": datetime.fromtimestamp(T + 10, UTC)})
    mail = MailPreview(load_routing(None), load_rules(None), _history([fired, ended], {})).run(
        until=T + 86_400
    )
    assert mail == []  # resolved within group_wait: nobody was told, so nobody hears of its end


def test_the_default_routing_matches_what_the_preview_uses():
    a = make_alert(severity="critical")
    labels = alert_labels(a)
    assert [group_key(m, labels) for m in route_alert(load_routing(None), labels)] == [
        "cs-managers|csm=ana@example.com",
        "csm-email|csm=ana@example.com",
    ]


def test_the_command_prints_volume_and_one_day_of_mail():
    res = CliRunner().invoke(
        main, ["mail-preview", "--accounts", "12", "--days", "21", "--seed", "3", "--end", "2026-06-01"]
    )
    assert res.exit_code == 0, res.output
    head, _, rest = res.output.partition("\n")
    assert " emails to " in head and "per person-day" in head
    assert "@example.com on 2026-" in rest and "--- " in rest and "[healthmon]" in rest
