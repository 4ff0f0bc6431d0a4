"""Targets of the portfolio figures (the seeds' benchmarks by default) and the pure rating against them.

A target says which way is better, the period its benchmark is stated on (``month``: churn < 5 % a
month; ``year``: NRR > 100 % a year; ``level``: a state such as NPS or % healthy) and two marks: ``good``
(on track at or beyond it) and ``warn`` (at risk between the two, off track beyond). A figure measured
over another span is compounded onto the target's basis before it is rated (docs/portfolio.md, "Targets"):
a retention rate r over n months is r^(m/n) over m months, a churn rate c is 1 - (1 - c)^(m/n).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, model_validator

from streams.config import load_yaml

DEFAULT_TARGETS = resources.files("streams.core") / "targets.default.yaml"
Rating = Literal["on_track", "at_risk", "off_track"]
BASIS_MONTHS = {"month": 1.0, "year": 12.0}


class Marks(BaseModel):
    """A segment's override of some of a target's marks."""

    model_config = ConfigDict(extra="forbid")

    good: float | None = None
    warn: float | None = None
    stretch: float | None = None


class Target(BaseModel):
    model_config = ConfigDict(extra="forbid")

    label: str = ""
    direction: Literal["higher", "lower"]
    basis: Literal["month", "year", "level"] = "level"
    good: float
    warn: float | None = None  # default: good (nothing is "at risk", only on or off track)
    stretch: float | None = None
    segments: dict[str, Marks] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _marks_in_order(self) -> Target:
        own = Marks(good=self.good, warn=self.warn)
        for where, marks in [("", own), *((f"segments.{k}.", v) for k, v in self.segments.items())]:
            good = self.good if marks.good is None else marks.good
            warn = marks.warn
            if warn is None:
                continue
            if (self.direction == "higher" and warn > good) or (self.direction == "lower" and warn < good):
                better = "below" if self.direction == "higher" else "above"
                raise ValueError(
                    f"{where}warn ({warn}) must be {better} good ({good}) when {self.direction} is better"
                )
        return self

    def for_segment(self, segment: str | None) -> ResolvedTarget:
        """The marks in force for ``segment`` (its override where given, else the figure's own)."""
        o = self.segments.get(segment or "") or Marks()
        good = self.good if o.good is None else o.good
        seg_warn = o.warn if o.warn is not None else (self.warn if o.good is None else None)
        return ResolvedTarget(
            label=self.label,
            direction=self.direction,
            basis=self.basis,
            good=good,
            warn=good if seg_warn is None else seg_warn,
            stretch=self.stretch if o.stretch is None else o.stretch,
            segment=segment if segment in self.segments else None,
        )


class ResolvedTarget(BaseModel):
    """One figure's target as served with it (``segment``: the override used, if any)."""

    label: str
    direction: Literal["higher", "lower"]
    basis: Literal["month", "year", "level"]
    good: float
    warn: float
    stretch: float | None = None
    segment: str | None = None


class Targets(BaseModel):
    """The targets file (``HEALTHMON_TARGETS_FILE``; default streams/core/targets.default.yaml)."""

    model_config = ConfigDict(extra="forbid")

    version: Literal[1] = 1
    figures: dict[str, Target]
    #: Accounts per CSM by segment, (fewest, most) (seed 000: enterprise 5-15, mid-market 15-30, SMB 30-100+)
    csm_accounts: dict[str, tuple[PositiveInt, PositiveInt]] = Field(
        default_factory=lambda: {"enterprise": (5, 15), "mid_market": (15, 30), "smb": (30, 100)}
    )

    @model_validator(mode="after")
    def _ranges_in_order(self) -> Targets:
        for seg, (lo, hi) in self.csm_accounts.items():
            if lo > hi:
                raise ValueError(f"csm_accounts.{seg}: {lo}-{hi} is not a range")
        return self

    def target(self, figure: str, segment: str | None = None) -> ResolvedTarget | None:
        t = self.figures.get(figure)
        return None if t is None else t.for_segment(segment)


def load_targets(path: Path | str | None = None) -> Targets:
    """The targets file, validated; a bad one raises ConfigError naming file, line and field."""
    return load_yaml(path or DEFAULT_TARGETS, Targets)  # type: ignore[arg-type]


def rebase(value: float, direction: str, months: float, to_months: float) -> float:
    """A rate over ``months`` compounded onto ``to_months`` (retention when higher is better, churn when
    lower): NRR 99 % a month is 99 %^12 = 88.6 % a year; churn 1 % a month is 1 - 0.99^12 = 11.4 % a year."""
    if months <= 0 or months == to_months:
        return value
    k = to_months / months
    if direction == "higher":
        return (max(value, 0.0) / 100) ** k * 100
    return (1 - (1 - min(value, 100.0) / 100) ** k) * 100


def rate(value: float | None, target: ResolvedTarget) -> Rating | None:
    """On track at ``good`` or better, at risk up to ``warn``, off track beyond; None without a value."""
    if value is None:
        return None
    sign = 1 if target.direction == "higher" else -1
    if sign * (value - target.good) >= 0:
        return "on_track"
    if sign * (value - target.warn) >= 0:
        return "at_risk"
    return "off_track"


class Assessment(BaseModel):
    """A figure beside its target: the value, the value on the target's basis and the rating."""

    figure: str
    value: float | None
    target: ResolvedTarget
    value_on_basis: float | None  # compounded onto the target's basis (month / year); level: the value
    rating: Rating | None
    #: The marks compounded the other way, onto the span the value was measured over (the same rating):
    #: GRR ≥ 90 % a year is ≥ 99.13 % a month; churn ≤ 5 % a month is ≤ 1.15 % over 7 of 31 days.
    good_on_span: float
    warn_on_span: float
    #: The good mark over one month (a level's mark as it is): the target line of the monthly trend charts.
    good_a_month: float = 0.0


def assess(
    figure: str, value: float | None, months: float, targets: Targets, segment: str | None = None
) -> Assessment | None:
    """Rate ``value``, measured over ``months`` months (1 a month, 3 a quarter, 12 a year, 7/31 seven days
    into a 31-day month), against the figure's target; None when the figure has no target."""
    t = targets.target(figure, segment)
    if t is None:
        return None
    on_basis, good, warn, monthly = value, t.good, t.warn, t.good
    if t.basis in BASIS_MONTHS:
        basis = BASIS_MONTHS[t.basis]
        if value is not None:
            on_basis = round(rebase(value, t.direction, months, basis), 2)
        good = round(rebase(t.good, t.direction, basis, months), 2)
        warn = round(rebase(t.warn, t.direction, basis, months), 2)
        monthly = round(rebase(t.good, t.direction, basis, 1.0), 2)
    return Assessment(
        figure=figure,
        value=value,
        target=t,
        value_on_basis=on_basis,
        rating=rate(on_basis, t),
        good_on_span=good,
        warn_on_span=warn,
        good_a_month=monthly,
    )
