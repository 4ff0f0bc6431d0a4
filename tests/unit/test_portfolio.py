"""Portfolio figures against the hand computation in docs/portfolio.md (the page is the fixture)."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from streams.core.portfolio import (
    PortfolioBook,
    affected_periods,
    period_months,
    point_from_snapshot,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "portfolio.md"


def doc_block(kind: str):
    m = re.search(rf"```json {kind}\n(.*?)```", DOC.read_text(), re.S)
    assert m, f"docs/portfolio.md has no `json {kind}` block"
    return orjson.loads(m.group(1))


def snapshot(row: dict, month: str) -> dict | None:
    mrr = row[month]
    if mrr is None:
        return None
    nov = month == "nov"
    metrics: dict = {"mrr": str(mrr), "canceled": bool(nov and row.get("canceled"))}
    if nov:
        nps, nps_n = row.get("nps", (None, 0))
        metrics.update(nps=nps, nps_responses=nps_n)
        csat, csat_n = row.get("csat", (None, 0))
        ces, ces_n = row.get("ces", (None, 0))
        metrics.update(csat_90d=csat, csat_responses_90d=csat_n, ces_mean_90d=ces, ces_responses_90d=ces_n)
        if "renewal_days" in row:
            metrics["days_to_renewal"] = row["renewal_days"]
    return {
        "account_id": row["id"],
        "as_of": "2026-11-30T12:00:00Z" if nov else "2026-10-31T12:00:00Z",
        "account": {"name": row["id"].upper(), "segment": row["seg"], "csm_email": row["csm"]},
        "score": {"green": 80.0, "yellow": 50.0, "red": 20.0}[row["band"]] if nov else 75.0,
        "band": row["band"] if nov else "green",
        "drivers": [{"text": f"{row['id']} driver"}],
        "metrics": metrics,
    }


def book_from_doc() -> PortfolioBook:
    book = PortfolioBook()
    for row in doc_block("portfolio-fixture"):
        for month in ("nov", "oct"):  # out of order on purpose: month-end points do not care
            snap = snapshot(row, month)
            if snap is not None:
                book.apply(snap["account_id"], point_from_snapshot(snap))
    return book


def test_worked_example_matches_the_docs() -> None:
    figures = book_from_doc().compute("2026-11")
    for group, expected in doc_block("portfolio-expected").items():
        got = figures[group].model_dump()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (group, key)


def test_canceled_accounts_leave_at_risk_and_count_in_churn() -> None:
    all_ = book_from_doc().compute("2026-11")["all"]
    assert [r.account_id for r in all_.at_risk] == ["e3", "a3"]  # by MRR
    assert [r.account_id for r in all_.renewals_90d] == ["e3", "e1"]  # by date
    assert all_.at_risk[0].drivers == ["e3 driver"]
    assert all_.churned_accounts == 1


def test_csm_groups_and_quarter() -> None:
    figures = book_from_doc().compute("2026-11")
    ana = figures["csm:ana@example.com"]
    assert (ana.starting_mrr, ana.expansion_mrr, ana.churned_mrr) == (1500, 200, 500)
    # Q4's cohort is the end of September: nobody was paying then, so all are new and rates are null.
    q4 = book_from_doc().compute("2026-Q4")["all"]
    assert q4.starting_mrr == 0 and q4.nrr is None and q4.new_accounts == 6
    # October alone: every account is new (nothing before it); the ending MRR is October's.
    assert book_from_doc().compute("2026-10")["all"].ending_mrr == 12300


def test_a_later_snapshot_of_the_month_wins_and_an_earlier_one_is_ignored() -> None:
    book = book_from_doc()
    late = snapshot(
        {"id": "a1", "seg": "smb", "csm": "ana@example.com", "oct": None, "nov": 900, "band": "green"}, "nov"
    )
    assert late is not None
    late["as_of"] = "2026-11-29T00:00:00Z"  # older than the one kept: ignored
    assert book.apply("a1", point_from_snapshot(late)) is None
    assert book.compute("2026-11")["all"].expansion_mrr == 700
    late["as_of"] = "2026-11-30T18:00:00Z"
    assert book.apply("a1", point_from_snapshot(late)) == "2026-11"
    figures = book.compute("2026-11")["all"]
    assert (figures.expansion_mrr, figures.contraction_mrr) == (500, 800)


def test_periods() -> None:
    assert period_months("2026-Q4") == ["2026-10", "2026-11", "2026-12"]
    assert period_months("2026-02") == ["2026-02"]
    for bad in ("2026-13", "2026-Q5", "26-1", "nope"):
        with pytest.raises(ValueError):
            period_months(bad)
    assert affected_periods(["2026-10"], ["2026-09", "2026-10", "2026-11"]) == [
        "2026-10",
        "2026-11",
        "2026-Q4",
        "2026",
    ]
    assert period_months("2026") == [f"2026-{m:02d}" for m in range(1, 13)]


def test_a_cancelled_account_is_lost_under_the_band_it_was_last_scored_in() -> None:
    """Cancelled snapshots carry no score or band (the account is no longer scored): churn by band
    takes ``last_band``, the band before the cancellation."""
    book = PortfolioBook()
    base = {"account": {"name": "A", "segment": "smb", "csm_email": "ana@example.com"}, "drivers": []}
    oct_ = {**base, "account_id": "a", "as_of": "2026-10-31T12:00:00Z", "score": 80.0, "band": "green"}
    nov = {**base, "account_id": "a", "as_of": "2026-11-20T12:00:00Z", "score": None, "band": None}
    oct_["metrics"] = {"mrr": "100", "canceled": False}
    nov.update(metrics={"mrr": "100", "canceled": True}, status="cancelled", last_band="yellow")
    for snap in (oct_, nov):
        book.apply("a", point_from_snapshot(snap))
    got = book.compute("2026-11")["all"]
    assert (got.churned_accounts, got.churned_by_band) == (1, {"yellow": 1})
    assert got.accounts_by_band == {"green": 0, "yellow": 0, "red": 0, "none": 0}  # not active any more
