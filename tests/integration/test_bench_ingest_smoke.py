"""The ingest benchmark runs (tiny sizes) against the test broker, so it never rots. Its figures are
reported by bench/, never asserted here beyond being measured and every acknowledged event stored."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.kafka


def test_ingest_benchmark_smoke(kafka_settings, tmp_path: Path) -> None:
    out = tmp_path / "ingest.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMON_")}
    env.update(HEALTHMON_BROKER=kafka_settings.broker, HEALTHMON_PARTITIONS="4")
    done = subprocess.run(
        [sys.executable, "bench/bench_ingest.py", "--smoke", "--json", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    r = json.loads(out.read_text())
    assert r["throughput"]["events_per_s"] > 0 and r["throughput"]["errors"] == {}
    assert r["latency_at_half"]["requests"] > 0 and r["latency_at_half"]["p99_ms"] > 0
    assert r["events_on_topic"] >= r["events_acknowledged"] > 0
