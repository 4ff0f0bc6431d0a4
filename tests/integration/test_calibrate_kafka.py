"""`healthmon calibrate` reading the history from the input topics learns the same scorecard, with the
same validation report, as from the equivalent event file."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from streams.core.scoring import load_scoring
from streams.settings import Settings
from streams.sim.simulate import Simulator
from tests.conftest import run_cli
from tests.helpers import produce_events, setup_topics

pytestmark = pytest.mark.kafka


cli = run_cli


async def test_calibrate_from_kafka_equals_calibrate_from_the_file(kafka_settings: Settings, tmp_path: Path):
    s = kafka_settings
    await setup_topics(s)
    events = list(Simulator(40, 80, 4, datetime(2026, 6, 30, tzinfo=UTC)).events())
    path = tmp_path / "sim.jsonl"
    path.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in events))
    await produce_events(s, events)

    from_file = cli(s, "calibrate", str(path), "--out", str(tmp_path / "file.yaml"))
    assert from_file.returncode == 0, from_file.stderr
    from_kafka = cli(s, "calibrate", "--out", str(tmp_path / "kafka.yaml"))  # no file: the topics
    assert from_kafka.returncode == 0, from_kafka.stderr
    assert f"read {len(events)} records from the input topics (0 invalid left out)" in from_kafka.stderr

    assert (tmp_path / "kafka.yaml").read_text() == (tmp_path / "file.yaml").read_text()
    report = orjson.loads((tmp_path / "kafka.report.json").read_bytes())
    assert report == orjson.loads((tmp_path / "file.report.json").read_bytes())
    assert report["measures"] and report["train_auc"] is not None
    assert load_scoring(tmp_path / "kafka.yaml").default.components
    # the summary lines (observations, AUCs, bands) agree too, apart from the file names
    assert from_kafka.stdout.replace("kafka.", "X.") == from_file.stdout.replace("file.", "X.")

    both = cli(s, "calibrate", str(path), "--from-kafka", "--out", str(tmp_path / "x.yaml"))
    assert both.returncode == 2 and "not both" in both.stderr
