"""The benchmarks run (tiny sizes): they must not rot. Speed is reported by bench/, never asserted."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rules_benchmark_runs(tmp_path: Path):
    out = tmp_path / "rules.json"
    subprocess.run(
        [sys.executable, "bench/bench_rules.py", "--n", "2000", "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    body = json.loads(out.read_text())
    assert set(body["evaluations_per_second"]) >= {"simple: score < 60"}


def test_driver_benchmark_runs(tmp_path: Path):
    out = tmp_path / "driver.json"
    subprocess.run(
        [sys.executable, "bench/bench_driver.py", "--events", "3000", "--accounts", "50", "--json", str(out)],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )
    runs = json.loads(out.read_text())["runs"]
    assert set(runs) == {"uniform", "skewed"}
    assert all(r["stats"]["processed"] == 3000 and r["left_buffered"] == 0 for r in runs.values())


def test_state_benchmark_runs(tmp_path: Path):
    out = tmp_path / "state.json"
    for args in (
        ["--accounts", "8", "--repeat", "1"],
        ["--big-users", "300", "--big-days", "3", "--max-users", "200"],
    ):
        subprocess.run(
            [sys.executable, "bench/bench_state.py", *args, "--json", str(out)],
            cwd=ROOT,
            check=True,
            capture_output=True,
        )
        body = json.loads(out.read_text())
        if "accounts" in body:
            assert body["accounts"] == 8 and body["bytes_v2"]["p95"] < body["bytes_v1"]["p95"]
        else:
            assert body["users_kept"] == 200 and body["users_seen"] == 300


def test_eval_benchmark_runs(tmp_path: Path):
    out = tmp_path / "eval.json"
    args = ["--accounts", "6", "--days", "10", "--repeat", "2", "--profile", "--json", str(out)]
    subprocess.run([sys.executable, "bench/bench_eval.py", *args], cwd=ROOT, check=True, capture_output=True)
    body = json.loads(out.read_text())
    assert body["evaluations"] > 0 and body["eval_us"] > 0 and len(body["eval_us_passes"]) == 2
