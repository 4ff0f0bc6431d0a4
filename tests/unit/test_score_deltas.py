"""``score_deltas`` runs on every evaluation in one pass over the history: it must equal its
definition (score now minus the last daily score on or before N days ago) on any history."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.core.scoring import score_deltas


def _by_definition(history: dict[int, int], today: int, score: float | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for n in (1, 7, 30):
        past = [d for d in history if d <= today - n]
        out[f"{n}d"] = None if score is None or not past else round(score - history[max(past)] / 10, 1)
    return out


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.integers(-40, 100), st.integers(0, 1000), max_size=40),
    st.integers(-10, 110),
    st.one_of(st.none(), st.floats(0, 100, allow_nan=False)),
)
def test_score_deltas_match_the_definition(history, today, score):
    assert score_deltas(history, today, score) == _by_definition(history, today, score)
