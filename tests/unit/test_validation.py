"""The external yardstick: ChurnSim (fightchurn) as contract v1, observation points, the peer's method."""

from datetime import date, datetime
from pathlib import Path

import orjson
import pytest
from click.testing import CliRunner

from streams.cli.main import main
from streams.core.scoring import load_scoring
from streams.sim.fightchurn import SimCustomer, SimResult, churn_date, convert, truth
from streams.sim.simulate import GroundTruth
from streams.sim.validation import compare, observe, read_events, render

FIXTURE = Path(__file__).parent.parent / "data" / "churnsim_crm5_small.jsonl.gz"


def test_conversion_by_hand():
    c = SimCustomer(
        id=3,
        channel="web",
        start_date=date(2023, 1, 10),
        subscriptions=[
            ("basic", date(2023, 1, 10), date(2023, 2, 10), 200.0, 10.0, "users", 1, 0.0),
            ("addon", date(2023, 1, 10), date(2023, 2, 10), 300.0, 5000.0, "meeting", 1, 0.0),
            ("basic", date(2023, 2, 10), date(2023, 3, 10), 200.0, 10.0, "users", 1, 0.5),
        ],
        events=[
            (datetime(2023, 1, 11, 9), 0, 1, None),
            (datetime(2023, 1, 11, 8), 0, 2, None),  # earlier: the day's feature_used is at 8:00 by u2
            (datetime(2023, 1, 11, 10), 0, 1, None),
            (datetime(2023, 1, 11, 11), 1, 1, None),
        ],
    )
    sim = SimResult(
        model="crm5",
        start=date(2023, 1, 1),
        end=date(2023, 6, 1),
        behaviors=["search", "meet"],
        customers=[c],
    )
    evs = list(convert(sim))
    kinds = [e["type"] for e in evs]
    assert kinds[0] == "account" and kinds.count("subscription") == 2 and kinds.count("invoice_paid") == 2
    subs = [e for e in evs if e["type"] == "subscription"]
    assert [s["mrr"] for s in subs] == ["500.00", "100.00"]  # base + add-on; then 50 % off, no add-on
    assert subs[0]["seats"] == 10 and subs[0]["renewal_date"] == "2023-02-10"
    assert churn_date(c, sim.end) == date(2023, 3, 10) and evs[-1]["type"] == "subscription_canceled"
    logins = sorted((e["user_id"], e["occurred_at"]) for e in evs if e["type"] == "login")
    assert logins == [("u1", "2023-01-11T09:00:00Z"), ("u2", "2023-01-11T08:00:00Z")]
    uses = {e["feature"]: e for e in evs if e["type"] == "feature_used"}
    assert uses["search"]["count"] == 3 and uses["search"]["user_id"] == "u2"
    assert uses["meet"]["count"] == 1
    assert len({e["event_id"] for e in evs}) == len(evs)
    # the ground truth `healthmon evaluate` reads: the same account, cancelling at the last period's end
    t = GroundTruth.model_validate(truth(sim, seed=7))
    (a,) = t.accounts
    assert (a.account_id, a.segment, a.seats, a.mrr, a.churns) == (
        evs[0]["account_id"],
        "mid_market",
        10,
        500,
        True,
    )
    assert a.canceled_at is not None and a.canceled_at.isoformat().startswith("2023-03-10T00:00")


def test_fixture_is_contract_v1_and_the_comparison_runs():
    events = list(read_events(FIXTURE))  # every line validates against the contract
    by_account: dict[str, list] = {}
    for e in events:
        by_account.setdefault(e.account_id, []).append(e)
    assert len(by_account) == 6
    for evs in by_account.values():
        assert evs[0].type == "account"  # its profile before anything else
    cfg = load_scoring()
    obs = observe(events, cfg, every_days=7)
    assert obs.accounts == 6 and obs.cancellations == 1
    gone = {e.account_id: int(e.occurred_at.timestamp()) for e in events if e.type == "subscription_canceled"}
    for o in obs.observations:
        assert o.account_id not in gone or o.at < gone[o.account_id]  # never observed after it left
        assert o.churns == (o.account_id in gone and gone[o.account_id] <= o.at + 30 * 86400)
        assert o.extra.get("login", 0) > 0 and o.metrics.usage_percentile is None  # < 10 accounts: no rank
    assert any(o.churns for o in obs.observations)
    out = render(compare(obs.observations, cfg, k=2, calibrated=False))
    assert "peer: log + z-scored 28-day counts" in out and "healthmon default scorecard" in out


def test_calibrate_command_on_simulated_history(tmp_path):
    runner = CliRunner()
    events = tmp_path / "sim.jsonl"
    r = runner.invoke(
        main,
        [
            "simulate",
            "--accounts",
            "40",
            "--days",
            "80",
            "--seed",
            "4",
            "--end",
            "2026-06-30T00:00:00Z",
            "--out",
            str(events),
        ],
    )
    assert r.exit_code == 0, r.output
    out = tmp_path / "calibrated.yaml"
    r = runner.invoke(main, ["calibrate", str(events), "--out", str(out), "--every-days", "7"])
    assert r.exit_code == 0, r.output
    assert "train AUC" in r.output and "test  AUC" in r.output
    report = orjson.loads((tmp_path / "calibrated.report.json").read_bytes())
    assert report["train_auc"] is not None and report["measures"]
    assert load_scoring(out).default.components  # the YAML is an ordinary scorecard


def test_bad_event_file_names_the_line(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_bytes(b'{"type": "login"}\n')
    with pytest.raises(ValueError, match=r"bad\.jsonl:1"):
        list(read_events(p))


def test_validate_command_on_the_fixture():
    r = CliRunner().invoke(main, ["validate", str(FIXTURE), "--folds", "2"])
    assert r.exit_code == 0, r.output
    assert "| healthmon default scorecard |" in r.output and "peer: log + z-scored" in r.output


def test_evaluate_compares_scorecards_side_by_side(tmp_path):
    runner = CliRunner()
    events = tmp_path / "sim.jsonl"
    r = runner.invoke(
        main,
        [
            "simulate",
            "--accounts",
            "30",
            "--days",
            "60",
            "--seed",
            "6",
            "--end",
            "2026-06-30T00:00:00Z",
            "--out",
            str(events),
        ],
    )
    assert r.exit_code == 0, r.output
    strict = tmp_path / "strict.yaml"  # the default card with red below 80: more accounts turn red
    strict.write_text(
        (Path(__file__).parents[2] / "streams" / "core" / "scorecard.default.yaml")
        .read_text()
        .replace("bands: {red_below: 60, yellow_below: 75}", "bands: {red_below: 80, yellow_below: 90}")
    )
    truth = tmp_path / "sim.truth.json"
    r = runner.invoke(main, ["evaluate", str(truth), "--events", str(events), "--scorecard", str(strict)])
    assert r.exit_code == 0, r.output
    assert "| | current | strict.yaml |" in r.output and "| red recall |" in r.output
    assert "strict.yaml: " in r.output and "would turn red that do not now" in r.output
    n_new = int(r.output.split("strict.yaml: ")[1].split(" accounts")[0])
    assert n_new > 0


def test_the_fixture_regenerates_byte_for_byte(tmp_path):
    """Needs the optional fightchurn package (pip install -e '.[validation]'): skipped without it."""
    import gzip

    pytest.importorskip("fightchurn")
    from streams.sim.fightchurn import simulate, write_jsonl

    out = tmp_path / "again.jsonl.gz"
    write_jsonl(simulate("crm5", 6, "2023-01-01", "2023-04-01", seed=5, growth_rate=0), out)
    assert gzip.decompress(out.read_bytes()) == gzip.decompress(FIXTURE.read_bytes())
