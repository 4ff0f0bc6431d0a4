"""The pending -> firing -> resolved state machine, alert ids, reloads and rule-file errors."""

from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner

from rules.engine import FIRING, INACTIVE, PENDING, RuleSet, alert_id, load_rules, next_rule_due
from rules.engine import evaluate as evaluate_rules
from rules.model import Rule, parse_duration
from streams.cli.main import main
from streams.config import ConfigError
from streams.core.metrics import AccountMetrics
from streams.core.snapshot import AccountInfo, HealthSnapshot

H = 3600
D = 86_400


def snap(score: float | None, **metrics) -> HealthSnapshot:
    return HealthSnapshot(
        account_id="acme",
        as_of=datetime(2026, 1, 1, tzinfo=UTC),
        account=AccountInfo(name="Acme", segment="smb", csm_email="c@example.com"),
        score=score,
        band=None if score is None else "red" if score < 40 else "yellow" if score < 60 else "green",
        confidence=1.0,
        scorecard="default",
        deltas={"1d": None, "7d": None, "30d": None},
        components=[],
        drivers=[],
        metrics=AccountMetrics(**metrics),
        event_counts={},
        last_seen={},
    )


def ruleset(**kw) -> RuleSet:
    rule = Rule.model_validate(
        {"id": "low", "description": "low score", "when": "score < 60", "action": "call", **kw}
    )
    return RuleSet((rule,), {"low": "test"})


def evaluate(rs: RuleSet, snapshot: HealthSnapshot, states: dict, t: int) -> list:
    """Evaluate and commit, as the engine does when the alerts were built."""
    new, alerts = evaluate_rules(rs, snapshot, states, t)
    states.clear()
    states.update(new)
    return alerts


def test_evaluation_is_transactional():
    states: dict = {}
    rs = ruleset()
    new, alerts = evaluate_rules(rs, snap(50), states, 0)
    assert states == {} and new["low"][0] == FIRING and len(alerts) == 1


def test_a_bad_format_spec_is_refused_at_load_and_a_none_value_never_breaks_a_summary():
    with pytest.raises(ValueError, match="invalid format spec"):
        ruleset(summary="{score:.2q}")
    rs = ruleset(summary="{account}: score {score:.1f}")
    assert evaluate(rs, snap(50), {}, 0)[0].summary == "Acme: score 50.0"
    nothing = ruleset(when="score is None or score < 60", summary="{score:.1f}")
    assert evaluate(nothing, snap(None), {}, 0)[0].summary == "n/a"


def test_a_new_episode_gets_a_new_id_even_at_the_same_time():
    states: dict = {}
    rs = ruleset()
    fired = evaluate(rs, snap(50), states, 1000)[0]
    resolved = evaluate(rs, snap(80), states, 1000)[0]
    again = evaluate(rs, snap(50), states, 1000)[0]
    assert fired.alert_id == resolved.alert_id != again.alert_id


def run(rs: RuleSet, timeline: list[tuple[int, float | None]]) -> list[tuple[str, int]]:
    states: dict = {}
    out = []
    for t, score in timeline:
        for a in evaluate(rs, snap(score), states, t):
            when = a.starts_at if a.status == "firing" else a.ends_at
            out.append((a.status, int(when.timestamp())))
    return out


def test_fires_immediately_without_for_and_resolves():
    assert run(ruleset(), [(0, 50), (H, 55), (2 * H, 70)]) == [("firing", 0), ("resolved", 2 * H)]


def test_for_needs_the_condition_to_hold_that_long():
    rs = ruleset(**{"for": "2h"})
    assert run(rs, [(0, 50), (H, 70), (2 * H, 50), (3 * H, 50), (4 * H, 50)]) == [("firing", 4 * H)]


def test_keep_firing_for_damps_flapping():
    rs = ruleset(keep_firing_for="1h")
    timeline = [(0, 50), (10, 70), (20, 50), (30, 70), (H + 30, 70)]
    assert run(rs, timeline) == [("firing", 0), ("resolved", H + 30)]


def test_a_cancellation_resolves_at_once_despite_keep_firing_for():
    rs = RuleSet(
        (
            Rule.model_validate(
                {
                    "id": "low",
                    "description": "low score",
                    "when": "score < 60 and not canceled",
                    "action": "call",
                    "keep_firing_for": "3d",
                }
            ),
        ),
        {"low": "test"},
    )
    states: dict = {}
    assert [a.status for a in evaluate(rs, snap(50), states, 0)] == ["firing"]
    assert evaluate(rs, snap(70), states, H) == []  # still firing: keep_firing_for
    resolved = evaluate(rs, snap(50, canceled=True), states, 2 * H)
    assert [(a.status, a.ends_at.timestamp() if a.ends_at else None) for a in resolved] == [
        ("resolved", 2 * H)
    ]
    # closed because the account cancelled: never "recovered", whatever the score did
    assert resolved[0].ended_by == "cancelled"
    assert resolved[0].summary == "Acme: account cancelled; closed: low score"


def test_a_resolution_says_what_holds_when_it_is_sent():
    rs = ruleset(summary="{account} is red: health {score}")
    states: dict = {}
    (fired,) = evaluate(rs, snap(52), states, 0)
    (ended,) = evaluate(rs, snap(71.4), states, H)
    assert (fired.summary, fired.ended_by) == ("Acme is red: health 52.0", None)
    assert (ended.ended_by, ended.summary) == ("recovered", "Acme: no longer: low score; health 71.4 (green)")


def test_cooldown_suppresses_a_new_episode_too_soon():
    rs = ruleset(cooldown="1d")
    timeline = [(0, 50), (H, 70), (2 * H, 50), (D, 70), (D + 2 * H, 50)]
    assert run(rs, timeline) == [("firing", 0), ("resolved", H), ("firing", D + 2 * H)]


def test_send_resolved_false_and_missing_score():
    rs = ruleset(send_resolved=False)
    assert run(rs, [(0, 50), (H, None), (2 * H, 50)]) == [("firing", 0), ("firing", 2 * H)]


def test_alert_ids_are_deterministic_per_episode():
    states: dict = {}
    rs = ruleset()
    fired = evaluate(rs, snap(50), states, 1000)[0]
    resolved = evaluate(rs, snap(80), states, 2000)[0]
    again = evaluate(rs, snap(50), states, 3000)[0]
    assert fired.alert_id == resolved.alert_id == alert_id("acme", "low", 1000, 1)
    assert again.alert_id != fired.alert_id
    assert fired.values == {"score": 50} and fired.account.csm_email == "c@example.com"


def test_states_and_timers():
    rs = ruleset(**{"for": "2h", "keep_firing_for": "1h", "cooldown": "1d"})
    states: dict = {}
    evaluate(rs, snap(50), states, 0)
    assert states["low"][0] == PENDING and next_rule_due(rs, states, 0) == 2 * H
    evaluate(rs, snap(50), states, 2 * H)
    assert states["low"][0] == FIRING
    evaluate(rs, snap(70), states, 2 * H + 1800)
    assert states["low"][0] == FIRING and next_rule_due(rs, states, 2 * H + 1800) == 3 * H
    evaluate(rs, snap(70), states, 3 * H)
    assert states["low"][0] == INACTIVE and next_rule_due(rs, states, 3 * H) == 3 * H + D


def test_a_reload_keeps_state_of_unchanged_ids_and_drops_removed_ones():
    states: dict = {}
    evaluate(ruleset(), snap(50), states, 0)
    other = Rule.model_validate({"id": "other", "description": "d", "when": "score < 10", "action": "a"})
    reloaded = RuleSet((*ruleset(description="edited").rules, other), {"low": "x", "other": "x"})
    assert evaluate(reloaded, snap(50), states, H) == []  # still the same firing episode
    assert set(states) == {"low", "other"}
    (closed,) = evaluate(RuleSet((other,), {"other": "x"}), snap(50), states, 2 * H)
    assert (closed.rule_id, closed.status, closed.labels["reason"]) == ("low", "resolved", "rule_removed")
    assert closed.ended_by == "rule_removed"
    assert set(states) == {"other"}


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("14d", 14 * D), ("1d12h", D + 12 * H), ("90m", 5400), ("0", 0), (30, 30), ("2w", 14 * D)],
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_rule_file_errors_name_file_line_and_field(tmp_path: Path):
    f = tmp_path / "bad.yaml"
    f.write_text(
        "rules:\n"
        "  - id: ok\n    description: fine\n    when: score < 60\n    action: call\n"
        "  - id: typo\n    description: broken\n    when: adoptoin_rate < 0.3\n    action: call\n"
        "    for: 3 days\n"
    )
    with pytest.raises(ConfigError) as info:
        load_rules(f)
    text = str(info.value)
    assert (
        f"{f}:8: rules.1.when: Value error, unknown field 'adoptoin_rate' (did you mean 'adoption_rate'?)"
        in text
    )
    assert f"{f}:10: rules.1.for: Value error, '3 days' is not a duration" in text


def test_duplicate_ids_across_files_are_refused(tmp_path: Path):
    for name in ("a.yaml", "b.yaml"):
        (tmp_path / name).write_text("rules:\n  - {id: same, description: d, when: score < 1, action: a}\n")
    with pytest.raises(ConfigError, match=r"b.yaml: rule id 'same' is already defined in .*a\.yaml"):
        load_rules(tmp_path)


def test_rules_check_cli(tmp_path: Path):
    runner = CliRunner()
    ok = runner.invoke(main, ["rules", "check"])
    assert ok.exit_code == 0 and "16 rules OK" in ok.output  # band_yellow (issue 23) is the 16th
    f = tmp_path / "r.yaml"
    f.write_text("rules:\n  - {id: x, description: d, when: 'score <', action: a}\n")
    bad = runner.invoke(main, ["rules", "check", str(f)])
    assert bad.exit_code == 1 and f"{f}:2: rules.0.when: Value error, syntax error" in bad.output
    f.write_text(
        "rules:\n  - {id: y, description: d, when: 'nps_latest_score <= 6 and nps_latest_days_ago < 7', for: 8d, action: a}\n"
    )
    warn = runner.invoke(main, ["rules", "check", "--strict", str(f)])
    assert warn.exit_code == 1 and "unreachable: nps_latest_days_ago stays below 7 days" in warn.output


def _slide_rules(**yellow) -> RuleSet:
    """The shipped pair's shape on this file's bands (red < 40 <= yellow < 60)."""
    red = Rule.model_validate(
        {
            "id": "band_red",
            "description": "red",
            "when": 'band == "red"',
            "action": "call",
            "keep_firing_for": "1d",
            "supersedes": ["band_yellow"],
        }
    )
    yel = Rule.model_validate(
        {
            "id": "band_yellow",
            "description": "yellow for 2 hours",
            "when": 'band == "yellow"',
            "for": "2h",
            "keep_firing_for": "2d",
            "cooldown": "30d",
            "action": "intervene",
            **yellow,
        }
    )
    return RuleSet((red, yel), {"band_red": "test", "band_yellow": "test"})


def test_red_supersedes_a_firing_yellow_episode_at_once_never_as_recovered():
    rs = _slide_rules()
    states: dict = {}
    assert evaluate(rs, snap(50), states, 0) == []
    assert [a.rule_id for a in evaluate(rs, snap(50), states, 2 * H)] == ["band_yellow"]
    out = evaluate(rs, snap(30), states, 3 * H)
    # the red firing first, then the yellow episode it took over (not two open episodes for one slide)
    assert [(a.rule_id, a.status, a.ended_by) for a in out] == [
        ("band_red", "firing", None),
        ("band_yellow", "resolved", "superseded"),
    ]
    assert out[1].summary == "Acme: superseded by band_red: yellow for 2 hours; health 30.0 (red)"
    assert out[0].supersedes == ["band_yellow"] and states["band_yellow"][0] == INACTIVE
    # back to yellow: red ends after its keep_firing_for; yellow's cooldown runs from the supersession
    assert [(a.rule_id, a.status) for a in evaluate(rs, snap(50), states, 4 * H)] == []
    assert [(a.rule_id, a.status) for a in evaluate(rs, snap(50), states, D + 3 * H)] == [
        ("band_red", "resolved")
    ]
    assert evaluate(rs, snap(50), states, 2 * D) == []  # yellow for days, within the cooldown


def test_no_yellow_episode_while_red_is_firing_nor_on_the_way_down():
    rs = _slide_rules(cooldown=0)
    # yellow pending, then red before its `for`: the red episode only
    assert run(rs, [(0, 50), (H, 30), (3 * H, 30)]) == [("firing", H)]
    states: dict = {}
    evaluate(rs, snap(30), states, 0)
    # red's keep_firing_for: yellow holds but has no episode; after red ends it needs its whole `for`
    assert evaluate(rs, snap(50), states, H) == []
    assert evaluate(rs, snap(50), states, 5 * H) == [] and states["band_yellow"][0] == INACTIVE
    assert [a.status for a in evaluate(rs, snap(50), states, D + H)] == ["resolved"]  # red ends
    assert evaluate(rs, snap(50), states, D + 2 * H) == []
    assert [(a.rule_id, int(a.starts_at.timestamp())) for a in evaluate(rs, snap(50), states, D + 3 * H)] == [
        ("band_yellow", D + 3 * H)
    ]


def test_a_rule_cannot_supersede_itself_nor_two_rules_each_other(tmp_path: Path):
    with pytest.raises(ValueError, match="cannot supersede itself"):
        ruleset(supersedes=["low"])
    (tmp_path / "r.yaml").write_text(
        "rules:\n"
        "  - {id: a, description: a, when: 'score < 60', action: x, supersedes: [b]}\n"
        "  - {id: b, description: b, when: 'score < 50', action: x, supersedes: [a]}\n"
    )
    with pytest.raises(ConfigError, match="supersede each other"):
        load_rules(tmp_path)
