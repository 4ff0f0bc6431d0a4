"""``healthmon shadow``: re-score the stream's history with a new scorecard, without sending anything.

So a CS team can change weights (or rules) without fear: the input topics are read to their end
(:mod:`streams.history`), and the history is scored twice through the production partition driver
offline (:func:`streams.driver.run_offline`) -- once with the configuration in force (HEALTHMON_SCORECARD
and HEALTHMON_RULES, as the worker loads them) and once with the new one. The new run's snapshots go to
the shadow topic (``cs.health.shadow``, same value schema and headers as cs.health plus
``healthmon.shadow``); its alerts go nowhere, they are only compared.

Both sides are re-scored rather than comparing against what cs.alerts holds: that topic reflects whatever
scorecard and rules were in force when each record was written, and retention may have dropped part of
it, so only two runs over the same history isolate the change being tried.

The comparison (pure, :func:`diff`): per rule, alert episodes (account, rule, episode start) found only
under the current or only under the new configuration; accounts whose latest band differs; and when
each account first turns red (:func:`streams.evaluate.red_differences`, shared with
``evaluate --scorecard``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson
from pydantic import BaseModel

from streams.broker import clients as kafka_clients
from streams.broker.admin import ensure_topic, shadow_topic_spec
from streams.broker.headers import event_time_header, output_headers
from streams.core.events import BaseEvent
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from streams.settings import Settings
from streams.sim.evaluate import History, red_differences


@dataclass
class Run:
    """What one offline run produced: episodes, per-account band history, and its snapshots."""

    #: (rule, account, episode start, fired at), epoch seconds.
    episodes: set[tuple[str, str, int, int]] = field(default_factory=set)
    history: History = field(default_factory=History)
    #: account -> (as_of, band) of its latest snapshot.
    latest: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    #: (key, value, event time ms) of every snapshot, in the order the driver made them.
    snapshots: list[tuple[bytes, bytes, int]] = field(default_factory=list)

    def collect(self, out: Output) -> None:
        for name, key, value, ts_ms in out.records:
            if name == "health":
                self.snapshots.append((key, value, ts_ms))
                snap = orjson.loads(value)
                as_of = int(datetime.fromisoformat(snap["as_of"]).timestamp())
                prev = self.latest.get(snap["account_id"])
                if prev is None or as_of >= prev[0]:
                    self.latest[snap["account_id"]] = (as_of, snap.get("band"))
                self.history.add_snapshot(value)
            elif name == "alerts":
                alert = orjson.loads(value)
                if alert["status"] == "firing":
                    self.episodes.add(
                        (
                            alert["rule_id"],
                            alert["account_id"],
                            _epoch(alert["active_since"]),
                            _epoch(alert["starts_at"]),
                        )
                    )


def _epoch(iso: str) -> int:
    return int(datetime.fromisoformat(iso).timestamp())


def rescore(events: Iterable[BaseEvent], engine: Engine, until_ms: int | None = None) -> Run:
    """One run of the production driver over ``events`` (in event-time order)."""
    run = Run()
    run_offline(events, engine, until_ms=until_ms, on_output=run.collect)
    run.history.finish()
    return run


class Episode(BaseModel):
    account_id: str
    active_since: datetime
    starts_at: datetime


class RuleDiff(BaseModel):
    rule_id: str
    current: int  # episodes under the current configuration
    new: int
    only_current: list[Episode]
    only_new: list[Episode]


class BandChange(BaseModel):
    account_id: str
    current: str | None
    new: str | None


class RedChange(BaseModel):
    account_id: str
    current: datetime | None  # first moment in red under the current configuration
    new: datetime | None


class ShadowReport(BaseModel):
    events: int
    invalid: int
    snapshots: int  # written to the shadow topic (the new run's)
    shadow_topic: str | None
    rules: list[RuleDiff]
    band_changes: list[BandChange]  # latest band per account, where it differs
    red: dict[str, list[RedChange]]  # only_new / only_old / earlier / later


def _dt(ts: int | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC)


def _only(rule: str, a: dict[tuple[str, str, int], int], b: dict[tuple[str, str, int], int]) -> list[Episode]:
    """Episodes of ``rule`` in ``a`` (key -> fired at) that ``b`` lacks, by account and start."""
    keys = sorted((k for k in a if k[0] == rule and k not in b), key=lambda k: (k[1], k[2]))
    return [
        Episode(
            account_id=k[1],
            active_since=datetime.fromtimestamp(k[2], UTC),
            starts_at=datetime.fromtimestamp(a[k], UTC),
        )
        for k in keys
    ]


def diff(current: Run, new: Run) -> tuple[list[RuleDiff], list[BandChange], dict[str, list[RedChange]]]:
    """Per rule, the episodes one run has and the other has not (an episode is the same when account,
    rule and start agree); accounts whose latest band differs; first-red differences."""
    cur = {e[:3]: e[3] for e in current.episodes}
    nxt = {e[:3]: e[3] for e in new.episodes}
    rules: list[RuleDiff] = []
    for rule in sorted({k[0] for k in cur} | {k[0] for k in nxt}):
        rules.append(
            RuleDiff(
                rule_id=rule,
                current=sum(1 for k in cur if k[0] == rule),
                new=sum(1 for k in nxt if k[0] == rule),
                only_current=_only(rule, cur, nxt),
                only_new=_only(rule, nxt, cur),
            )
        )
    bands = [
        BandChange(account_id=acc, current=c, new=n)
        for acc in sorted(set(current.latest) | set(new.latest))
        if (c := current.latest.get(acc, (0, None))[1]) != (n := new.latest.get(acc, (0, None))[1])
    ]
    red = {
        kind: [RedChange(account_id=acc, current=_dt(a), new=_dt(b)) for acc, a, b in rows]
        for kind, rows in red_differences(current.history, new.history).items()
    }
    return rules, bands, red


def render(report: ShadowReport, name: str) -> str:
    """The report for people: one line per rule, then the band changes."""
    lines = [
        f"re-scored {report.events} events ({report.invalid} invalid left out) with {name}; "
        + (
            f"{report.snapshots} snapshots written to {report.shadow_topic}"
            if report.shadow_topic
            else "nothing written"
        )
        + "; no alerts sent",
        f"  {'rule':<28}{'current':>8}{'new':>8}{'only current':>14}{'only new':>10}",
    ]
    for r in report.rules:
        lines.append(
            f"  {r.rule_id:<28}{r.current:>8}{r.new:>8}{len(r.only_current):>14}{len(r.only_new):>10}"
        )
    red = report.red
    lines.append(
        f"  latest band differs for {len(report.band_changes)} accounts; first red: "
        f"{len(red['only_new'])} only new, {len(red['only_old'])} only current, "
        f"{len(red['earlier'])} earlier, {len(red['later'])} later"
    )
    for b in report.band_changes[:20]:
        lines.append(f"    {b.account_id}: {b.current or '-'} -> {b.new or '-'}")
    if len(report.band_changes) > 20:
        lines.append(f"    ... and {len(report.band_changes) - 20} more (--json has them all)")
    return "\n".join(lines)


# --- the Kafka side ---------------------------------------------------------------------------------


async def publish(s: Settings, snapshots: Iterable[tuple[bytes, bytes, int]], label: str) -> tuple[str, int]:
    """Write the new run's snapshots to the shadow topic (created if missing), with cs.health's header
    contract plus ``healthmon.shadow: <label>``; nothing else is produced anywhere."""
    spec = shadow_topic_spec(s)
    await ensure_topic(s, spec)
    producer = kafka_clients.bulk_producer(s, f"{s.app_id}-shadow")
    await kafka_clients.started(producer)
    sent = 0
    try:
        for key, value, ts_ms in snapshots:
            headers = output_headers("health")
            headers += [event_time_header(ts_ms), ("healthmon.shadow", label.encode())]
            await producer.send(spec.name, value=value, key=key, headers=headers)
            sent += 1
        await producer.flush()
    finally:
        await producer.stop()
    return spec.name, sent
