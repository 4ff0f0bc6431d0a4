"""The leader's figures (periods to date, trailing 12 months, deltas, renewals, CSM table, unit economics)
against the worked examples of docs/portfolio.md (the page is the fixture)."""

from __future__ import annotations

from datetime import date

import pytest

from streams.core.leader import (
    compare,
    csm_load,
    csm_table,
    last_closed_month,
    period_progress,
    period_span,
    trailing_12,
    unit_economics,
)
from streams.core.portfolio import PortfolioBook, PortfolioMetrics, cohorts, point_from_snapshot, segments
from streams.core.targets import load_targets, rate
from tests.unit.test_portfolio import doc_block

AS_OF = {"oct": "2026-10-31T12:00:00Z", "nov": "2026-11-30T12:00:00Z", "dec": "2026-12-07T09:00:00Z"}


def renewal_snapshots() -> list[dict]:
    """The renewal example of docs/portfolio.md as cs.health snapshots (October, November, 7 December)."""
    out = []
    for row in doc_block("renewal-fixture"):
        for month, pt in row["points"].items():
            as_of = AS_OF[month]
            due = date.fromisoformat(pt["renewal"]) - date.fromisoformat(as_of[:10])
            snap = {
                "account_id": row["id"],
                "as_of": as_of,
                "account": {
                    "name": row["id"].upper(),
                    "segment": row["seg"],
                    "csm_email": row["csm"],
                    "csm_name": row["csm"].split("@")[0].title(),
                },
                "score": 50.0,
                "band": row["band"],
                "metrics": {
                    "mrr": row["mrr"],
                    "canceled": pt.get("canceled", False),
                    "days_to_renewal": due.days,
                    "unpaid_invoices": pt.get("unpaid", 0),
                },
            }
            out.append(snap)
    return out


def renewal_book() -> PortfolioBook:
    book = PortfolioBook()
    for snap in renewal_snapshots():
        book.apply(snap["account_id"], point_from_snapshot(snap))
    return book


def test_renewals_match_the_docs() -> None:
    book = renewal_book()
    for period, expected in doc_block("renewal-expected").items():
        got = book.compute(period)["all"].model_dump()
        for key, value in expected.items():
            assert got[key] == pytest.approx(value), (period, key)
    nov = book.compute("2026-11")["all"]
    assert [r.account_id for r in nov.renewals_overdue] == ["r3"]
    assert str(nov.renewals_overdue[0].renewal_date) == "2026-11-25"
    assert "r3" not in {r.account_id for r in nov.renewals_90d}  # overdue is apart, not "ahead"


def test_deltas_are_churn_neutral_and_a_period_to_date_is_not_compared() -> None:
    book = renewal_book()
    oct_, nov, dec = (book.compute(p)["all"] for p in ("2026-10", "2026-11", "2026-12"))
    closed = period_progress("2026-11", date(2026, 12, 7))
    healthy = compare("healthy_pct", nov, oct_, closed)
    assert (healthy.previous, healthy.diff, healthy.churn_neutral) == (66.67, 13.33, 66.67)
    assert healthy.verdict is None and healthy.note.startswith("moved by churn: 1 account left")
    risk = compare("at_risk_mrr", nov, oct_, closed)
    assert (risk.diff, risk.churn_neutral, risk.verdict) == (-500, 500, None)
    assert compare("logo_churn_rate", nov, oct_, closed).verdict is None  # October has no cohort: no value
    to_date = compare("healthy_pct", dec, nov, period_progress("2026-12", date(2026, 12, 7)))
    assert to_date.diff is None and to_date.verdict is None
    assert to_date.note == "to date (day 7 of 31): compared when the period closes"
    # a real improvement (nobody churned) is called better
    better = nov.model_copy(update={"period": "2026-12", "healthy_pct": 100.0, "churned_accounts": 0})
    assert (
        compare("healthy_pct", better, nov, period_progress("2026-12", date(2027, 1, 2))).verdict == "better"
    )


def test_periods_to_date() -> None:
    p = period_progress("2026-12", date(2026, 12, 7))
    assert (p.to_date, p.days_elapsed, p.days_total, p.months) == (True, 7, 31, round(7 / 31, 4))
    q = period_progress("2026-Q4", date(2026, 12, 7))
    assert (q.to_date, q.days_elapsed, q.days_total) == (True, 31 + 30 + 7, 92)
    assert period_progress("2026-11", date(2026, 12, 7)).model_dump()["to_date"] is False
    assert period_progress("2026-11", date(2026, 12, 7)).months == 1.0
    assert period_progress("2026", date(2026, 12, 7)).days_total == 365
    assert period_span("T12-2026-11") == ["2025-12", *(f"2026-{m:02d}" for m in range(1, 12))]
    assert last_closed_month(date(2026, 12, 7)) == "2026-11"
    assert last_closed_month(date(2027, 1, 1)) == "2026-12"
    with pytest.raises(ValueError):
        period_span("T12-2026-13")


def months_from_doc() -> list[PortfolioMetrics]:
    return [PortfolioMetrics(group="all", as_of=None, **m) for m in doc_block("leader-t12-fixture")]


def test_trailing_12_matches_the_docs() -> None:
    got = trailing_12(months_from_doc(), "2026-11").model_dump()
    for key, value in doc_block("leader-t12-expected").items():
        assert got[key] == pytest.approx(value), key
    assert trailing_12(months_from_doc(), "2026-09").months_counted == 1
    assert trailing_12([], "2026-11").nrr is None


def test_csm_table_and_load() -> None:
    ranges = {"enterprise": (5, 15), "mid_market": (15, 30), "smb": (30, 100)}
    assert csm_load({"enterprise": 10, "smb": 40}, ranges) == (1.07, "over")
    assert csm_load({"enterprise": 3}, ranges) == (0.2, "under")
    assert csm_load({"smb": 60}, ranges) == (0.6, "within")
    assert csm_load({"unknown": 60}, ranges) == (None, None)
    rows = csm_table(renewal_book().compute("2026-11"), ranges)
    assert [(r.csm, r.accounts, r.arr, r.accounts_by_segment) for r in rows] == [
        ("bo@example.com", 3, 32400.0, {"enterprise": 3}),
        ("ana@example.com", 2, 21600.0, {"smb": 2}),
    ]
    assert rows[1].guidance == "under" and rows[1].renewal_rate == pytest.approx(100 / 3, abs=0.01)


def test_unit_economics_match_the_docs() -> None:
    t12 = trailing_12(months_from_doc(), "2026-11")
    book = PortfolioMetrics(period="2026-11", group="all", as_of=None, ending_mrr=4500, paying_accounts=5)
    ue = unit_economics(book, t12, 1.0)
    assert (ue.arr, ue.arpa, ue.monthly_revenue_churn, ue.ltv) == (54000, 900, 2.0, 45000)
    assert unit_economics(book, t12, 0.8).ltv == 36000
    assert "ARPA x gross margin / monthly revenue churn" in ue.formula
    assert unit_economics(book, trailing_12([], "2026-11"), 1.0).ltv is None


def test_adoption_for_the_book_matches_the_docs() -> None:
    book = PortfolioBook()
    for row in doc_block("adoption-fixture"):
        snap = {
            "account_id": row["id"],
            "as_of": "2026-11-30T12:00:00Z",
            "account": {"segment": "smb", "csm_email": "ana@example.com"},
            "metrics": {
                "mrr": 100,
                "canceled": row.get("canceled", False),
                "adoption_rate": row["adoption"],
                "dau_mau": row["dau_mau"],
                "active_users_30d": row["users"],
                "ttfv_days": row["ttfv"],
                "first_response_hours_30d": row["frh"],
                "onboarded": row["onb"] is not None,
                "onboarding_days": row["onb"],
            },
        }
        book.apply(row["id"], point_from_snapshot(snap))
    got = book.compute("2026-11")["segment:smb"].model_dump()
    for key, value in doc_block("adoption-expected").items():
        assert got[key] == (value if isinstance(value, dict) else pytest.approx(value)), key
    targets = load_targets()
    ratings = {k: rate(got[k], targets.target(k)) for k in ("adoption", "dau_mau", "first_response_hours")}  # type: ignore[arg-type]
    assert ratings == {"adoption": "at_risk", "dau_mau": "on_track", "first_response_hours": "on_track"}


def cohort_snapshots() -> list[dict]:
    """The cohort example of docs/portfolio.md as cs.health snapshots (one per account and month)."""
    out = []
    for row in doc_block("cohort-fixture"):
        for month, (mrr, adoption, *canceled) in row["points"].items():
            out.append(
                {
                    "account_id": row["id"],
                    "as_of": f"{month}-{'07' if month == '2026-12' else '28'}T12:00:00Z",
                    "account": {"segment": row["seg"], "signed_up_at": f"{row['signup']}T09:00:00Z"},
                    "metrics": {
                        "mrr": mrr,
                        "canceled": bool(canceled),
                        "adoption_rate": adoption,
                        "onboarded": row["onboarded_from"] is not None and month >= row["onboarded_from"],
                    },
                }
            )
    return out


def test_cohorts_match_the_docs() -> None:
    book = PortfolioBook()
    for snap in cohort_snapshots():
        book.apply(snap["account_id"], point_from_snapshot(snap))
    expected = doc_block("cohort-expected")
    assert [c.model_dump() for c in cohorts(book.accounts)] == expected
    assert [c.model_dump() for c in cohorts(book.accounts, segment="smb")] == expected[:1]
    assert [c.model_dump() for c in cohorts(book.accounts, segment="enterprise")] == expected[1:]
    assert segments(book.accounts) == ["enterprise", "smb"]
    assert cohorts({}) == []
