"""Routing, rendering and grouping without a network."""

from email import message_from_bytes
from email.policy import default
from pathlib import Path

import orjson
import pytest

from alerts.config import EmailConfig, load_routing
from alerts.dispatch import Dispatcher
from alerts.model import Notification
from alerts.notifiers import PermanentError, RetryableError, classify_http
from alerts.notifiers.email import build_message, recipients
from alerts.notifiers.slack import render
from alerts.notifiers.webhook import sign
from alerts.routing import RouteMatch, alert_labels, group_key, route_alert
from alerts.text import slack_escape
from streams.config import ConfigError
from tests.alert_fixtures import make_alert

HOSTILE = (
    "Evil <!channel> & <@U123|boss> <https://x.example|click> @here @everyone\r\nBcc: victim@example.com"
)


def test_default_routing_sends_to_the_csm_and_critical_also_to_managers():
    cfg = load_routing()
    warn = route_alert(cfg, alert_labels(make_alert(severity="warning")))
    crit = route_alert(cfg, alert_labels(make_alert(severity="critical")))
    assert [m.receiver for m in warn] == ["csm-email"]
    assert [m.receiver for m in crit] == ["cs-managers", "csm-email"]
    assert warn[0].group_by == ("csm",) and warn[0].group_wait == 30


def test_routing_tree_matchers_and_first_match(tmp_path: Path):
    f = tmp_path / "r.yaml"
    f.write_text(
        "receivers:\n"
        "  - {name: a, email: {to: [a@example.com]}}\n"
        "  - {name: b, email: {to: [b@example.com]}}\n"
        "  - {name: c, email: {to: [c@example.com]}}\n"
        "route:\n  receiver: a\n  routes:\n"
        "    - {match_re: {segment: 'enterprise|mid_market'}, receiver: b, group_wait: 1s}\n"
        "    - {match: {rule: nps_detractor}, receiver: c}\n"
    )
    cfg = load_routing(f)
    assert [m.receiver for m in route_alert(cfg, {"segment": "enterprise", "rule": "nps_detractor"})] == ["b"]
    assert [m.receiver for m in route_alert(cfg, {"segment": "smb", "rule": "nps_detractor"})] == ["c"]
    assert [(m.receiver, m.group_wait) for m in route_alert(cfg, {"segment": "smb"})] == [("a", 30)]


def test_routing_errors_name_file_line_and_field(tmp_path: Path):
    f = tmp_path / "r.yaml"
    f.write_text("receivers:\n  - name: a\n    email: {to: ['not an address']}\nroute:\n  receiver: nobody\n")
    with pytest.raises(ConfigError) as info:
        load_routing(f)
    assert f"{f}:3: receivers.0.email.to: Value error, 'not an address' is not an email address" in str(
        info.value
    )


def test_slack_text_cannot_mention_or_link():
    text = slack_escape(HOSTILE)
    assert "<" not in text and ">" not in text
    assert "&lt;!channel&gt;" in text and "&amp;" in text
    assert "@here" not in text and "@everyone" not in text
    body = orjson.dumps(
        render(
            Notification(
                receiver="r", group_key="g", group_labels={}, firing=[make_alert(name=HOSTILE)], resolved=[]
            )
        )
    )
    assert b"<!channel>" not in body and b"<@U123" not in body and b"<https://x.example" not in body


def test_slack_message_has_score_drivers_action_and_csm():
    blocks = render(
        Notification(receiver="r", group_key="g", group_labels={}, firing=[make_alert()], resolved=[])
    )["blocks"]
    text = blocks[1]["text"]["text"]
    assert "Health *42* (yellow)" in text and "no login for 15 days" in text
    assert text.count("acme Inc") == 1
    assert "Next step:* Send the re-engagement email" in text and "CSM: Ana" in text
    assert "\nwhy: no login for 15 days\n" in text  # the score drivers


def test_email_says_why_with_the_newest_alerts_drivers():
    older = make_alert(rule="nps_detractor", episode=1_770_000_000)
    newer = make_alert(episode=1_770_086_400)
    newer.drivers[0] = newer.drivers[0].model_copy(update={"text": "no login for 16 days"})
    second = newer.drivers[0].model_copy(update={"text": "2 urgent tickets open", "points_lost": 5.0})
    newer = newer.model_copy(update={"drivers": [*newer.drivers, second]})
    n = Notification(receiver="r", group_key="g", group_labels={}, firing=[older, newer], resolved=[])
    cfg = EmailConfig(to=["account_csm"], sender="healthmon@example.com")
    parsed = message_from_bytes(build_message(cfg, n, recipients(cfg, n)).as_bytes(), policy=default)
    text = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    lines = text.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("    acme Inc: health"))
    # its own line, under the account's figures and over its alerts
    assert lines[header + 1] == "    Why: no login for 16 days · 2 urgent tickets open", lines[
        header : header + 3
    ]
    assert lines[header + 2].startswith("    - ") and text.count("Why:") == 1
    assert "Why: no login for 16 days · 2 urgent tickets open</p>" in html


def test_slack_shows_each_account_once_with_its_alerts():
    two = [make_alert(), make_alert(rule="nps_detractor", episode=1_770_086_400), make_alert(account="b")]
    n = Notification(
        receiver="r", group_key="g", group_labels={}, firing=two, resolved=[], new=[two[1].alert_id]
    )
    blocks = render(n, "https://cs.example.com")["blocks"]
    assert len(blocks) == 3  # header + one block per account
    first = blocks[1]["text"]["text"]
    assert first.startswith(":large_orange_circle: *NEW* *acme Inc*") and first.count("• ") == 2
    assert "https://cs.example.com/accounts/acme" in first


def test_email_is_multipart_and_safe_against_header_injection():
    n = Notification(
        receiver="r", group_key="g", group_labels={}, firing=[make_alert(name=HOSTILE)], resolved=[]
    )
    cfg = EmailConfig(to=["account_csm"], sender="healthmon@example.com")
    msg = build_message(cfg, n, recipients(cfg, n))
    parsed = message_from_bytes(msg.as_bytes(), policy=default)
    assert parsed["To"] == "ana@example.com" and parsed["Bcc"] is None
    assert "\n" not in parsed["Subject"] and "victim" not in (parsed["Bcc"] or "")
    html = parsed.get_body(("html",)).get_content()
    text = parsed.get_body(("plain",)).get_content()
    assert "&lt;!channel&gt;" in html and "<!channel>" not in html
    assert "Next step: Send the re-engagement email" in text


def test_email_recipients_are_validated():
    n = Notification(
        receiver="r",
        group_key="g",
        group_labels={},
        firing=[make_alert(csm="x@y.com\r\nBcc: z@w.com")],
        resolved=[],
    )
    assert recipients(EmailConfig(to=["account_csm", "lead@example.com"]), n) == ["lead@example.com"]


def test_webhook_signature_and_http_classification():
    assert (
        sign(b"s3cret", b"{}") == "sha256=" + __import__("hmac").new(b"s3cret", b"{}", "sha256").hexdigest()
    )
    classify_http(204, None, "x")
    with pytest.raises(RetryableError) as info:
        classify_http(429, "7", "x")
    assert info.value.retry_after == 7
    with pytest.raises(RetryableError):
        classify_http(503, None, "x")
    for status in (400, 403, 404, 410):
        with pytest.raises(PermanentError):
            classify_http(status, None, "x")


def test_group_timers_and_committed_offsets():
    m = RouteMatch("r", ("csm",), group_wait=30, group_interval=300, repeat_interval=3600)
    d = Dispatcher()
    a = make_alert()
    key = group_key(m, alert_labels(a))
    d.add(a, [(m, key, {"csm": "ana@example.com"})], (0, 5), now=0)
    d.add(make_alert(account="b"), [(m, key, {})], (0, 6), now=10)
    assert d.committable({0: 6}) == {0: 5}
    assert d.due(29) == [] and len(d.due(30)) == 1
    g = d.due(30)[0]
    d.done(d.snapshot(g), 30, sent=set(g.entries))
    assert d.committable({0: 6}) == {0: 7}
    assert d.due(300) == [] and d.due(3630) == [g]  # nothing new: only the repeat
    d.add(make_alert(status="resolved"), [(m, key, {})], (0, 7), now=100)
    assert d.due(329) == [] and d.due(330) == [g]  # a change: after group_interval


M = RouteMatch("r", ("csm",), group_wait=1, group_interval=2, repeat_interval=3600)


def _add(d: Dispatcher, alert, offset: int, now: float = 0, partition: int = 0):
    key = group_key(M, alert_labels(alert))
    d.add(alert, [(M, key, {"csm": alert.account.csm_email or ""})], (partition, offset), now)
    return d.groups[key]


def test_a_flush_releases_only_what_its_snapshot_held():
    """Alertmanager's DeleteIfNotModified: what arrives while a message is being sent stays, held."""
    d = Dispatcher()
    g = _add(d, make_alert(account="a"), 0)
    _add(d, make_alert(account="a", status="resolved"), 1)
    snap = d.snapshot(g)
    _add(d, make_alert(account="b"), 2, now=1)  # arrives mid-flush
    resolved_b = make_alert(account="c")
    _add(d, resolved_b, 3, now=1)
    d.done(snap, 1.5, sent={a.alert_id for a in snap.resolved})
    assert sorted(e.alert.account_id for e in g.entries.values()) == ["b", "c"]
    assert d.committable({0: 3}) == {0: 2}  # b and c not delivered: their offsets are held
    assert g.changed and d.due(1.5 + 2) == [g]
    snap2 = d.snapshot(g)
    _add(d, make_alert(account="b", status="resolved"), 4, now=3.6)  # b updated mid-flush
    d.done(snap2, 3.7, sent={a.alert_id for a in snap2.firing})
    assert d.committable({0: 4}) == {0: 4}  # b's resolution still to send
    assert g.entries[make_alert(account="b").alert_id].alert.status == "resolved"


def test_a_firing_replayed_after_its_resolution_never_overwrites_it():
    """An alert id is one episode: a firing read after its resolution is the engine publishing again
    (at least once). It must not turn the resolution back into a firing, nor be renamed into a new
    episode only this process knows (another process would look the resolution up under another id)."""
    d = Dispatcher()
    g = _add(d, make_alert(), 0)
    _add(d, make_alert(status="resolved"), 1)
    _add(d, make_alert(), 2)  # replayed
    _add(d, make_alert(status="resolved"), 3)  # replayed
    snap = d.snapshot(g)
    assert [a.status for a in snap.resolved] == ["resolved"] and snap.firing == []
    assert [a.alert_id for a in snap.resolved] == [make_alert().alert_id]
    assert d.committable({0: 3}) == {0: 0}  # the firing and both resolutions held; the replay is done
    d.done(snap, 2, sent={make_alert().alert_id})
    assert d.groups == {} and d.committable({0: 3}) == {0: 4}


def test_silenced_firing_keeps_its_offset_and_is_due_when_the_silence_ends():
    d = Dispatcher()
    a = make_alert()
    g = _add(d, a, 0)
    snap = d.snapshot(g)
    g.entries[a.alert_id].silenced_until = 100
    d.done(snap, 1, sent=set(), held={a.alert_id})
    assert d.committable({0: 0}) == {0: 0}
    assert d.due(50) == [] and d.due(100) == [g]
    d.done(d.snapshot(g), 100, sent={a.alert_id})
    assert d.committable({0: 0}) == {0: 1} and g.entries[a.alert_id].silenced_until is None


def test_an_alert_that_never_resolves_is_notified_once_and_firing_alerts_expire():
    d = Dispatcher()
    a = make_alert(rule="gone")
    g = _add(d, a, 0)
    d.done(d.snapshot(g), 1, sent={a.alert_id}, once={a.alert_id})
    assert d.groups == {} and d.committable({0: 0}) == {0: 1}
    b = make_alert(account="b")
    g = _add(d, b, 1)
    d.done(d.snapshot(g), 1, sent={b.alert_id})
    assert d.expire(3599, ttl=3600) == 0 and d.expire(3600, ttl=3600) == 1 and d.groups == {}


def test_revoked_partitions_are_forgotten():
    d = Dispatcher()
    _add(d, make_alert(account="a"), 0, partition=0)
    _add(d, make_alert(account="b"), 0, partition=1)
    d.revoke({1})
    assert [e.alert.account_id for g in d.groups.values() for e in g.entries.values()] == ["a"]
    assert d.committable({0: 0}) == {0: 0}
