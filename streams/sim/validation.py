"""Validation on observation points: healthmon's scores vs a peer's regression, same moments, same label.

Observations follow the method of "Fighting Churn with Data": every ``every_days`` days, each account that
is live (signed up at least ``min_age_days`` before, not cancelled) is observed; the label is "cancels
within the next ``horizon_days`` days". Observations too close to the end of the data to know their label
are left out. At each observation the history up to that moment is folded (no peeking) and:

- healthmon's metrics are computed (the portfolio measures from every live account at that moment) and
  scored with a scorecard;
- the peer's features are the 28-day counts of each event type (``feature_used`` by feature, with the
  converter's ``count`` when the event has one), log(1 + x), z-scored, fed to a logistic regression
  (scikit-learn; a dev/validation dependency).

AUCs are over all observations. The peer and the calibrated score are trained out of fold: grouped
K-fold by account, so no account is both trained on and tested on.
"""

from __future__ import annotations

import gzip
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER, BaseEvent
from streams.core.metrics import compute_metrics, portfolio_at, ratio, with_portfolio
from streams.core.scoring import ScoringConfig
from streams.core.state import DAY_S, AccountState
from streams.sim.calibrate import Observation, calibrate, fit, observation_auc, score_observations

PEER_WINDOW_DAYS = 28


def read_events(path: Path | str) -> Iterator[BaseEvent]:
    """Contract v1 events from a JSONL file (``.gz`` too); a bad line fails naming its line number."""
    p = Path(path)
    opener: Any = gzip.open if p.suffix == ".gz" else open
    with opener(p, "rb") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield EVENT_ADAPTER.validate_python(orjson.loads(line))  # type: ignore[misc]
            except Exception as exc:
                raise ValueError(f"{p}:{n}: {exc}") from None


@dataclass
class ObservationSet:
    observations: list[Observation]
    start: int
    end: int
    accounts: int
    cancellations: int


def observe(
    events: Iterable[BaseEvent],
    config: ScoringConfig,
    *,
    every_days: int = 7,
    min_age_days: int = 14,
    horizon_days: int = 30,
    end: int | None = None,
    peer_features: bool = True,
) -> ObservationSet:
    """Fold ``events`` (any order; sorted here) and take observations on a fixed grid of days."""
    evs = sorted(events, key=lambda e: e.occurred_at)
    if not evs:
        return ObservationSet([], 0, 0, 0, 0)
    first = int(evs[0].occurred_at.timestamp())
    last = int(evs[-1].occurred_at.timestamp()) if end is None else end
    canceled: dict[str, int] = {}
    for e in evs:
        if e.type == "subscription_canceled":  # type: ignore[attr-defined]
            canceled.setdefault(e.account_id, int(e.occurred_at.timestamp()))
    key_features = frozenset(config.metrics.key_features)
    states: dict[str, AccountState] = {}
    counts: dict[str, dict[int, Counter[str]]] = {}
    out: list[Observation] = []
    day0 = first // DAY_S + min_age_days
    grid = list(range(day0, (last - horizon_days * DAY_S) // DAY_S + 1, every_days))
    i = 0
    for gday in grid:
        as_of = gday * DAY_S - 1  # the end of the day before: everything before midnight is known
        while i < len(evs) and int(evs[i].occurred_at.timestamp()) <= as_of:
            e = evs[i]
            i += 1
            st = states.get(e.account_id)
            if st is None:
                st = states[e.account_id] = AccountState(account_id=e.account_id)
            apply_event(st, e, key_features=key_features)
            if peer_features and e.type in ("login", "feature_used"):  # type: ignore[attr-defined]
                kind = "login" if e.type == "login" else f"use:{e.feature}"  # type: ignore[attr-defined]
                n = (e.model_extra or {}).get("count", 1)
                day = int(e.occurred_at.timestamp()) // DAY_S
                counts.setdefault(e.account_id, {}).setdefault(day, Counter())[kind] += int(n)
        live = [
            st
            for st in states.values()
            if st.profile is not None
            and (st.account_id not in canceled or canceled[st.account_id] > as_of)
            and st.profile.signed_up_at <= as_of
        ]
        # The same builder as the stream engine's daily portfolio, here at each observation.
        portfolio, raw = portfolio_at(live, as_of, config.metrics)
        for st in live:
            assert st.profile is not None
            if st.profile.signed_up_at > as_of - min_age_days * DAY_S:
                continue
            gone = canceled.get(st.account_id)
            extra: dict[str, float] = {}
            if peer_features:
                today = as_of // DAY_S
                acc: Counter[str] = Counter()
                for d, c in counts.get(st.account_id, {}).items():
                    if 0 <= today - d < PEER_WINDOW_DAYS:
                        acc.update(c)
                extra = {k: float(v) for k, v in acc.items()}
            out.append(
                Observation(
                    account_id=st.account_id,
                    at=as_of,
                    churns=gone is not None and gone <= as_of + horizon_days * DAY_S,
                    metrics=with_portfolio(
                        raw.get(st.account_id) or compute_metrics(st, as_of, config.metrics), portfolio, as_of
                    ),
                    segment=st.profile.segment,
                    extra=extra,
                )
            )
    return ObservationSet(out, first, last, len(states), len(canceled))


# --- the peer's method ----------------------------------------------------------------------------


def peer_matrix(obs: Sequence[Observation]) -> tuple[Any, list[str]]:
    import numpy as np

    names = sorted({k for o in obs for k in o.extra})
    x = np.array([[o.extra.get(k, 0.0) for k in names] for o in obs], dtype=float)
    return np.log1p(x), names


def folds(obs: Sequence[Observation], k: int = 5, seed: int = 0) -> list[int]:
    """Grouped K-fold by account: the fold of each observation (sklearn's GroupKFold)."""
    import numpy as np
    from sklearn.model_selection import GroupKFold

    groups = np.array([o.account_id for o in obs])
    fold = [0] * len(obs)
    for f, (_, test) in enumerate(GroupKFold(n_splits=k).split(np.zeros(len(obs)), groups=groups)):
        for j in test:
            fold[j] = f
    return fold


def peer_scores(obs: Sequence[Observation], fold: Sequence[int]) -> list[float | None]:
    """Out-of-fold P(stay) from log + z-scored 28-day counts and a logistic regression (higher = healthier)."""
    import numpy as np
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, _ = peer_matrix(obs)
    y = np.array([o.churns for o in obs], dtype=int)
    out: list[float | None] = [None] * len(obs)
    for f in sorted(set(fold)):
        tr = np.array([j for j, g in enumerate(fold) if g != f])
        te = [j for j, g in enumerate(fold) if g == f]
        if len(set(y[tr])) < 2:
            continue
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
        model.fit(x[tr], y[tr])
        p = model.predict_proba(x[te])[:, 1]
        for j, pj in zip(te, p, strict=True):
            out[j] = float(1 - pj)
    return out


def calibrated_scores(
    obs: Sequence[Observation], fold: Sequence[int], base: ScoringConfig
) -> list[float | None]:
    """Out-of-fold scores from a scorecard calibrated on the other folds."""
    out: list[float | None] = [None] * len(obs)
    for f in sorted(set(fold)):
        train = [o for o, g in zip(obs, fold, strict=True) if g != f]
        test_idx = [j for j, g in enumerate(fold) if g == f]
        if all(o.churns for o in train) or not any(o.churns for o in train):
            continue  # nothing to learn from in this fold: its observations stay unscored
        config, _, _ = fit(train, base)
        for j, s in zip(test_idx, score_observations([obs[j] for j in test_idx], config), strict=True):
            out[j] = s
    return out


@dataclass
class Comparison:
    observations: int
    churn_observations: int
    accounts: int
    rows: list[tuple[str, float | None, float | None, float | None]]  # name, AUC, red precision, red recall
    calibration: Any = None


def band_pr(
    obs: Sequence[Observation], scores: Sequence[float | None], red_below: float
) -> tuple[float | None, float | None]:
    flagged = [o for o, s in zip(obs, scores, strict=True) if s is not None and s < red_below]
    hits = sum(o.churns for o in flagged)
    return ratio(hits, len(flagged)), ratio(hits, sum(o.churns for o in obs))


def compare(
    obs: Sequence[Observation],
    default: ScoringConfig,
    others: dict[str, ScoringConfig] | None = None,
    *,
    k: int = 5,
    peer: bool = True,
    calibrated: bool = True,
) -> Comparison:
    rows: list[tuple[str, float | None, float | None, float | None]] = []
    fold = folds(obs, k) if (peer or calibrated) else []
    if peer:
        rows.append(
            (
                "peer: log + z-scored 28-day counts, logistic regression (grouped CV)",
                observation_auc(obs, peer_scores(obs, fold)),
                None,
                None,
            )
        )
    cards = {"healthmon default scorecard": default, **(others or {})}
    for name, card in cards.items():
        s = score_observations(obs, card)
        p, r = band_pr(obs, s, card.default.bands.red_below)
        rows.append((name, observation_auc(obs, s), p, r))
    calib = None
    if calibrated:
        s = calibrated_scores(obs, fold, default)
        rows.append(
            (
                "healthmon calibrated scorecard (fit out of fold, grouped CV)",
                observation_auc(obs, s),
                None,
                None,
            )
        )
        try:
            _, calib = calibrate(obs, default)
        except ValueError:  # e.g. no cancellation before the time split
            calib = None
    return Comparison(
        observations=len(obs),
        churn_observations=sum(o.churns for o in obs),
        accounts=len({o.account_id for o in obs}),
        rows=rows,
        calibration=calib,
    )


def render(c: Comparison) -> str:
    def f(v: float | None, pct: bool = False) -> str:
        return "" if v is None else (f"{v:.1%}" if pct else f"{v:.3f}")

    lines = [
        f"{c.observations} observations of {c.accounts} accounts, {c.churn_observations} cancel within 30 days",
        "",
        "| predictor | AUC | red precision | red recall |",
        "|---|---|---|---|",
    ]
    for name, a, p, r in c.rows:
        lines.append(f"| {name} | {f(a)} | {f(p, True)} | {f(r, True)} |")
    if c.calibration is not None:
        cal = c.calibration
        lines += [
            "",
            f"calibration, time split: train AUC {f(cal.train_auc)} ({cal.train_observations} obs), "
            f"test AUC {f(cal.test_auc)} ({cal.test_observations} obs)"
            + (f"\nWARNING: {cal.overfit_warning}" if cal.overfit_warning else ""),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    import argparse

    from streams.core.scoring import load_scoring

    p = argparse.ArgumentParser(description="healthmon scores vs the peer's regression on observation points")
    p.add_argument("events", type=Path)
    p.add_argument("--scorecard", type=Path, action="append", default=[])
    p.add_argument("--every-days", type=int, default=7)
    a = p.parse_args(argv)
    default = load_scoring()
    obs = observe(read_events(a.events), default, every_days=a.every_days)
    others = {f"scorecard {s}": load_scoring(s) for s in a.scorecard}
    print(render(compare(obs.observations, default, others)))


if __name__ == "__main__":
    main()
