"""The end-to-end benchmark runs (tiny sizes) against the test broker, so it never rots.
Its figures are reported by bench/, never asserted here beyond being present and measured."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kafka


def test_pipeline_benchmark_smoke(kafka_settings, tmp_path: Path) -> None:
    out = tmp_path / "pipeline.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMON_")}
    env.update(HEALTHMON_BROKER=kafka_settings.broker, HEALTHMON_REDIS_URL=kafka_settings.redis_url)
    done = subprocess.run(
        [sys.executable, "bench/bench_pipeline.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(out.read_text())
    assert r["machine"]["cores"] and r["machine"]["kafka"] != "unknown"
    assert r["raw_consume_events_per_s"] > 0 and r["pipeline"]["events_per_s"] > 0
    assert 0 < r["ratio_to_raw"] == r["pipeline"]["events_per_s"] / r["raw_consume_events_per_s"]
    guarantees = r["faust_guarantees"]
    assert set(guarantees) == {"at_least_once", "exactly_once", "exactly_once_subscribed"}
    assert all(g["records_out"] == r["events"] and g["events_per_s"] > 0 for g in guarantees.values())
    assert guarantees["at_least_once"]["markers"] == 0
    (run,) = r["latency"]  # --smoke offers one fixed load
    assert run["snapshot"]["n"] > 0 and run["snapshot"]["p99_ms"] > 0 and run["alert"]["n"] > 0
    assert r["memory"]["rss_per_account"]["500"]["bytes"] > 0 and r["memory"]["state_bytes"]["mean"] > 0
    # States are zstd-compressed already (streams/core/state.py): the batch codec adds a few bytes at most.
    assert 0 < r["memory"]["changelog_bytes_per_state"]["zstd"] < 1.05 * r["memory"]["state_bytes"]["mean"]
    assert len(run["snapshot_by_fifth"]) == 5 and run["lag_at_end"] >= 0
    labels = (
        "raw aiokafka consume",
        "healthmon pipeline",
        "produce -> cs.health",
        "p99 by fifth",
        "RSS per account",
    )
    for label in labels:
        assert label in done.stdout
