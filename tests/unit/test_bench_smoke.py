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
