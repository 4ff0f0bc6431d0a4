"""The simulator renews subscriptions as docs/portfolio.md defines "renewed" (a subscription event moving
the renewal date forward, the subscription paid), at a rate that follows the account's health."""

from __future__ import annotations

from datetime import UTC, date, datetime

from streams.core.events import EVENT_ADAPTER
from streams.sim.simulate import Simulator

END = datetime(2026, 12, 7, 12, tzinfo=UTC)


def run(seed: int) -> tuple[Simulator, list[dict]]:
    sim = Simulator(200, 150, seed, END)
    return sim, list(sim.events())


def test_renewals_move_the_date_a_year_on_at_a_rate_that_follows_health() -> None:
    sim, events = run(11)
    first = {a.truth.account_id: a.renewal for a in sim.accounts}
    truth = {a.truth.account_id: a.truth for a in sim.accounts}
    renewals: dict[str, list[dict]] = {}
    unpaid: dict[str, set[str]] = {}
    for e in events:
        aid = e["account_id"]
        if e["type"] == "payment_failed":
            unpaid.setdefault(aid, set()).add(e["invoice_id"])
        elif e["type"] == "invoice_paid":
            unpaid.get(aid, set()).discard(e["invoice_id"])
        elif e["type"] == "subscription" and "-renewal-" in e["event_id"]:
            assert not unpaid.get(aid), "a renewal with an unpaid invoice is not 'renewed'"
            EVENT_ADAPTER.validate_python(e)  # the contract's subscription event
            renewals.setdefault(aid, []).append(e)
    due = [aid for aid, d in first.items() if d <= END.date()]
    assert len(due) >= 40
    for aid, evs in renewals.items():
        (e,) = evs  # one renewal a year: 150 days hold at most one
        old, new = first[aid], date.fromisoformat(e["renewal_date"])
        assert new.year == old.year + 1 and (new.month, new.day) == (old.month, old.day)
        assert e["occurred_at"][:10] >= old.isoformat()  # on the renewal date or later, never before
        assert truth[aid].canceled_at is None or e["occurred_at"] < truth[aid].canceled_at.isoformat()
    staying = [aid for aid in due if not truth[aid].churns]
    leaving = [aid for aid in due if truth[aid].churns]
    rate_staying = sum(aid in renewals for aid in staying) / len(staying)
    rate_leaving = sum(aid in renewals for aid in leaving) / len(leaving)
    assert rate_staying > 0.85  # healthy accounts renew (the seeds: ~85-90 % renewal rates)
    assert rate_leaving < 0.5 < rate_staying
    # deterministic for a seed: the renewals draw from their own random stream, set from the seed
    again = Simulator(200, 150, 11, END)
    assert [a.renew_rng.random() for a in again.accounts] == [
        a.renew_rng.random() for a in Simulator(200, 150, 11, END).accounts
    ]
