"""healthmon calibrate: weights and thresholds learned from outcomes, validated on held-out time."""

import random

import pytest

from streams.config import load_yaml
from streams.core.metrics import AccountMetrics
from streams.core.scoring import ScoringConfig, load_scoring, ramp
from streams.sim.calibrate import Observation, calibrate, choose_bands, fit, to_yaml

BASE = load_scoring()
#: The hidden truth: a scorecard of three measures with these weights (and a fourth metric that is noise).
TRUE = {"logins_30d": 0.6, "active_days_30d": 0.3, "nps": 0.1}


def synthetic(n: int, seed: int = 1) -> list[Observation]:
    rnd = random.Random(seed)
    out = []
    for i in range(n):
        x = {
            "logins_30d": rnd.uniform(0, 100),
            "active_days_30d": rnd.uniform(0, 30),
            "nps": rnd.uniform(-100, 100),
        }
        noise = rnd.randint(0, 20)
        score = (
            TRUE["logins_30d"] * ramp(x["logins_30d"], 5, 95)
            + TRUE["active_days_30d"] * ramp(x["active_days_30d"], 1.5, 28.5)
            + TRUE["nps"] * ramp(x["nps"], -90, 90)
        )
        p_churn = 1 / (1 + pow(2.718281828, (score - 45) / 4))
        m = AccountMetrics(
            logins_30d=round(x["logins_30d"]),
            active_days_30d=round(x["active_days_30d"]),
            nps=x["nps"],
            tickets_opened_30d=noise,
        )
        out.append(
            Observation(account_id=f"a{i % 400}", at=i // 400, churns=rnd.random() < p_churn, metrics=m)
        )
    return out


def test_calibration_recovers_known_weights():
    config, kept, _ = fit(synthetic(8000), BASE)
    got = {k.metric: k.weight / 100 for k in kept}
    for metric, w in TRUE.items():
        assert got.get(metric, 0) == pytest.approx(w, abs=0.08), (metric, got)
    assert got.get("tickets_opened_30d", 0) < 0.03  # noise earns (almost) nothing
    by_metric = {k.metric: k for k in kept}
    assert (
        by_metric["logins_30d"].higher_is_better
        and by_metric["logins_30d"].bad < by_metric["logins_30d"].good
    )
    # the result is an ordinary scorecard: components add up, the weights sum to 100
    assert sum(c.weight for c in config.default.components.values()) == pytest.approx(100, abs=0.1)


def test_written_scorecard_loads_and_reports_train_and_test(tmp_path):
    config, report = calibrate(synthetic(4000, seed=2), BASE)
    assert report.train_observations + report.test_observations == 4000
    assert report.split_at is not None and report.test_auc is not None and report.train_auc is not None
    assert report.test_auc > 0.8 and report.test_auc > (report.default_test_auc or 0)
    path = tmp_path / "calibrated.yaml"
    path.write_text(to_yaml(config, report))
    again = load_yaml(path, ScoringConfig)
    assert again.default == config.default
    assert "test (held-out later time)" in path.read_text()


def test_overfitting_is_reported_not_silent():
    # Labels that are pure noise: whatever the fit finds on the training period does not hold later.
    rnd = random.Random(3)
    obs = [
        Observation(
            account_id=f"a{i}",
            at=i // 50,
            churns=rnd.random() < 0.3,
            metrics=AccountMetrics(
                **{m: rnd.random() for m in ("dau_mau", "adoption_rate", "feature_breadth")}
            ),
        )
        for i in range(600)
    ]
    try:
        _, report = calibrate(obs, BASE, min_signal=0.0)
    except ValueError as exc:  # or it refuses outright: nothing with signal
        assert "signal" in str(exc) or "weight" in str(exc)
        return
    assert report.overfit_warning is not None


def test_bands_for_precision():
    scores = [10, 20, 30, 40, 50, 60, 70, 80, 90, 95]
    churns = [True, True, True, False, True, False, False, False, False, False]
    red, yellow = choose_bands(scores, churns, 0.6)
    assert red == 55.0  # below 55: 4 of 5 churn (80 %); below 65 catches no more (4 of 6)
    assert red <= yellow


def test_needs_both_outcomes():
    obs = [Observation(account_id="a", at=0, churns=False, metrics=AccountMetrics(logins_30d=1))]
    with pytest.raises(ValueError, match="both"):
        fit(obs, BASE)
