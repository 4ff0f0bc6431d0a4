"""The scale benchmark runs (tiny sizes) against the test broker, so it never rots: a RocksDB worker
loaded, SIGKILLed and recovered, then one and two workers in a group. Its figures are reported by
bench/, never asserted here beyond being present and measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kafka


def test_scale_benchmark_smoke(kafka_settings, tmp_path: Path) -> None:
    out = tmp_path / "scale.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMON_")}
    env.update(HEALTHMON_BROKER=kafka_settings.broker, HEALTHMON_REDIS_URL=kafka_settings.redis_url)
    cmd = [sys.executable, "bench/bench_scale.py", "--smoke", "--memory-accounts", "", "--json", str(out)]
    if stack := os.environ.get("HEALTHMON_STACK_DIR"):  # the test stack's broker: its disk and CPU
        cmd += ["--stack-dir", stack]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(out.read_text())
    (a,) = r["accounts"]
    assert "error" not in a, a
    assert a["store"] == "rocksdb://" and a["events_per_s"] > 0 and a["rss_mb"] > 0
    assert a["disk"]["bytes"] > 0 and a["disk"]["databases"] == a["partitions"]
    rec = a["recovery"]
    assert 0 < rec["ready_s"] < rec["first_output_s"] and rec["recovery_complete_s"] is not None
    assert rec["snapshot_latency"]["n"] == rec["snapshot_latency"]["sent"] > 0
    assert [run["workers"] for run in r["scale_out"]["runs"]] == [1, 2]
    assert all(run["events_per_s"] > 0 for run in r["scale_out"]["runs"])
    for label in ("state on disk / changelog", "after SIGKILL", "2 worker(s)"):
        assert label in done.stdout
