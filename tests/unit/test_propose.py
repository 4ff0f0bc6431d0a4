"""Guarded self-calibration offline: a candidate fitted on synthetic outcomes with known weights is
proposed over a card that reads the wrong measures, and not over itself or with too few cancellations."""

from __future__ import annotations

from pathlib import Path

import orjson
from click.testing import CliRunner

from streams.cli.main import main
from streams.core.scoring import load_scoring
from streams.sim.calibrate import calibrate
from streams.sim.propose import propose
from tests.unit.test_calibrate import synthetic

BASE = load_scoring()


def test_a_candidate_that_reads_the_signal_is_proposed_over_the_default() -> None:
    obs = synthetic(6000)
    candidate, got = propose(obs, BASE, rounds=200)
    v = got.verdict
    assert got.cancellations >= 30 and candidate.card_version != BASE.card_version
    assert v.propose, v.reasons
    assert v.candidate.figures.auc is not None and v.current.figures.auc is not None
    assert v.candidate.figures.auc > v.current.figures.auc + 0.02
    assert v.candidate.auc_ci and v.current.auc_ci and v.candidate.auc_ci.low > v.current.auc_ci.high
    assert v.accounts_changing_band == sum(v.band_changes.values()) > 0
    assert got.calibration.test_auc == v.candidate.figures.auc  # the same held-out points


def test_a_card_is_not_proposed_over_itself() -> None:
    obs = synthetic(6000)
    fitted, _ = calibrate(obs, BASE)
    _, got = propose(obs, fitted, rounds=200)
    assert not got.verdict.propose
    assert any("AUC" in r for r in got.verdict.reasons)


def test_too_few_cancellations() -> None:
    _, got = propose(synthetic(6000), BASE, rounds=50, min_cancellations=10**6)
    assert not got.verdict.propose
    assert got.verdict.reasons[0].endswith("cancellations in the book, fewer than 1000000")


def test_calibrate_propose_command(tmp_path: Path) -> None:
    runner = CliRunner()
    events = tmp_path / "sim.jsonl"
    args = ["simulate", "--accounts", "40", "--days", "80", "--seed", "4", "--end", "2026-06-30T00:00:00Z"]
    r = runner.invoke(main, [*args, "--out", str(events)])
    assert r.exit_code == 0, r.output
    out = tmp_path / "candidate.yaml"
    r = runner.invoke(main, ["calibrate", str(events), "--out", str(out), "--propose"])
    assert r.exit_code == 0, r.output
    proposal = orjson.loads((tmp_path / "candidate.report.json").read_bytes())["proposal"]
    # 40 accounts cannot reach 30 cancellations: the verdict says so, and still counts the band moves
    assert proposal["propose"] is False
    assert any(x.endswith("cancellations in the book, fewer than 30") for x in proposal["reasons"])
    assert proposal["accounts_changing_band"] == sum(proposal["band_changes"].values())
    assert "not proposed over" in r.output and "accounts would change band" in r.output
    assert load_scoring(out).default.components
