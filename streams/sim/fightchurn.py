"""A customer base from a simulator nobody here wrote: fight-churn's ChurnSim, as contract v1 events.

``fightchurn`` (PyPI, the code of the book "Fighting Churn with Data") simulates subscription products
(``crm5``: a CRM sold on user-count plans, with add-ons). Its own runner writes to PostgreSQL; here its
simulation classes run in process and the database writes are replaced by capturing each customer, so no
database is needed. ``fightchurn`` is an optional dependency (``pip install -e '.[validation]'``); the
conversion itself is a pure function of the captured customers.

The mapping (docs/validation.md says why):

- one ``account`` event per customer at its start (segment from its first plan's MRR);
- ``subscription`` at each subscription period's start: MRR = base plan + add-ons after discount, seats =
  the plan's user limit, renewal = the period's end; an ``invoice_paid`` for it (ChurnSim has no failed
  payments);
- ``subscription_canceled`` at the end of the last period when it ends before the simulation does (how
  ChurnSim churns: a period that is not renewed);
- usage: a ``login`` for each (user, day) with any action, at the user's first action of the day, and one
  ``feature_used`` per (day, action type) -- the action type is the feature -- at its first occurrence,
  with the day's number of such actions in an extra ``count`` field. healthmon's metrics count days and
  users, never ``count``; the peer's method (``streams.validation``) uses it, so the peer sees more than
  healthmon does.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import Path
from typing import Any

import orjson


@dataclass
class SimCustomer:
    """What the converter needs of one ChurnSim customer (plain Python types, picklable)."""

    id: int
    channel: str
    start_date: date
    #: (plan, start, end, mrr, quantity, units, bill_period, discount)
    subscriptions: list[tuple[str, date, date, float, float | None, str | None, int, float]]
    #: (time, behavior index, user index, value)
    events: list[tuple[datetime, int, int, float | None]]


@dataclass
class SimResult:
    model: str
    start: date
    end: date
    behaviors: list[str]
    customers: list[SimCustomer] = field(default_factory=list)


def simulate(
    model: str = "crm5",
    customers: int = 40,
    start: str = "2023-01-01",
    end: str = "2023-07-01",
    seed: int = 7,
    growth_rate: float | None = None,
) -> SimResult:
    """Run ChurnSim in process (needs the ``fightchurn`` package) and capture its customers."""
    import numpy as np
    from fightchurn.churnsim import churnsim as cs
    from omegaconf import OmegaConf

    conf_dir = Path(cs.__file__).with_name("conf")
    cfg: Any = OmegaConf.merge(
        OmegaConf.load(conf_dir / "default.yaml"), OmegaConf.load(conf_dir / f"{model}.yaml")
    )
    cfg.pop("defaults", None)
    cfg.init_customers = customers
    cfg.start_date, cfg.end_date = start, end
    cfg.random_seed = seed
    cfg.n_parallel = 1
    if growth_rate is not None:
        cfg.growth_rate = growth_rate
    random.seed(seed)
    np.random.seed(seed)
    cs.Customer.date_multipliers.clear()  # a class-level cache: a second run in one process must not reuse it
    out = tempfile.mkdtemp(prefix="churnsim-")
    os.environ["CHURN_OUT_DIR"] = out  # the simulator copies its plan files there
    captured: list[SimCustomer] = []

    class Capturing(cs.ChurnSimulation):  # type: ignore[misc,name-defined]
        def first_sim_setup(self, force: bool) -> None:
            self.remove_tmp_files()

        def add_customer_to_database(self, customer: Any) -> None:
            pass

        def sim_rate_debug_query(self) -> None:
            pass

        def customer_events_subs_to_database(self, c: Any) -> None:
            captured.append(
                SimCustomer(
                    id=int(c.id),
                    channel=str(c.channel),
                    start_date=c.start_date,
                    subscriptions=[
                        (
                            str(s[0]),
                            s[1],
                            s[2],
                            float(s[3]),
                            None if s[4] is None else float(s[4]),
                            None if s[5] is None else str(s[5]),
                            int(s[6]),
                            float(s[7]),
                        )
                        for s in c.subscriptions
                    ],
                    events=[
                        (e[0], int(e[1]), int(e[2]), None if e[3] is None else float(e[3])) for e in c.events
                    ],
                )
            )

    sim = Capturing(cfg)
    sim.run_simulation(force=True)
    behaviors = [str(b) for b in sim.model_list[0].behave_names]
    captured.sort(key=lambda c: c.id)
    return SimResult(
        model=model, start=sim.start_date, end=sim.end_date, behaviors=behaviors, customers=captured
    )


# --- conversion (pure) ---------------------------------------------------------------------------


def _ts(d: date | datetime) -> datetime:
    if isinstance(d, datetime):
        return d.replace(tzinfo=UTC)
    return datetime.combine(d, time(0, 0), UTC)


def _iso(d: date | datetime) -> str:
    return _ts(d).isoformat().replace("+00:00", "Z")


def _eid(*parts: object) -> str:
    return hashlib.blake2b("|".join(map(str, parts)).encode(), digest_size=10).hexdigest()


def _segment(mrr: float) -> str:
    return "smb" if mrr < 500 else "mid_market" if mrr < 2000 else "enterprise"


def churn_date(c: SimCustomer, end: date) -> date | None:
    """The end of the last subscription period, when that is before the simulation's end."""
    if not c.subscriptions:
        return None
    last = max(s[2] for s in c.subscriptions)
    return last if last < end else None


def convert(sim: SimResult) -> Iterator[dict[str, Any]]:
    """Contract v1 events (as dicts) of every customer, in time order per account."""
    for c in sim.customers:
        yield from _convert_one(c, sim)


def _convert_one(c: SimCustomer, sim: SimResult) -> Iterator[dict[str, Any]]:
    acc = f"fc-{c.id:05d}"
    base = {"account_id": acc}
    periods: dict[date, list[tuple[str, date, date, float, float | None, str | None, int, float]]] = {}
    for s in c.subscriptions:
        periods.setdefault(s[1], []).append(s)
    first_mrr = sum(s[3] * (1 - s[7]) for s in periods[min(periods)]) if periods else 0.0
    out: list[tuple[datetime, int, dict[str, Any]]] = []
    start = _ts(c.start_date)
    out.append(
        (
            start,
            0,
            {
                **base,
                "event_id": _eid(acc, "account"),
                "type": "account",
                "occurred_at": _iso(start),
                "name": f"ChurnSim {sim.model} customer {c.id}",
                "segment": _segment(first_mrr),
                "csm_name": "Unassigned",
                "csm_email": "cs@example.com",
                "signed_up_at": _iso(start),
                "channel": c.channel,
            },
        )
    )
    for day, subs in sorted(periods.items()):
        main = subs[0]
        mrr = round(sum(s[3] * (1 - s[7]) for s in subs), 2)
        seats = int(main[4]) if main[5] == "users" and main[4] is not None else 1
        t = _ts(day)
        out.append(
            (
                t,
                1,
                {
                    **base,
                    "event_id": _eid(acc, "sub", day),
                    "type": "subscription",
                    "occurred_at": _iso(t),
                    "mrr": f"{mrr:.2f}",
                    "plan": main[0],
                    "seats": seats,
                    "renewal_date": main[2].isoformat(),
                },
            )
        )
        out.append(
            (
                t,
                2,
                {
                    **base,
                    "event_id": _eid(acc, "inv", day),
                    "type": "invoice_paid",
                    "occurred_at": _iso(t),
                    "invoice_id": f"{acc}-{day.isoformat()}",
                    "amount": f"{mrr * main[6]:.2f}",
                },
            )
        )
    gone = churn_date(c, sim.end)
    if gone is not None:
        t = _ts(gone)
        out.append(
            (
                t,
                9,
                {
                    **base,
                    "event_id": _eid(acc, "cancel"),
                    "type": "subscription_canceled",
                    "occurred_at": _iso(t),
                    "reason": "not renewed",
                },
            )
        )
    logins: dict[tuple[date, int], datetime] = {}
    uses: dict[tuple[date, int], list[Any]] = {}
    for when, kind, user, _ in c.events:
        d = when.date()
        if (d, user) not in logins or when < logins[(d, user)]:
            logins[(d, user)] = when
        u = uses.get((d, kind))
        if u is None:
            uses[(d, kind)] = [when, user, 1]
        else:
            u[2] += 1
            if when < u[0]:
                u[0], u[1] = when, user
    for (d, user), when in logins.items():
        t = max(_ts(when), start)
        out.append(
            (
                t,
                3,
                {
                    **base,
                    "event_id": _eid(acc, "login", d, user),
                    "type": "login",
                    "occurred_at": _iso(t),
                    "user_id": f"u{user}",
                },
            )
        )
    for (d, kind), (when, user, n) in uses.items():
        t = max(_ts(when), start)
        out.append(
            (
                t,
                4,
                {
                    **base,
                    "event_id": _eid(acc, "use", d, kind),
                    "type": "feature_used",
                    "occurred_at": _iso(t),
                    "user_id": f"u{user}",
                    "feature": sim.behaviors[kind],
                    "count": n,
                },
            )
        )
    out.sort(key=lambda r: (r[0], r[1], r[2]["event_id"]))
    for _, rank, e in out:
        e["_rank"] = rank
        yield e


def write_jsonl(sim: SimResult, path: Path) -> int:
    """All events of all accounts, merged into one time order (as a replay would deliver them)."""
    events = sorted(convert(sim), key=lambda e: (e["occurred_at"], e["account_id"], e.pop("_rank")))
    opener: Any = open
    if path.suffix == ".gz":
        import gzip

        opener = gzip.open
    with opener(path, "wb") as f:
        for e in events:
            f.write(orjson.dumps(e) + b"\n")
    return len(events)


def truth(sim: SimResult, seed: int) -> dict[str, Any]:
    """The ground truth ``healthmon evaluate`` reads (``streams.sim.simulate.GroundTruth`` as JSON):
    every customer, whether and when it cancels. ChurnSim has no personas: "churnsim"."""
    accounts = []
    for c in sim.customers:
        gone = churn_date(c, sim.end)
        first = min((s[1] for s in c.subscriptions), default=None)
        mrr = sum(s[3] * (1 - s[7]) for s in c.subscriptions if s[1] == first)
        main = next((s for s in c.subscriptions if s[1] == first), None)
        seats = int(main[4]) if main is not None and main[5] == "users" and main[4] is not None else 1
        accounts.append(
            {
                "account_id": f"fc-{c.id:05d}",
                "name": f"ChurnSim {sim.model} customer {c.id}",
                "segment": _segment(mrr),
                "persona": "churnsim",
                "csm_name": "Unassigned",
                "csm_email": "cs@example.com",
                "seats": seats,
                "mrr": round(mrr, 2),
                "churns": gone is not None,
                "canceled_at": None if gone is None else _iso(_ts(gone)),
            }
        )
    return {"seed": seed, "start": _iso(_ts(sim.start)), "end": _iso(_ts(sim.end)), "accounts": accounts}


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(description="ChurnSim customer base as healthmon contract v1 JSONL")
    p.add_argument("--model", default="crm5")
    p.add_argument("--customers", type=int, default=40, help="customers at the start (more join monthly)")
    p.add_argument("--start", default="2023-01-01")
    p.add_argument("--end", default="2023-07-01")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--growth-rate", type=float, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--truth", type=Path, help="also write the ground truth for `healthmon evaluate` here")
    a = p.parse_args(argv)
    sim = simulate(a.model, a.customers, a.start, a.end, a.seed, a.growth_rate)
    n = write_jsonl(sim, a.out)
    if a.truth is not None:
        a.truth.write_bytes(orjson.dumps(truth(sim, a.seed), option=orjson.OPT_INDENT_2))
    churners = sum(1 for c in sim.customers if churn_date(c, sim.end) is not None)
    print(f"{len(sim.customers)} accounts, {churners} cancel, {n} events -> {a.out}")


if __name__ == "__main__":
    main()
