"""Targets: the shipped file holds the seeds' benchmarks, a bad file names file, line and field, and the
pure rating (with compounding onto the target's basis) matches docs/portfolio.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from streams.config import ConfigError
from streams.core.targets import assess, load_targets, rate, rebase
from streams.settings import Settings


def test_the_shipped_targets_are_the_seeds_benchmarks() -> None:
    t = load_targets()
    assert (t.target("nrr").good, t.target("nrr").basis, t.target("nrr").stretch) == (100, "year", 120)
    assert t.target("grr").good == 90
    assert t.target("logo_churn_rate", "smb").good == 5
    assert t.target("logo_churn_rate", "enterprise").good == 2
    assert t.target("logo_churn_rate", "enterprise").segment == "enterprise"
    assert t.target("revenue_churn_rate").good == 5
    assert (t.target("nps").good, t.target("csat").good, t.target("healthy_pct").good) == (50, 80, 80)
    assert (t.target("adoption").good, t.target("dau_mau").good, t.target("first_response_hours").good) == (
        80,
        20,
        4,
    )
    assert t.target("first_response_hours").direction == "lower"
    assert t.target("no such figure") is None


def test_rating_by_direction() -> None:
    nps = load_targets().target("nps")  # good 50, warn 30, higher is better
    assert [rate(v, nps) for v in (50, 49.9, 30, 29.9, None)] == [
        "on_track",
        "at_risk",
        "at_risk",
        "off_track",
        None,
    ]
    churn = load_targets().target("logo_churn_rate")  # good 5, warn 7, lower is better
    assert [rate(v, churn) for v in (5, 6, 7, 7.1)] == ["on_track", "at_risk", "at_risk", "off_track"]


def test_compounding_onto_the_basis() -> None:
    assert rebase(99, "higher", 1, 12) == pytest.approx(88.64, abs=0.01)
    assert rebase(1, "lower", 1, 12) == pytest.approx(11.36, abs=0.01)
    assert rebase(11.36, "lower", 12, 1) == pytest.approx(1.0, abs=0.01)
    assert rebase(42.0, "higher", 3, 3) == 42.0
    # docs/portfolio.md: November's whole-book figures (a month) against the default targets
    t = load_targets()
    nrr = assess("nrr", 95.93, 1, t)
    assert (
        nrr is not None and nrr.value_on_basis == pytest.approx(60.74, abs=0.01) and nrr.rating == "off_track"
    )
    churn = assess("logo_churn_rate", 16.67, 1, t)
    assert churn is not None and churn.value_on_basis == 16.67 and churn.rating == "off_track"
    ent = assess("revenue_churn_rate", 5.0, 1, t, "enterprise")
    assert ent is not None and ent.rating == "on_track"
    # seven days into a 31-day month: one lost account of 50 is 2 % to date, 8.6 % at that pace a month
    pace = assess("logo_churn_rate", 2.0, 7 / 31, t)
    assert (
        pace is not None
        and pace.value_on_basis == pytest.approx(8.56, abs=0.01)
        and pace.rating == "off_track"
    )
    assert assess("healthy_pct", 50.0, 7 / 31, t).value_on_basis == 50.0  # type: ignore[union-attr]
    grr = assess("grr", 99.0, 1, t)
    assert (
        grr is not None and (grr.good_on_span, grr.warn_on_span) == (99.13, 98.65) and grr.rating == "at_risk"
    )
    assert pace.good_on_span == 1.15 and pace.warn_on_span == 1.63
    # the monthly trend charts' target line: the mark over one month, whatever span was measured
    assert (grr.good_a_month, pace.good_a_month) == (99.13, 5.0)


BAD = """version: 1
figures:
  nrr:
    direction: higher
    good: 100
  nps:
    direction: sideways
    good: 50
"""


def test_a_bad_file_names_file_line_and_field(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as exc:
        load_targets(path)
    assert f"{path}:7: figures.nps.direction" in str(exc.value)
    path.write_text("version: 1\nfigures:\n  nrr:\n    direction: higher\n    good: 100\n    warn: 110\n")
    with pytest.raises(
        ConfigError, match=r"targets.yaml:4: figures.nrr: .*warn \(110.0\) must be below good"
    ):
        load_targets(path)
    path.write_text(
        "version: 1\nfigures:\n  nrr: {direction: higher, good: 100, segments: {smb: {gud: 1}}}\n"
    )
    with pytest.raises(ConfigError, match=r"targets.yaml:3: figures.nrr.segments.smb.gud"):
        load_targets(path)


def test_the_setting_points_at_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "t.yaml"
    path.write_text("figures:\n  nps: {direction: higher, good: 10}\n")
    monkeypatch.setenv("HEALTHMON_TARGETS_FILE", str(path))
    assert load_targets(Settings().targets_file).target("nps").good == 10  # type: ignore[union-attr]
