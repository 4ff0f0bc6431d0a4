"""The alert budget of a rule pack on the simulator: how much a CSM is asked to read, and what it buys.

``python -m streams.sim.budget --accounts 100 --days 60 --seed 7 [--rules DIR] [--compare DIR]``

Offline and deterministic: the simulator's events are folded in event-time order and every account is
evaluated at each of its events and at each UTC midnight (as the worker's timers do). Reported:

- firings per account-month (firing events / (accounts x days / 30));
- notifications per CSM per week: each CSM's digest (group_by csm) goes out when something new fires
  or a notified alert resolves, at most once per ``group_interval`` (5 min) after ``group_wait``
  (30 s), the default routing's timers in event time; repeats (``repeat_interval``) are not counted;
- churner coverage: the share of accounts that cancel (simulator ground truth) which got at least one
  alert at least 14 days before the cancellation (``account_canceled`` does not count).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from rules.engine import load_rules
from rules.model import AlertEvent
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import load_scoring
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator

DAY_S = 86400
GROUP_WAIT, GROUP_INTERVAL = 30, 300


@dataclass
class Budget:
    rules: str
    accounts: int
    days: int
    firings: int
    per_account_month: float
    notifications_per_csm_week: float
    worst_csm_week: float
    churners: int
    churners_warned_14d: int

    def render(self) -> str:
        share = self.churners_warned_14d / self.churners if self.churners else 0.0
        return (
            f"{self.rules}: {self.firings} firings = {self.per_account_month:.2f} per account-month; "
            f"{self.notifications_per_csm_week:.1f} notifications per CSM per week (busiest CSM "
            f"{self.worst_csm_week:.1f}); churners alerted >= 14 d before cancelling: "
            f"{self.churners_warned_14d}/{self.churners} ({share:.0%})"
        )


def alerts_for(sim: Simulator, rules_path: Path | None) -> list[AlertEvent]:
    """The alerts the worker would fire on the simulated history: the production partition driver,
    run offline (streams/engine/driver.py)."""
    engine = Engine(load_scoring(None), load_rules(rules_path))
    out: list[AlertEvent] = []

    def collect(o: Output) -> None:
        out.extend(AlertEvent.model_validate_json(v) for name, _, v, _ in o.records if name == "alerts")

    events = [EVENT_ADAPTER.validate_python(raw) for raw in sim.events()]
    run_offline(events, engine, on_output=collect)
    return out


def notifications(alerts: list[AlertEvent]) -> dict[str, int]:
    """Per CSM, how many digests the default timers send (event time), repeats left out."""
    per_csm: dict[str, list[AlertEvent]] = defaultdict(list)
    for a in alerts:
        per_csm[a.account.csm_email or ""].append(a)
    counts: dict[str, int] = {}
    for csm, items in per_csm.items():
        items.sort(key=lambda a: (a.ends_at or a.starts_at).timestamp())
        sent, notified, pending, last, first_pending = 0, set(), False, None, None
        for a in items:
            t = (a.ends_at or a.starts_at).timestamp()
            worthy = a.status == "firing" or a.alert_id in notified
            if not worthy:
                continue
            due = (first_pending or t) + GROUP_WAIT if last is None else last + GROUP_INTERVAL
            if pending and t >= due:  # the pending digest went out before this alert arrived
                sent, last, pending, first_pending = sent + 1, due, False, None
            if a.status == "firing":
                notified.add(a.alert_id)
            pending = True
            first_pending = first_pending or t
        sent += pending
        counts[csm] = sent
    return counts


def budget(sim: Simulator, rules_path: Path | None, days: int) -> Budget:
    alerts = alerts_for(sim, rules_path)
    firing = [a for a in alerts if a.status == "firing"]
    truth = sim.truth()
    n = len(truth.accounts)
    weeks = days / 7
    per_csm = notifications(alerts)
    churners = [a for a in truth.accounts if a.canceled_at is not None]
    warned = 0
    for c in churners:
        assert c.canceled_at is not None
        limit = c.canceled_at.timestamp() - 14 * DAY_S
        if any(
            a.account_id == c.account_id
            and a.rule_id != "account_canceled"
            and a.starts_at.timestamp() <= limit
            for a in firing
        ):
            warned += 1
    csms = {a.csm_email for a in truth.accounts}
    return Budget(
        rules=str(rules_path or "rules/default"),
        accounts=n,
        days=days,
        firings=len(firing),
        per_account_month=len(firing) / (n * days / 30),
        notifications_per_csm_week=sum(per_csm.values()) / max(1, len(csms)) / weeks,
        worst_csm_week=max(per_csm.values(), default=0) / weeks,
        churners=len(churners),
        churners_warned_14d=warned,
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--accounts", type=int, default=100)
    p.add_argument("--days", type=int, default=60)
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--end", default="2026-06-01", help="simulation end date (UTC), for determinism")
    p.add_argument("--rules", type=Path, default=None, help="rule file or folder (default: the shipped pack)")
    p.add_argument("--compare", type=Path, action="append", default=[], help="another pack to compare")
    args = p.parse_args()
    end = datetime.fromisoformat(args.end).replace(tzinfo=UTC)
    for path in [args.rules, *args.compare]:
        sim = Simulator(args.accounts, args.days, args.seed, end)
        print(budget(sim, path, args.days).render())


if __name__ == "__main__":
    main()
