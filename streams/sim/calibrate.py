"""``healthmon calibrate``: component weights and measure thresholds learned from outcomes.

The stream carries its own outcomes (``subscription_canceled``). Scored observations -- an account's
metrics at a moment, and whether it cancelled within the next ``horizon`` days -- are the training data:

1. each candidate metric with enough data gets a direction (does a higher value go with staying?) and a
   ramp from its ``bad`` quantile to its ``good`` quantile (5 % and 95 % of the training values), kept only
   when its univariate AUC is at least ``min_signal`` away from a coin;
2. measure weights are a logistic regression of "stays" on the measures' 0-1 ramp values with
   non-negative coefficients (projected gradient descent, L2), so the score stays a weighted mean of
   ramps -- the scorecard YAML says it all and scoring stays a pure function of it;
3. bands: red below the highest score whose red precision on the training data is still at least
   ``red_precision`` (most recall at that precision), yellow below the same at half that precision.

Validation is a time split: fit on observations before the split, report AUC on both sides. A train AUC
well above the test AUC (``overfit_gap``) is reported as a warning, never silently.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydantic import BaseModel

from streams.core.accuracy import auc
from streams.core.metrics import AccountMetrics
from streams.core.scoring import (
    Bands,
    Component,
    Measure,
    ScoreCard,
    ScoringConfig,
    information_check,
    score_account,
)

#: Metrics a calibration may use, and the component each belongs to.
CANDIDATES: dict[str, str] = {
    "logins_7d": "usage",
    "logins_30d": "usage",
    "active_users_7d": "usage",
    "active_users_30d": "usage",
    "dau_mau": "usage",
    "adoption_rate": "usage",
    "adoption_rate_7d": "usage",
    "feature_breadth": "usage",
    "avg_session_minutes_30d": "usage",
    "usage_trend_7d_pct": "usage",
    "usage_trend_30d_pct": "usage",
    "days_since_last_login": "usage",
    "tenure_days": "usage",
    "active_days_30d": "usage",
    "active_user_days_30d": "usage",
    "usage_vs_baseline_pct": "usage",
    "features_used_30d": "usage",
    "feature_breadth_own": "usage",
    "feature_breadth_catalog": "usage",
    "usage_percentile": "usage",
    "logins_percentile": "usage",
    "breadth_percentile": "usage",
    "tickets_opened_30d": "support",
    "open_urgent_tickets": "support",
    "first_response_hours_30d": "support",
    "fcr_rate_90d": "support",
    "sentiment_mean_30d": "support",
    "negative_sentiment_share_30d": "support",
    "csat_90d": "support",
    "nps": "outcomes",
    "ces_mean_90d": "outcomes",
    "csm_sentiment": "outcomes",
    "mrr": "financial",
    "mrr_change_30d_pct": "financial",
    "days_past_due": "financial",
    "days_to_renewal": "financial",
    "seats": "financial",
}


@dataclass
class Observation:
    account_id: str
    at: int
    churns: bool  # cancels within the horizon after ``at``
    metrics: AccountMetrics
    segment: str | None = None
    extra: dict[str, float] = field(default_factory=dict)  # e.g. the peer method's features


class MeasureFit(BaseModel):
    metric: str
    component: str
    coverage: float
    univariate_auc: float
    higher_is_better: bool
    bad: float
    good: float
    weight: float


class CalibrationReport(BaseModel):
    train_observations: int
    train_churners: int
    test_observations: int
    test_churners: int
    split_at: int | None
    train_auc: float | None
    test_auc: float | None
    default_train_auc: float | None
    default_test_auc: float | None
    overfit_warning: str | None
    measures: list[MeasureFit]
    dropped: dict[str, str]
    red_below: float
    yellow_below: float


def _value(m: AccountMetrics, name: str) -> float | None:
    v = getattr(m, name)
    if v is None:
        return None
    return float(v)


def _ramp01(x: np.ndarray, bad: float, good: float) -> np.ndarray:
    return np.clip((x - bad) / (good - bad), 0.0, 1.0)


def fit_nonneg_logistic(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 3000, lr: float = 0.5
) -> tuple[np.ndarray, float]:
    """Logistic regression of ``y`` on ``x`` with every coefficient >= 0 (projected gradient, Nesterov)."""
    n, k = x.shape
    w = np.zeros(k)
    b = 0.0
    vw, vb = w.copy(), b
    pos = float(y.mean()) if n else 0.5
    # Balanced classes: each class weighs half, so a rare outcome is not ignored.
    sw = np.where(y > 0.5, 0.5 / max(pos, 1e-9), 0.5 / max(1 - pos, 1e-9)) / n
    for t in range(1, iters + 1):
        z = x @ vw + vb
        p = 1 / (1 + np.exp(-np.clip(z, -30, 30)))
        g = (p - y) * sw
        gw = x.T @ g + l2 * vw
        gb = float(g.sum())
        w_new = np.maximum(0.0, vw - lr * gw)
        b_new = vb - lr * gb
        mom = (t - 1) / (t + 2)
        vw = w_new + mom * (w_new - w)
        vb = b_new + mom * (b_new - b)
        w, b = w_new, b_new
    return w, b


def _quantile(values: list[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q))


def fit(
    train: Sequence[Observation],
    base: ScoringConfig,
    *,
    candidates: dict[str, str] | None = None,
    min_coverage: float = 0.2,
    min_signal: float = 0.02,
    min_weight_share: float = 0.01,
    red_precision: float = 0.6,
    l2: float = 1e-3,
) -> tuple[ScoringConfig, list[MeasureFit], dict[str, str]]:
    """A scorecard (``base`` with a new ``default`` card and no segment cards) fitted to ``train``."""
    cands = candidates or CANDIDATES
    y_churn = np.array([o.churns for o in train], dtype=float)
    n = len(train)
    if n == 0 or y_churn.sum() == 0 or y_churn.sum() == n:
        raise ValueError("calibration needs observations of both accounts that cancel and accounts that stay")
    fits: list[tuple[str, str, float, float, bool, float, float, np.ndarray]] = []
    dropped: dict[str, str] = {}
    for metric, comp in cands.items():
        raw = [_value(o.metrics, metric) for o in train]
        have = [v for v in raw if v is not None]
        coverage = len(have) / n
        if coverage < min_coverage:
            dropped[metric] = f"data for {coverage:.0%} of observations"
            continue
        churn_v = [v for v, o in zip(raw, train, strict=True) if v is not None and o.churns]
        stay_v = [v for v, o in zip(raw, train, strict=True) if v is not None and not o.churns]
        a = auc(churn_v, stay_v)
        if a is None or abs(a - 0.5) < min_signal:
            dropped[metric] = "no signal" if a is None else f"AUC {a:.3f}: no better than a coin"
            continue
        higher_better = a > 0.5
        lo, hi = _quantile(have, 0.05), _quantile(have, 0.95)
        if hi <= lo:
            dropped[metric] = "constant"
            continue
        bad, good = (lo, hi) if higher_better else (hi, lo)
        col = np.array([np.nan if v is None else v for v in raw], dtype=float)
        r = _ramp01(col, bad, good)
        r[np.isnan(col)] = np.nanmean(r)  # missing: the average, as the scorecard's weight sharing does
        fits.append((metric, comp, coverage, max(a, 1 - a), higher_better, bad, good, r))
    if not fits:
        raise ValueError(f"no metric carries signal in these observations: {dropped}")
    x = np.column_stack([f[7] for f in fits])
    w, _ = fit_nonneg_logistic(x, 1 - y_churn, l2=l2)
    total = float(w.sum())
    if total <= 0:
        raise ValueError("the fit gave every measure a weight of 0")
    share = w / total
    kept: list[MeasureFit] = []
    for (metric, comp, cov, ua, hb, bad, good, _), s in zip(fits, share, strict=True):
        if s < min_weight_share:
            dropped[metric] = f"weight {s:.1%} after the fit"
            continue
        kept.append(
            MeasureFit(
                metric=metric,
                component=comp,
                coverage=round(cov, 3),
                univariate_auc=round(ua, 3),
                higher_is_better=hb,
                bad=_round_sig(bad),
                good=_round_sig(good),
                weight=round(float(s) * 100, 2),
            )
        )
    if not kept or all(k.bad == k.good for k in kept):
        raise ValueError("no measure kept a weight after the fit")
    kept = [k for k in kept if k.bad != k.good]
    card = _card(kept, Bands())
    config = base.model_copy(update={"default": card, "segments": {}})
    scores = score_observations(train, config)
    red, yellow = choose_bands(scores, [o.churns for o in train], red_precision)
    config = base.model_copy(
        update={"default": _card(kept, Bands(red_below=red, yellow_below=yellow)), "segments": {}}
    )
    return config, kept, dropped


def _round_sig(v: float, digits: int = 4) -> float:
    if v == 0 or not math.isfinite(v):
        return v
    return round(v, max(0, digits - 1 - math.floor(math.log10(abs(v)))))


def _card(kept: list[MeasureFit], bands: Bands) -> ScoreCard:
    comps: dict[str, dict[str, Any]] = {}
    for k in kept:
        c = comps.setdefault(k.component, {"weight": 0.0, "measures": {}})
        c["weight"] += k.weight
        c["measures"][k.metric] = Measure(
            metric=k.metric,
            bad=k.bad,
            good=k.good,
            weight=k.weight,
            explain=f"{k.metric.replace('_', ' ')} {{value:.3g}}; target {{good:.3g}}",
        )
    return ScoreCard(
        components={
            name: Component(
                weight=round(c["weight"], 2), label=f"{name} (calibrated)", measures=c["measures"]
            )
            for name, c in comps.items()
        },
        bands=bands,
    )


def choose_bands(
    scores: Sequence[float | None], churns: Sequence[bool], red_precision: float
) -> tuple[float, float]:
    """Red below the threshold with most recall at precision >= ``red_precision``; yellow at half that."""
    pairs = sorted((s, c) for s, c in zip(scores, churns, strict=True) if s is not None)
    total_churn = sum(c for _, c in pairs)

    def best(min_precision: float) -> float | None:
        # Most churners caught at that precision; of equal recall, the lowest threshold (fewest flagged).
        chosen, chosen_hits = None, 0
        hits = 0
        for i, (s, c) in enumerate(pairs):
            hits += c
            # "below t" for t just above s: everything up to i is flagged
            nxt = pairs[i + 1][0] if i + 1 < len(pairs) else s + 1
            if nxt == s:
                continue
            if total_churn and hits / (i + 1) >= min_precision and hits > chosen_hits:
                chosen, chosen_hits = round((s + nxt) / 2, 1), hits
        return chosen

    red = best(red_precision)
    yellow = best(red_precision / 2)
    red = 0.0 if red is None else min(max(red, 0.0), 100.0)
    yellow = red if yellow is None else min(max(yellow, red), 100.0)
    return red, yellow


def score_observations(obs: Sequence[Observation], config: ScoringConfig) -> list[float | None]:
    """Each observation's score, with the information check of its moment: over every account
    observed at the same time (the book at that observation), as the worker's daily freeze does."""
    by_time: dict[int, list[Observation]] = {}
    for o in obs:
        by_time.setdefault(o.at, []).append(o)
    checks = {
        at: information_check(config, ((o.segment, o.metrics) for o in group))
        for at, group in by_time.items()
    }
    return [
        score_account(
            o.metrics, config, o.segment, set_aside=checks[o.at].get(config.scorecard_for(o.segment)[0], ())
        ).score
        for o in obs
    ]


def observation_auc(obs: Sequence[Observation], scores: Sequence[float | None]) -> float | None:
    churn = [s for s, o in zip(scores, obs, strict=True) if s is not None and o.churns]
    stay = [s for s, o in zip(scores, obs, strict=True) if s is not None and not o.churns]
    return auc(churn, stay)


def calibrate(
    obs: Sequence[Observation],
    base: ScoringConfig,
    *,
    test_share: float = 0.3,
    overfit_gap: float = 0.05,
    **kw: Any,
) -> tuple[ScoringConfig, CalibrationReport]:
    """Fit on the earliest observations, validate on the latest ``test_share`` of the timeline."""
    times = sorted({o.at for o in obs})
    if not times:
        raise ValueError("no observations to calibrate on")
    split = times[min(len(times) - 1, int(len(times) * (1 - test_share)))] if test_share > 0 else None
    train = [o for o in obs if split is None or o.at < split]
    test = [o for o in obs if split is not None and o.at >= split]
    config, kept, dropped = fit(train, base, **kw)
    tr_auc = observation_auc(train, score_observations(train, config))
    te_auc = observation_auc(test, score_observations(test, config)) if test else None
    warning = None
    if tr_auc is not None and te_auc is not None and tr_auc - te_auc > overfit_gap:
        warning = (
            f"train AUC {tr_auc:.3f} is {tr_auc - te_auc:.3f} above test AUC {te_auc:.3f}: the weights fit "
            "the training period better than they generalise; use more history or fewer measures"
        )
    elif te_auc is not None and te_auc < 0.55:
        warning = f"test AUC {te_auc:.3f}: the calibrated score barely predicts churn on held-out time"
    report = CalibrationReport(
        train_observations=len(train),
        train_churners=sum(o.churns for o in train),
        test_observations=len(test),
        test_churners=sum(o.churns for o in test),
        split_at=split,
        train_auc=tr_auc,
        test_auc=te_auc,
        default_train_auc=observation_auc(train, score_observations(train, base)),
        default_test_auc=observation_auc(test, score_observations(test, base)) if test else None,
        overfit_warning=warning,
        measures=kept,
        dropped=dropped,
        red_below=config.default.bands.red_below,
        yellow_below=config.default.bands.yellow_below,
    )
    return config, report


def to_yaml(config: ScoringConfig, report: CalibrationReport | None = None) -> str:
    """The scorecard as YAML (loadable with ``load_scoring``), its validation summary as a header comment."""
    import yaml

    head = ["# healthmon scorecard written by `healthmon calibrate`"]
    if report is not None:
        head.append(
            f"# train: {report.train_observations} observations, {report.train_churners} churn within the horizon;"
            f" AUC {_f(report.train_auc)} (default scorecard {_f(report.default_train_auc)})"
        )
        head.append(
            f"# test (held-out later time): {report.test_observations} observations, {report.test_churners} churn;"
            f" AUC {_f(report.test_auc)} (default scorecard {_f(report.default_test_auc)})"
        )
        if report.overfit_warning:
            head.append(f"# WARNING: {report.overfit_warning}")
    body = config.model_dump(mode="json", exclude_defaults=False)
    return "\n".join(head) + "\n" + yaml.safe_dump(body, sort_keys=False, width=110)


def _f(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"
