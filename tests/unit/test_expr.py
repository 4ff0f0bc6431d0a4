"""The condition language: what it accepts, what it refuses, and null semantics."""

import pytest

from rules.context import FIELDS
from rules.expr import ExprError, compile_condition


def run(src: str, **ctx) -> bool:
    full = dict.fromkeys(FIELDS)
    full.update(ctx)
    return compile_condition(src, FIELDS)(full)


@pytest.mark.parametrize(
    ("src", "ctx", "expected"),
    [
        ("score < 60", {"score": 59.9}, True),
        ("score < 60", {"score": 60}, False),
        ("score < 60", {"score": None}, False),  # no score: never fires
        ("not score < 60", {"score": None}, True),
        ("score is None", {"score": None}, True),
        ("score is not None and score >= 60", {"score": 75}, True),
        ("40 <= score < 60", {"score": 45}, True),
        ("40 <= score < 60", {"score": 60}, False),
        ('band == "red" or band == "yellow"', {"band": "yellow"}, True),
        ('band in ["red", "yellow"]', {"band": "green"}, False),
        ('segment not in ["smb"]', {"segment": "enterprise"}, True),
        ('segment not in ["smb"]', {"segment": None}, False),
        ("adoption_rate * seats < 3", {"adoption_rate": 0.2, "seats": 10}, True),
        ("adoption_rate * seats < 3", {"adoption_rate": None, "seats": 10}, False),
        ("mrr_change_30d / mrr < -0.1", {"mrr_change_30d": -20.0, "mrr": 100.0}, True),
        ("mrr_change_30d / mrr < -0.1", {"mrr_change_30d": -20.0, "mrr": 0.0}, False),  # x/0 is null
        ("-delta_7d > 5", {"delta_7d": -6.0}, True),
        ("canceled", {"canceled": True}, True),
        ("daily_login_lapsed and not canceled", {"daily_login_lapsed": True, "canceled": False}, True),
        ("metrics.days_since_last_login >= 14", {"days_since_last_login": 14}, True),
        ("ticket_spike == true", {"ticket_spike": True}, True),
        ("days_to_renewal % 7 == 0", {"days_to_renewal": 14}, True),
    ],
)
def test_conditions(src, ctx, expected):
    assert run(src, **ctx) is expected


@pytest.mark.parametrize(
    ("src", "message"),
    [
        ('__import__("os").system("true")', "call is not allowed"),
        ("().__class__.__bases__", "attribute access is allowed"),
        ("score.__class__", "only metrics.<name> attribute access is allowed"),
        ("[x for x in (1, 2)]", "listcomp is not allowed"),
        ("lambda: True", "lambda is not allowed"),
        ("score[0] > 1", "subscript is not allowed"),
        ("adoptoin_rate < 0.3", "unknown field 'adoptoin_rate' (did you mean 'adoption_rate'?)"),
        ('band == "purple"', "band is never 'purple'"),
        ('band < "red"', "band"),
        ('score < "60"', "cannot order number and string"),
        ("score + 1", "must be true or false"),
        ("score < 60 and", "syntax error"),
        ("score ** 2 > 1", "operator Pow is not allowed"),
        ("score is 5", "'is' and 'is not' only compare with null"),
        ("score in [1, band]", "list items must be number constants"),
        ("segment in segment", "'in' needs a list of constants"),
        ("x := 1", "syntax error"),
        ("score < 60 if canceled else False", "ifexp is not allowed"),
        ("1" * 2001, "longer than 2000"),
    ],
)
def test_unsafe_or_wrong_conditions_are_refused_at_load_time(src, message):
    with pytest.raises(ExprError) as info:
        compile_condition(src, FIELDS)
    assert message in str(info.value)


def test_the_fields_a_condition_reads_are_known():
    c = compile_condition("score < 60 and days_since_last_login >= 14 and score > 1", FIELDS)
    assert c.fields == ("score", "days_since_last_login")
