"""`healthmon shadow` through the broker: a simulated history in the input topics is re-scored with a
scorecard whose weights differ; the shadow topic gets the new run's snapshots, cs.health and cs.alerts
get nothing, and the report's differences match two offline runs of the driver computed here."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest
import yaml

from rules.engine import load_rules
from rules.model import AlertEvent
from streams.broker.tail import count_records, read_to_end
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import DEFAULT_SCORECARD, load_scoring
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from streams.settings import Settings
from streams.sim.simulate import Simulator
from tests.conftest import run_cli
from tests.helpers import produce_events, setup_topics

pytestmark = pytest.mark.kafka

END = datetime(2026, 3, 1, tzinfo=UTC)


cli = run_cli


def reweighted(path: Path) -> Path:
    """The default scorecard with usage nearly ignored and support dominant (a weight change only)."""
    card = yaml.safe_load(DEFAULT_SCORECARD.read_text())
    comps = card["default"]["components"]
    comps["usage"]["weight"] = 5
    comps["support"]["weight"] = 70
    for seg in (card.get("segments") or {}).values():
        for name, comp in (seg.get("components") or {}).items():
            if name in ("usage", "support"):
                comp["weight"] = comps[name]["weight"]
    path.write_text(yaml.safe_dump(card, sort_keys=False))
    return path


def offline(
    events: list, card: Path | None
) -> tuple[Counter[tuple[bytes, bytes]], set[str], dict[str, str | None]]:
    """One run of the driver: snapshot (key, value) multiset, firing episodes, latest band per account."""
    snaps: Counter[tuple[bytes, bytes]] = Counter()
    firing: set[str] = set()
    latest: dict[str, tuple[str, str | None]] = {}

    def collect(out: Output) -> None:
        for name, key, value, _ in out.records:
            if name == "health":
                snaps[(key, value)] += 1
                snap = orjson.loads(value)
                if snap["account_id"] not in latest or snap["as_of"] >= latest[snap["account_id"]][0]:
                    latest[snap["account_id"]] = (snap["as_of"], snap["band"])
            elif name == "alerts":
                alert = AlertEvent.model_validate_json(value)
                if alert.status == "firing":  # an episode: the same start under both is the same one
                    # (its alert id also counts earlier episodes, which a scorecard may change)
                    firing.add(f"{alert.rule_id}|{alert.account_id}|{alert.active_since}|{alert.starts_at}")

    run_offline(events, Engine(load_scoring(card), load_rules(None)), on_output=collect)
    return snaps, firing, {acc: band for acc, (_, band) in latest.items()}


async def test_shadow_rescore_writes_only_the_shadow_topic_and_reports_the_differences(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    await setup_topics(s)
    raw = list(Simulator(16, 75, 5, END).events())
    await produce_events(s, raw)
    card = reweighted(tmp_path / "reweighted.yaml")

    result = cli(s, "shadow", "--scorecard", str(card), "--json", str(tmp_path / "report.json"))
    assert result.returncode == 0, result.stderr
    report = orjson.loads((tmp_path / "report.json").read_bytes())

    # Independently: the same history scored offline, twice (the events as the simulator made them).
    events = sorted((EVENT_ADAPTER.validate_python(e) for e in raw), key=lambda e: e.occurred_at)
    cur_snaps, cur_firing, cur_bands = offline(events, None)
    new_snaps, new_firing, new_bands = offline(events, card)
    assert cur_firing != new_firing, "the test needs a scorecard change that changes some alert"

    # The shadow topic holds exactly the new run's snapshots, with the header contract and the label.
    shadow = [m async for m in read_to_end(s, s.topic("health_shadow"))]
    assert Counter((m.key, m.value) for m in shadow) == new_snaps != cur_snaps
    headers = dict(shadow[0].headers)
    assert headers["healthmon.kind"] == b"health" and headers["healthmon.shadow"] == str(card).encode()
    assert report["snapshots"] == len(shadow) and report["events"] == len(raw) and report["invalid"] == 0

    # Nothing live was written: no alerts, no snapshots, no changes.
    assert await count_records(s, s.topic("alerts"), s.topic("health"), s.topic("health_changes")) == 0

    # Per rule: episodes only under one scorecard (an episode is its account, rule and start).
    for rule in {a.split("|")[0] for a in cur_firing | new_firing}:
        row = next(r for r in report["rules"] if r["rule_id"] == rule)
        cur = {a for a in cur_firing if a.startswith(rule + "|")}
        new = {a for a in new_firing if a.startswith(rule + "|")}
        assert (row["current"], row["new"]) == (len(cur), len(new)), rule
        assert (len(row["only_current"]), len(row["only_new"])) == (len(cur - new), len(new - cur)), rule
    assert len(report["rules"]) == len({a.split("|")[0] for a in cur_firing | new_firing})
    changed = {acc for acc in cur_bands.keys() | new_bands.keys() if cur_bands.get(acc) != new_bands.get(acc)}
    assert {b["account_id"] for b in report["band_changes"]} == changed
    assert "no alerts sent" in result.stdout
