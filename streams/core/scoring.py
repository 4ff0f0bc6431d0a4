"""The 0-100 health score: a configurable scorecard applied to :class:`AccountMetrics`.

Pure functions. Each measure is normalised to 0-100 by a linear ramp between a ``bad`` and a ``good``
threshold (either direction). A measure without data is dropped and its weight shared among the rest of
its component; a component without data is dropped and its weight shared among the other components.
``confidence`` is the share of the configured weight that had data.

The information check (:func:`information_check`) sets aside, for a whole book, the measures that carry
no information there (the same non-perfect score for nearly every account, e.g. key features the product
never sends); its result is an input of :func:`score_account`, computed once a day from the partition's
frozen portfolio, so scoring stays a function of its arguments.
"""

from __future__ import annotations

import hashlib
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from streams.config import load_yaml
from streams.core.metrics import AccountMetrics, MetricsConfig, Portfolio, with_portfolio

DEFAULT_SCORECARD = Path(__file__).with_name("scorecard.default.yaml")
Band = Literal["red", "yellow", "green"]
_NUMERIC_METRICS = {
    name
    for name, f in AccountMetrics.model_fields.items()
    if any(t in str(f.annotation) for t in ("int", "float", "Decimal", "bool"))
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Measure(_Strict):
    metric: str
    bad: float
    good: float
    weight: float = Field(default=1.0, gt=0)
    #: Plain words for a driver; ``{value}``, ``{good}`` and ``{bad}`` with format specs, e.g. {value:.0%}.
    explain: str
    #: Only score this measure when this boolean metric holds (e.g. support measures: has_tickets).
    only_if: str | None = None

    @field_validator("metric", "only_if")
    @classmethod
    def _known_metric(cls, v: str | None) -> str | None:
        if v is not None and v not in _NUMERIC_METRICS:
            raise ValueError(f"unknown metric {v!r}; known: {', '.join(sorted(_NUMERIC_METRICS))}")
        return v

    @field_validator("explain")
    @classmethod
    def _safe_template(cls, v: str) -> str:
        for _, name, spec, _ in string.Formatter().parse(v):
            if name is not None and name not in ("value", "good", "bad"):
                raise ValueError(f"template field {{{name}}} is not one of value, good, bad")
            if spec and "{" in spec:
                raise ValueError("nested template fields are not allowed")
        v.format(value=0.5, good=1.0, bad=0.0)  # a bad format spec fails here, at load time
        return v

    @model_validator(mode="after")
    def _ramp(self) -> Measure:
        if self.good == self.bad:
            raise ValueError("good and bad must differ")
        return self


class Component(_Strict):
    weight: float = Field(gt=0)
    label: str | None = None
    measures: dict[str, Measure] = Field(min_length=1)


class Bands(_Strict):
    red_below: float = Field(default=40, ge=0, le=100)
    yellow_below: float = Field(default=60, ge=0, le=100)

    @model_validator(mode="after")
    def _ordered(self) -> Bands:
        if self.red_below > self.yellow_below:
            raise ValueError("red_below must not be above yellow_below")
        return self

    def of(self, score: float) -> Band:
        return "red" if score < self.red_below else "yellow" if score < self.yellow_below else "green"


class ScoreCard(_Strict):
    components: dict[str, Component] = Field(min_length=1)
    bands: Bands = Bands()


class Stability(_Strict):
    """How far the published score may move: evidence moves it, one ordinary event does not swing it.

    Between two evaluations the score moves at most ``max_step`` points plus ``per_day`` points per day
    elapsed since the previous one (the raw score is always in the snapshot); a hard signal -- a
    cancellation, an unpaid invoice -- lets it fall at once. An account healthmon has seen for fewer than
    ``min_history_days`` days has no score: its status is "insufficient_data", not red.
    """

    max_step: float = Field(default=5, gt=0)
    per_day: float = Field(default=25, ge=0)
    min_history_days: int = Field(default=7, ge=0)


def stabilise(
    raw: float,
    prev: float | None,
    prev_at: int | None,
    as_of: int,
    hard_signal: bool,
    stability: Stability,
) -> float:
    """The published score: ``raw`` moved toward from ``prev`` by no more than the allowed step."""
    if prev is None or prev_at is None or (hard_signal and raw < prev):
        return raw
    limit = stability.max_step + stability.per_day * max(0, as_of - prev_at) / 86_400
    return round(prev + max(-limit, min(limit, raw - prev)), 1)


class InformationCheck(_Strict):
    """Which measures carry information in this book (docs/metrics.md, "The information check").

    At each daily portfolio freeze, over the book's accounts scored by a card: a measure that at least
    ``min_accounts`` accounts have data for, where fewer than ``min_varying_share`` of them score
    differently (whole points) from the most common score, and that score is below 100, is set aside:
    its weight is shared as for missing data. A measure at 100 for nearly everyone (no unpaid invoice, no
    urgent ticket) is a guard whose rare deviations are its signal, and stays.
    """

    enabled: bool = True
    min_accounts: int = Field(default=10, ge=2)
    min_varying_share: float = Field(default=0.05, gt=0, lt=1)


class ScoringConfig(_Strict):
    version: Literal[1] = 1
    #: The card's version, named in every snapshot (``scorecard_version``); default: a content hash.
    revision: str | None = Field(default=None, min_length=1, max_length=64)
    metrics: MetricsConfig = MetricsConfig()
    #: A change event is published when the band changes or the score moved this much since the last one.
    change_threshold: float = Field(default=5, gt=0)
    top_drivers: int = Field(default=3, ge=0, le=20)
    stability: Stability = Stability()
    default: ScoreCard
    segments: dict[Literal["smb", "mid_market", "enterprise"], ScoreCard] = Field(default_factory=dict)
    information: InformationCheck = InformationCheck()

    @cached_property
    def card_version(self) -> str:
        """``revision`` if the YAML gives one, else ``sha256:`` and 12 hex digits of the configuration's
        canonical JSON: two files that score alike (comments, key order aside) have the same version."""
        if self.revision is not None:
            return self.revision
        body = self.model_dump_json(exclude={"revision"}).encode()
        return "sha256:" + hashlib.sha256(body).hexdigest()[:12]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> ScoringConfig:
        """A copy whose ``card_version`` is its own (the cached hash of the original is not copied)."""
        copy = super().model_copy(update=update, deep=deep)
        copy.__dict__.pop("card_version", None)
        return copy

    def scorecard_for(self, segment: str | None) -> tuple[str, ScoreCard]:
        card = self.segments.get(segment)  # type: ignore[call-overload]
        return (segment, card) if card is not None and segment else ("default", self.default)


def load_scoring(path: Path | str | None = None) -> ScoringConfig:
    return load_yaml(path or DEFAULT_SCORECARD, ScoringConfig)


# --- results ----------------------------------------------------------------------------------


class MeasureScore(BaseModel):
    name: str
    metric: str
    value: float | None
    score: float | None
    weight: float
    points_lost: float = 0.0


class ComponentScore(BaseModel):
    name: str
    label: str | None
    score: float | None
    weight: float  # as configured
    effective_weight: float  # share of the score after missing data was taken out, 0-1
    contribution: float  # points of the 0-100 score this component gives
    measures: list[MeasureScore]


class Driver(BaseModel):
    component: str
    measure: str
    metric: str
    value: float
    score: float
    points_lost: float
    text: str


class SetAside(BaseModel):
    """A measure the information check took out of this book's scores, and why."""

    component: str
    measure: str
    metric: str
    #: "constant": (nearly) every account scores the same on it; "no_data": no account of the book has
    #: data for it (listed only where this account has none either; changes no score).
    reason: Literal["constant", "no_data"]
    text: str


class HealthScore(BaseModel):
    score: float | None
    band: Band | None
    confidence: float
    scorecard: str
    components: list[ComponentScore]
    drivers: list[Driver]
    set_aside: list[SetAside] = Field(default_factory=list)


def _value(metrics: AccountMetrics, name: str) -> float | None:
    v = getattr(metrics, name)
    if v is None:
        return None
    if isinstance(v, bool):
        return 1.0 if v else 0.0
    return float(v) if isinstance(v, Decimal) else v


def _measure_value(metrics: AccountMetrics, meas: Measure) -> float | None:
    if meas.only_if is not None and not _value(metrics, meas.only_if):
        return None
    return _value(metrics, meas.metric)


def ramp(value: float, bad: float, good: float) -> float:
    """0 at ``bad``, 100 at ``good``, linear between, clamped; works for either direction."""
    t = (value - bad) / (good - bad)
    return 100.0 * (0.0 if t < 0 else 1.0 if t > 1 else t)


def score_account(
    metrics: AccountMetrics,
    config: ScoringConfig,
    segment: str | None,
    unavailable: frozenset[str] = frozenset(),
    set_aside: Sequence[SetAside] = (),
) -> HealthScore:
    """``unavailable``: metrics that cannot have data here (the portfolio ones where no portfolio is
    kept); their measures count neither in the score nor against ``confidence``. ``set_aside``: the
    information check's result for this book (:func:`information_check`); a "constant" measure is left
    out like an unavailable one."""
    # Runs on every evaluation: results are collected as plain dicts and validated into the models
    # in one call (one pass in pydantic-core instead of ~25 model constructors), and driver texts
    # are formatted only for the drivers shown.
    card_name, card = config.scorecard_for(segment)
    dead = {(a.component, a.measure) for a in set_aside if a.reason == "constant"}
    present_weight = 0.0  # configured weight (flattened to measures) that had data
    possible_weight = 0.0  # configured weight that could have had data here
    partial: list[
        tuple[str, Component, float | None, list[tuple[str, Measure, float | None, float | None]], float]
    ] = []
    for cname, comp in card.components.items():
        rows: list[tuple[str, Measure, float | None, float | None]] = []
        m_total = sum(m.weight for m in comp.measures.values())
        out = {m for m in comp.measures if (cname, m) in dead} if dead else set()
        m_possible = sum(
            meas.weight
            for m, meas in comp.measures.items()
            if meas.metric not in unavailable and m not in out
        )
        possible_weight += comp.weight * m_possible / m_total
        got = 0.0
        acc = 0.0
        for mname, meas in comp.measures.items():
            value = _value(metrics, meas.metric)
            if meas.only_if is not None and not _value(metrics, meas.only_if):
                value = None
            s = None if value is None or mname in out else ramp(value, meas.bad, meas.good)
            rows.append((mname, meas, value, s))
            if s is not None:
                got += meas.weight
                acc += meas.weight * s
        present_weight += comp.weight * got / m_total
        partial.append((cname, comp, acc / got if got else None, rows, got))

    scored_weight = sum(comp.weight for _, comp, s, _, _ in partial if s is not None)
    components: list[dict[str, Any]] = []
    losses: list[tuple[float, str, str, Measure, float, float]] = []
    total = 0.0
    for cname, comp, cscore, rows, got in partial:
        eff = comp.weight / scored_weight if cscore is not None else 0.0
        contribution = eff * cscore if cscore is not None else 0.0
        total += contribution
        measures = []
        for mname, meas, value, ms in rows:
            lost = 0.0
            if ms is not None:
                lost = round(eff * meas.weight / got * (100.0 - ms), 2)
                if lost > 0:
                    losses.append((lost, cname, mname, meas, value, ms))  # type: ignore[arg-type]
            measures.append(
                dict(
                    name=mname,
                    metric=meas.metric,
                    value=value,
                    score=None if ms is None else round(ms, 1),
                    weight=meas.weight,
                    points_lost=lost,
                )
            )
        components.append(
            dict(
                name=cname,
                label=comp.label,
                score=None if cscore is None else round(cscore, 1),
                weight=comp.weight,
                effective_weight=round(eff, 4),
                contribution=round(contribution, 2),
                measures=measures,
            )
        )
    losses.sort(key=lambda d: (-d[0], d[1], d[2]))
    drivers = [
        dict(
            component=cname,
            measure=mname,
            metric=meas.metric,
            value=value,
            score=round(ms, 1),
            points_lost=lost,
            text=meas.explain.format(value=value, good=meas.good, bad=meas.bad),
        )
        for lost, cname, mname, meas, value, ms in losses[: config.top_drivers]
    ]
    score = round(total, 1) if scored_weight else None
    shown: list[SetAside] = []
    for a in set_aside:  # a result computed under an earlier card may name a measure no longer in it
        meas_or_none = (
            card.components[a.component].measures.get(a.measure) if a.component in card.components else None
        )
        if meas_or_none is not None and (
            a.reason == "constant" or _measure_value(metrics, meas_or_none) is None
        ):
            shown.append(a)
    return HealthScore(
        score=score,
        band=card.bands.of(score) if score is not None else None,
        confidence=round(present_weight / possible_weight, 3) if possible_weight else 0.0,
        scorecard=card_name,
        components=components,
        drivers=drivers,
        set_aside=shown,
    )


def information_check(
    config: ScoringConfig, book: Iterable[tuple[str | None, AccountMetrics]]
) -> dict[str, list[SetAside]]:
    """The measures each card sets aside in ``book`` (each account's segment and metrics, the portfolio
    measures filled in), by card name; cards with nothing to set aside are left out. Pure, and
    independent of the accounts' order. docs/metrics.md, "The information check", has the rule."""
    chk = config.information
    if not chk.enabled:
        return {}
    by_card: dict[str, list[AccountMetrics]] = {}
    for segment, m in book:
        by_card.setdefault(config.scorecard_for(segment)[0], []).append(m)
    out: dict[str, list[SetAside]] = {}
    for card_name, members in sorted(by_card.items()):
        card = config.default if card_name == "default" else config.segments[card_name]  # type: ignore[index]
        found: list[SetAside] = []
        for cname, comp in card.components.items():
            for mname, meas in comp.measures.items():
                scores: Counter[int] = Counter()
                for m in members:
                    v = _measure_value(m, meas)
                    if v is not None:
                        scores[round(ramp(v, meas.bad, meas.good))] += 1
                n = sum(scores.values())
                if not n and len(members) >= chk.min_accounts:
                    text = f"no account of the {len(members)} in the book has data for {meas.metric}"
                    found.append(
                        SetAside(
                            component=cname, measure=mname, metric=meas.metric, reason="no_data", text=text
                        )
                    )
                    continue
                if n < chk.min_accounts:
                    continue
                mode, k = min(scores.items(), key=lambda kv: (-kv[1], kv[0]))
                if mode < 100 and n - k < chk.min_varying_share * n:
                    text = (
                        f"{meas.metric} scores {mode} of 100 for {k} of the {n} accounts with data: "
                        "it does not tell them apart, its weight is shared out"
                    )
                    found.append(
                        SetAside(
                            component=cname, measure=mname, metric=meas.metric, reason="constant", text=text
                        )
                    )
        if found:
            out[card_name] = found
    return out


def score_deltas(history: dict[int, int], today: int, score: float | None) -> dict[str, float | None]:
    """Score now minus the score N days ago (the last daily score on or before that day). One pass
    over the history (up to 90 days), not one per N: it runs on every evaluation."""
    if score is None:
        return {"1d": None, "7d": None, "30d": None}
    none = -(1 << 62)
    last = [none, none, none]  # per N, the latest day on or before today - N
    cut1, cut7, cut30 = today - 1, today - 7, today - 30
    for d in history:
        if d <= cut1:
            if d > last[0]:
                last[0] = d
            if d <= cut7:
                if d > last[1]:
                    last[1] = d
                if d <= cut30 and d > last[2]:
                    last[2] = d
    return {
        f"{n}d": None if day == none else round(score - history[day] / 10, 1)
        for n, day in zip((1, 7, 30), last, strict=True)
    }


def is_health_change(
    prev_score: float | None, prev_band: str | None, score: float | None, band: str | None, threshold: float
) -> bool:
    """Band changed, or the score moved at least ``threshold`` since the last change event."""
    if score is None:
        return False
    if prev_score is None or band != prev_band:
        return True
    return abs(score - prev_score) >= threshold


SetAsideRow = tuple[str, str, str, str, str]


def check_portfolio(
    config: ScoringConfig,
    portfolio: Portfolio,
    members: Mapping[str, AccountMetrics],
    segments: Mapping[str, str | None],
) -> dict[str, list[SetAsideRow]]:
    """:func:`information_check` over a frozen portfolio's members (their raw metrics at the freeze,
    the portfolio measures filled in), as the plain rows :attr:`Portfolio.set_aside` keeps. Runs once
    per partition and UTC day, never per event."""
    as_of = portfolio.as_of or 0
    book = ((segments.get(aid), with_portfolio(m, portfolio, as_of)) for aid, m in sorted(members.items()))
    return {
        card: [(a.component, a.measure, a.metric, a.reason, a.text) for a in rows]
        for card, rows in information_check(config, book).items()
    }


def set_aside_of(portfolio: Portfolio | None, card: str) -> list[SetAside]:
    """The measures ``card`` sets aside under ``portfolio`` (none without one)."""
    rows = () if portfolio is None else portfolio.set_aside.get(card, ())
    return [
        SetAside(component=c, measure=m, metric=k, reason=r, text=t)  # type: ignore[arg-type]
        for c, m, k, r, t in rows
    ]
