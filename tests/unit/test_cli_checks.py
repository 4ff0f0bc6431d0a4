"""Operator-facing CLI behaviour that needs no broker: bad configuration is one line naming file, line
and field (never a traceback); `scorecard check`; `rules check` reports every bad file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from rules.engine import DEFAULT_RULES
from streams.core.scoring import DEFAULT_SCORECARD

ROOT = Path(__file__).resolve().parents[2]
BAD_SCORECARD = "version: 1\ndefault:\n  components: {}\n  bands: {red: abc}\n"


def cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("HEALTHMON_")}
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env={**base, "HEALTHMON_PROGRESS": "0", **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_scorecard_check(tmp_path: Path) -> None:
    ok = cli("scorecard", "check")
    assert ok.returncode == 0 and f"{DEFAULT_SCORECARD}: OK" in ok.stdout
    bad = tmp_path / "card.yaml"
    bad.write_text(BAD_SCORECARD)
    for done in (
        cli("scorecard", "check", str(bad)),
        cli("scorecard", "check", HEALTHMON_SCORECARD=str(bad)),
    ):
        assert done.returncode == 1 and "Traceback" not in done.stderr
        assert f"{bad}:3: default.components:" in done.stderr
        assert f"{bad}:4: default.bands.red: Extra inputs are not permitted" in done.stderr


def test_evaluate_with_a_bad_scorecard_names_file_line_and_field(tmp_path: Path) -> None:
    events = tmp_path / "base.jsonl"
    made = cli("simulate", "--accounts", "2", "--days", "7", "--end", "2026-11-01", "--out", str(events))
    assert made.returncode == 0, made.stderr
    bad = tmp_path / "card.yaml"
    bad.write_text(BAD_SCORECARD)
    truth = tmp_path / "base.truth.json"
    done = cli("evaluate", str(truth), "--events", str(events), HEALTHMON_SCORECARD=str(bad))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert done.stderr.startswith("Error: invalid configuration:\n")
    assert f"{bad}:4: default.bands.red" in done.stderr


def test_a_bad_setting_names_the_variable() -> None:
    done = cli("topics", "list", HEALTHMON_PARTITIONS="0")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "bad setting: HEALTHMON_PARTITIONS: Input should be greater than or equal to 1" in done.stderr
    sasl = cli("topics", "list", HEALTHMON_KAFKA_SECURITY_PROTOCOL="SASL_SSL")
    assert sasl.returncode == 1 and "HEALTHMON_KAFKA_SASL_USERNAME" in sasl.stderr


def test_rules_check_reports_every_bad_file(tmp_path: Path) -> None:
    pack = tmp_path / "rules"
    shutil.copytree(DEFAULT_RULES, pack)
    (pack / "a_missing_fields.yaml").write_text("rules:\n  - id: x\n")
    (pack / "b_not_yaml.yaml").write_text("rules: : :\n")
    (pack / "c_duplicate.yaml").write_text((DEFAULT_RULES / "usage.yaml").read_text())
    done = cli("rules", "check", str(pack))
    assert done.returncode == 1
    assert f"error: {pack}/a_missing_fields.yaml:2: rules.0.when: Field required" in done.stderr
    assert f"error: {pack}/b_not_yaml.yaml:1: not valid YAML" in done.stderr
    assert f"error: {pack}/usage.yaml: rule id" in done.stderr  # the duplicate, sorted after c_
    assert done.stdout.startswith("7 error(s); ")  # the two bad files + the 5 ids defined twice
    good = cli("rules", "check")
    assert good.returncode == 0 and "rules OK" in good.stdout


def test_evaluate_names_the_bad_line_of_an_input_file(tmp_path: Path) -> None:
    events = tmp_path / "base.jsonl"
    assert (
        cli(
            "simulate", "--accounts", "2", "--days", "7", "--end", "2026-11-01", "--out", str(events)
        ).returncode
        == 0
    )
    truth = tmp_path / "base.truth.json"
    bad_events = tmp_path / "bad.jsonl"
    bad_events.write_text(events.read_text().splitlines()[0] + '\n{"type": "login"}\n')
    done = cli("evaluate", str(truth), "--events", str(bad_events))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert f"Error: {bad_events}:2: login.event_id: Field required" in done.stderr
    not_json = tmp_path / "not.jsonl"
    not_json.write_text("nope\n")
    done = cli("evaluate", str(truth), "--events", str(not_json))
    assert done.returncode == 1 and f"{not_json}:1: not JSON" in done.stderr
    bad_truth = tmp_path / "truth.json"
    bad_truth.write_text("{}")
    done = cli("evaluate", str(bad_truth), "--events", str(events))
    assert (
        done.returncode == 1 and f"{bad_truth}: not a ground-truth file: seed: Field required" in done.stderr
    )


def test_the_tasks_command_offers_every_task_state() -> None:
    from typing import get_args

    from streams.cli.tasks import STATES
    from streams.tasks.model import TaskState

    assert STATES == get_args(TaskState)
