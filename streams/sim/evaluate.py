"""``healthmon evaluate``: does a low health score come before churn? (Seed 000: "track accuracy".)

Each churner is scored as of N days before its cancellation; each account that stays is scored at one
of those same moments (assigned round-robin), so both groups are compared at matching times and the
comparison is not just "early in the run vs late in the run". From those scores:

- AUC: the chance a random churner scored below a random account that stayed (0.5 = no better than a coin);
- precision and recall of the red band (and of red + yellow, "at risk") as a churn prediction;
- lift of the bottom decile: the churn rate among the lowest-scored 10 % over the overall churn rate.

Pure: scores come in as per-account histories (from a run's snapshots, or from events run through the
production driver offline: :func:`score_events`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

import orjson
from pydantic import BaseModel

from streams.core.accuracy import Figures, Point, figures, first_scored
from streams.core.events import BaseEvent
from streams.core.state import DAY_S
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from streams.sim.simulate import GroundTruth


@dataclass
class History:
    """Per account: (as_of, score, band) in time order."""

    points: dict[str, list[tuple[int, float, str]]] = field(default_factory=dict)

    def add(self, account_id: str, as_of: int, score: float, band: str) -> None:
        self.points.setdefault(account_id, []).append((as_of, score, band))

    def finish(self) -> History:
        for pts in self.points.values():
            pts.sort(key=lambda p: p[0])
        return self

    def at(self, account_id: str, t: int) -> tuple[float, str] | None:
        """The latest score at or before ``t``."""
        pts = self.points.get(account_id)
        if not pts:
            return None
        i = bisect.bisect_right(pts, t, key=lambda p: p[0])
        return (pts[i - 1][1], pts[i - 1][2]) if i else None

    def add_snapshot(self, raw: bytes) -> None:
        snap = orjson.loads(raw)
        if snap.get("score") is None or "as_of" not in snap:
            return
        as_of = int(datetime.fromisoformat(snap["as_of"]).timestamp())
        self.add(snap["account_id"], as_of, float(snap["score"]), snap.get("band") or "")


def history_from_snapshots(lines: Iterable[bytes]) -> History:
    h = History()
    for raw in lines:
        raw = raw.strip()
        if raw:
            h.add_snapshot(raw)
    return h.finish()


class Scored(BaseModel):
    account_id: str
    persona: str
    churns: bool
    at: int
    score: float
    band: str


class Report(Figures):
    days_before: int
    accounts: int
    not_scored: int
    by_persona: dict[str, dict[str, float]]


def evaluate(truth: GroundTruth, history: History, days_before: int = 30) -> tuple[Report, list[Scored]]:
    churners = sorted((a for a in truth.accounts if a.churns and a.canceled_at), key=lambda a: a.account_id)
    stayers = sorted((a for a in truth.accounts if not a.churns), key=lambda a: a.account_id)
    moments = [int(a.canceled_at.timestamp()) - days_before * DAY_S for a in churners if a.canceled_at]
    if not moments:  # nobody churned: score everyone N days before the end
        moments = [int(truth.end.timestamp()) - days_before * DAY_S]
    plan = list(zip(churners, moments, strict=True))
    for i, a in enumerate(stayers):
        found = first_scored(partial(history.at, a.account_id), moments, i)
        plan.append((a, moments[i % len(moments)] if found is None else found[0]))
    scored: list[Scored] = []
    for a, t in plan:
        got = history.at(a.account_id, t)
        if got is not None:
            scored.append(
                Scored(
                    account_id=a.account_id,
                    persona=a.persona,
                    churns=a.churns,
                    at=t,
                    score=got[0],
                    band=got[1],
                )
            )

    fig = figures([Point(s.account_id, s.churns, s.score, s.band) for s in scored])
    by_persona: dict[str, dict[str, float]] = {}
    for s in scored:
        row = by_persona.setdefault(s.persona, {"accounts": 0, "churners": 0, "mean_score": 0.0})
        row["accounts"] += 1
        row["churners"] += int(s.churns)
        row["mean_score"] += s.score
    for row in by_persona.values():
        row["mean_score"] = round(row["mean_score"] / row["accounts"], 1)
    report = Report(
        **fig.model_dump(),
        days_before=days_before,
        accounts=len(truth.accounts),
        not_scored=len(plan) - len(scored),
        by_persona=dict(sorted(by_persona.items())),
    )
    return report, scored


def render(report: Report) -> str:
    def f(v: float | None, pct: bool = False) -> str:
        if v is None:
            return "n/a"
        return f"{v:.1%}" if pct else f"{v:.3f}"

    lines = [
        f"score as of {report.days_before} days before cancellation "
        f"({report.scored} of {report.accounts} accounts scored, {report.churners} churners)",
        f"  AUC (churners score lower)        {f(report.auc)}",
        f"  red band       precision / recall {f(report.red_precision, True)} / {f(report.red_recall, True)}",
        f"  red or yellow  precision / recall {f(report.at_risk_precision, True)} / {f(report.at_risk_recall, True)}",
        f"  bottom decile  churn rate / lift  {f(report.bottom_decile_churn_rate, True)} / "
        + (f"{report.bottom_decile_lift:.2f}x" if report.bottom_decile_lift is not None else "n/a")
        + f"  (base rate {f(report.base_churn_rate, True)})",
        "",
        f"  {'persona':<26}{'accounts':>9}{'churners':>9}{'mean score':>12}",
    ]
    for persona, row in report.by_persona.items():
        lines.append(
            f"  {persona:<26}{row['accounts']:>9.0f}{row['churners']:>9.0f}{row['mean_score']:>12.1f}"
        )
    return "\n".join(lines)


def score_events(
    events: Iterable[BaseEvent], engine: Engine, until: int | None = None, partitions: int = 1
) -> History:
    """Score an event stream without Kafka through the production driver (:func:`run_offline`): every
    snapshot it publishes goes into the history, so offline figures are what the worker would show,
    portfolio measures included. ``until``: run event time on to here (s; e.g. the simulation's end).
    ``partitions``: the worker's input partitions (each ranks its own accounts)."""
    history = History()

    def collect(out: Output) -> None:
        for name, _, value, _ in out.records:
            if name == "health":
                history.add_snapshot(value)

    until_ms = None if until is None else until * 1000
    run_offline(events, engine, until_ms=until_ms, on_output=collect, partitions=partitions)
    return history.finish()


def first_red(history: History) -> dict[str, int]:
    """Each account's first moment in the red band."""
    out: dict[str, int] = {}
    for account, pts in history.points.items():
        for at, _, band in pts:
            if band == "red":
                out[account] = at
                break
    return out


def red_differences(old: History, new: History) -> dict[str, list[tuple[str, int | None, int | None]]]:
    """What would fire differently under a new scorecard: accounts whose red band starts only under one
    of them, earlier or later. Each entry: (account, first red under old, first red under new)."""
    a, b = first_red(old), first_red(new)
    out: dict[str, list[tuple[str, int | None, int | None]]] = {
        "only_new": [],
        "only_old": [],
        "earlier": [],
        "later": [],
    }
    for acc in sorted(set(a) | set(b)):
        ta, tb = a.get(acc), b.get(acc)
        if ta is None:
            out["only_new"].append((acc, None, tb))
        elif tb is None:
            out["only_old"].append((acc, ta, None))
        elif tb < ta:
            out["earlier"].append((acc, ta, tb))
        elif tb > ta:
            out["later"].append((acc, ta, tb))
    return out


def render_side_by_side(reports: dict[str, Report]) -> str:
    def f(v: float | None, pct: bool = False) -> str:
        return "n/a" if v is None else (f"{v:.1%}" if pct else f"{v:.3f}")

    names = list(reports)
    first = reports[names[0]]
    rows = [
        ("scored / churners", lambda r: f"{r.scored} / {r.churners}"),
        ("AUC", lambda r: f(r.auc)),
        ("red precision", lambda r: f(r.red_precision, True)),
        ("red recall", lambda r: f(r.red_recall, True)),
        ("red+yellow precision", lambda r: f(r.at_risk_precision, True)),
        ("red+yellow recall", lambda r: f(r.at_risk_recall, True)),
        (
            "bottom-decile lift",
            lambda r: "n/a" if r.bottom_decile_lift is None else f"{r.bottom_decile_lift:.2f}x",
        ),
    ]
    lines = [
        f"score as of {first.days_before} days before cancellation",
        "| | " + " | ".join(names) + " |",
        "|---" * (len(names) + 1) + "|",
    ]
    for label, fn in rows:
        lines.append(f"| {label} | " + " | ".join(fn(reports[n]) for n in names) + " |")
    return "\n".join(lines)
