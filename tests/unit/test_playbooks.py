"""Rule actions as tracked playbooks: deadlines, owner roles, types and steps, validated at load."""

from __future__ import annotations

from pathlib import Path

import pytest

from rules.engine import load_rules
from rules.model import Action, AlertEvent
from streams.config import ConfigError


def _pack(tmp_path: Path, action: str) -> Path:
    f = tmp_path / "p.yaml"
    f.write_text(f"rules:\n  - id: r\n    description: d\n    when: score < 60\n    action:\n{action}")
    return f


def test_a_plain_string_is_an_untracked_step():
    a = Action.model_validate({"step": "Call"})
    assert (a.step, a.respond_within, a.owner, a.type, a.steps, a.tracked) == (
        "Call",
        None,
        "csm",
        "risk",
        (),
        False,
    )


def test_a_playbook_with_deadline_owner_type_and_steps(tmp_path: Path):
    f = _pack(
        tmp_path,
        "      step: Call\n"
        "      respond_within: 48h\n"
        "      owner: manager\n"
        "      type: opportunity\n"
        "      steps:\n"
        "        - {step: Call, within: same_day}\n"
        "        - {step: Log the plan, within: 7d}\n",
    )
    (rule,) = load_rules(f).rules
    assert rule.action.respond_within == 48 * 3600
    assert rule.action.owner == "manager" and rule.action.type == "opportunity"
    assert [(s.step, s.within) for s in rule.action.steps] == [
        ("Call", "same_day"),
        ("Log the plan", 7 * 86400),
    ]
    assert rule.action.tracked


@pytest.mark.parametrize(
    ("action", "line", "field", "message"),
    [
        (
            "      step: Call\n      respond_within: 2 days\n",
            7,
            "rules.0.action.respond_within",
            "not a deadline",
        ),
        ("      step: Call\n      respond_within: 0\n", 7, "rules.0.action.respond_within", "later than"),
        ("      step: Call\n      owner: boss\n", 7, "rules.0.action.owner", "'csm' or 'manager'"),
        ("      step: Call\n      type: upsell\n", 7, "rules.0.action.type", "'risk' or 'opportunity'"),
        ("      step: Call\n      deadline: 48h\n", 7, "rules.0.action.deadline", "Extra inputs"),
        (
            "      step: Call\n      steps: [{step: x, within: 1d}]\n",
            6,
            "rules.0.action",
            "steps need respond_within",
        ),
        (
            "      step: Call\n      respond_within: 1d\n      steps:\n"
            "        - {step: a, within: 7d}\n        - {step: b, within: 2d}\n",
            6,
            "rules.0.action",
            "in the order they are due",
        ),
        (
            "      step: Call\n      respond_within: 1d\n      steps:\n        - {step: a, within: soon}\n",
            9,
            "rules.0.action.steps.0.within",
            "not a deadline",
        ),
    ],
)
def test_a_bad_playbook_fails_at_load_naming_file_line_and_field(tmp_path, action, line, field, message):
    f = _pack(tmp_path, action)
    with pytest.raises(ConfigError) as info:
        load_rules(f)
    text = str(info.value)
    assert f"{f}:{line}: {field}: " in text, text
    assert message in text


def test_the_default_pack_carries_the_seed_deadlines():
    rules = {r.id: r for r in load_rules().rules}
    assert rules["band_red"].action.respond_within == 48 * 3600
    assert rules["band_red"].action.owner == "csm"
    assert [s.within for s in rules["band_red"].action.steps] == ["same_day", 48 * 3600, 7 * 86400]
    assert "health_below_60" not in rules  # one crossing, one rule: red is below 60 in the shipped card
    # yellow's "specific interventions": a week to act, steps chosen from the score drivers; red
    # takes the yellow episode and task over (one slide, one open task)
    assert rules["band_yellow"].action.respond_within == 7 * 86400
    assert [s.within for s in rules["band_yellow"].action.steps] == [3 * 86400, 7 * 86400]
    assert rules["band_red"].supersedes == ("band_yellow",)
    assert (rules["nps_detractor"].action.respond_within, rules["nps_detractor"].action.owner) == (
        24 * 3600,
        "manager",
    )
    assert rules["csat_1_2"].action.respond_within == "same_day"
    assert rules["nps_promoter"].action.type == "opportunity"
    # The cancellation notice is not a task: a cancellation closes the account's tasks.
    assert not rules["account_canceled"].action.tracked
    assert all(r.action.tracked for r in rules.values() if r.id != "account_canceled")
    assert all(r.action.type == "risk" for r in rules.values() if r.id != "nps_promoter")


def test_a_firing_alert_carries_its_playbook_and_the_text_step():
    from tests.alert_fixtures import make_alert

    base = make_alert().model_dump(mode="json")
    playbook = Action.model_validate({"step": "Call", "respond_within": "same_day", "owner": "manager"})
    a = AlertEvent.model_validate({**base, "playbook": playbook.model_dump(mode="json")})
    again = AlertEvent.model_validate_json(a.model_dump_json())
    assert again.playbook == playbook and again.action == base["action"]
