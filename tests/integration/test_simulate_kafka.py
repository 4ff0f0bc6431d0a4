"""The simulator drives a real worker through Kafka, and `healthmon evaluate` scores the run."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from streams.settings import Settings
from streams.sim.simulate import GroundTruth, Simulator
from tests.conftest import WorkerProcess, run_cli
from tests.helpers import collect, latest_snapshots, setup_topics

pytestmark = pytest.mark.kafka
OPTIONS = ["--accounts", "30", "--days", "40", "--seed", "4", "--end", "2026-11-01"]


def cli(s: Settings, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    done = run_cli(s, *args, timeout=timeout)
    assert done.returncode == 0, f"healthmon {args[0]} failed:\n{done.stdout}\n{done.stderr}"
    return done


async def test_simulated_base_is_scored_through_kafka_and_evaluated(
    kafka_settings: Settings, worker: WorkerProcess, tmp_path: Path
) -> None:
    s = kafka_settings
    await setup_topics(s)
    worker.start()
    truth_path = tmp_path / "truth.json"
    cli(s, "simulate", *OPTIONS, "--produce", "--truth", str(truth_path))
    truth = GroundTruth.model_validate_json(truth_path.read_bytes())
    expected = Counter(
        e["account_id"] for e in Simulator(30, 40, 4, datetime(2026, 11, 1, tzinfo=UTC)).events()
    )

    def all_folded(records) -> bool:
        snaps = latest_snapshots(records)
        return all(sum(snaps.get(a, {}).get("event_counts", {}).values()) == n for a, n in expected.items())

    records = await collect(s, "health", all_folded, timeout=240)
    snaps = latest_snapshots(records)
    assert set(snaps) == {a.account_id for a in truth.accounts}
    canceled = {a.account_id for a in truth.accounts if a.churns}
    assert canceled and all(snaps[a]["metrics"]["canceled"] for a in canceled)

    report_path = tmp_path / "report.json"
    out = cli(s, "evaluate", str(truth_path), "--days-before", "7", "--json", str(report_path)).stdout
    assert "AUC" in out and "bottom decile" in out
    report = json.loads(report_path.read_text())["report"]
    assert report["accounts"] == 30 and report["scored"] == 30
    assert report["churners"] == len(canceled)
    assert report["auc"] is not None and report["auc"] > 0.6  # the score ranks churners lower
    assert worker.alive(), worker.log_tail()
