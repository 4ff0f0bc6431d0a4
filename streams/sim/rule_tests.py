"""``healthmon rules test``: promtool-style unit tests for rules, run on the production engine.

A test file (YAML)::

    rule_files: [../default]          # relative to this file (default: the shipped pack)
    start: 2026-01-05T00:00:00Z       # time 0 of every test (default)
    tests:
      - name: a silent account alerts on day 14
        account: {segment: smb}       # overrides of the generated account profile
        events:                       # contract v1 events; `at` is an offset from start
          - {at: 0d, type: subscription, mrr: "100", plan: team, seats: 5, renewal_date: "2027-01-01"}
          - {at: 1d9h, type: login, user_id: u1, every: 1d, until: 5d9h, users: 3}
        until: 30d                    # let event time run on to here, as a live worker's clock would
        expect:                       # exactly these alerts (of the rules listed in `rules`, if given)
          - {rule: no_login_14d, status: firing, at: 19d}
        absent: [nps_detractor]       # and these never alert

The events run through the worker's own partition driver (streams/engine/driver.py): evaluations happen
where the worker makes them (once per evaluation slot with events, at the latest event's time, and
at due times), so a rule test shows what production fires.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from rules.engine import load_rules
from rules.model import AlertEvent, Duration, format_duration
from streams.config import load_yaml
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import load_scoring
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine

DEFAULT_START = datetime(2026, 1, 5, tzinfo=UTC)  # a Monday


class EventSpec(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    at: Duration
    type: str
    every: Duration | None = None
    until: Duration | None = None
    users: int | None = Field(default=None, ge=1, le=10_000)


class ExpectedAlert(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule: str
    status: str = Field(pattern="^(firing|resolved)$")
    at: Duration


class RuleTest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    account: dict[str, Any] = Field(default_factory=dict)
    events: list[EventSpec] = Field(default_factory=list)
    until: Duration | None = None
    expect: list[ExpectedAlert] = Field(default_factory=list)
    absent: list[str] = Field(default_factory=list)
    rules: list[str] | None = None


class RuleTestFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rule_files: list[str] = Field(default_factory=list)
    scorecard: str | None = None
    start: AwareDatetime = DEFAULT_START
    tests: list[RuleTest] = Field(min_length=1)


class TestResult(BaseModel):
    name: str
    passed: bool
    problems: list[str]
    alerts: list[tuple[str, str, str]]


def _expand(spec: EventSpec, start: datetime, account_id: str, seq: itertools.count) -> list[dict]:
    fields = dict(spec.model_extra or {})
    times = [spec.at]
    if spec.every:
        end = spec.until if spec.until is not None else spec.at
        times = list(range(spec.at, end + 1, spec.every))
    out = []
    for t in times:
        for u in range(spec.users or 1):
            ev = {
                "event_id": f"test-{next(seq)}",
                "account_id": account_id,
                "type": spec.type,
                "occurred_at": (start + timedelta(seconds=t)).isoformat(),
                **fields,
            }
            if spec.users:
                ev["user_id"] = f"u{u}"
            out.append(ev)
    return out


def run_test(test: RuleTest, engine: Engine, start: datetime) -> TestResult:
    account_id = str(test.account.get("account_id", "acct-1"))
    seq = itertools.count()
    profile = {
        "event_id": "test-profile",
        "account_id": account_id,
        "type": "account",
        "occurred_at": (start - timedelta(days=1)).isoformat(),
        "name": account_id,
        "segment": "smb",
        "csm_name": "Test CSM",
        "csm_email": "csm@example.com",
        "signed_up_at": (start - timedelta(days=30)).isoformat(),
        **{k: v for k, v in test.account.items() if k != "account_id"},
    }
    raw = [profile] + [ev for spec in test.events for ev in _expand(spec, start, account_id, seq)]
    events = sorted((EVENT_ADAPTER.validate_python(e) for e in raw), key=lambda e: e.occurred_at)
    alerts: list[AlertEvent] = []

    def collect(out: Output) -> None:
        alerts.extend(AlertEvent.model_validate_json(v) for name, _, v, _ in out.records if name == "alerts")

    until_ms = None if test.until is None else (int(start.timestamp()) + test.until) * 1000
    run_offline(events, engine, until_ms=until_ms, on_output=collect)

    t0 = int(start.timestamp())

    def offset(a) -> int:
        when = a.starts_at if a.status == "firing" else a.ends_at
        return int(when.timestamp()) - t0

    seen = [(a.rule_id, a.status, offset(a)) for a in alerts]
    considered = [s for s in seen if test.rules is None or s[0] in test.rules]
    wanted = [(e.rule, e.status, e.at) for e in test.expect]
    problems = []
    for w in wanted:
        if w not in considered:
            problems.append(f"expected {w[0]} {w[1]} at {format_duration(w[2])}: not seen")
    for s in considered:
        if s not in wanted:
            problems.append(f"unexpected {s[0]} {s[1]} at {format_duration(s[2])}")
    for rule in test.absent:
        if any(s[0] == rule for s in seen):
            problems.append(f"{rule} must not alert, but did")
    return TestResult(
        name=test.name,
        passed=not problems,
        problems=problems,
        alerts=[(r, st, format_duration(t)) for r, st, t in seen],
    )


def run_file(path: Path | str) -> list[TestResult]:
    path = Path(path)
    spec = load_yaml(path, RuleTestFile)
    sources: list[Path | None] = [path.parent / f for f in spec.rule_files] or [None]
    rulesets = [load_rules(src) for src in sources]
    rules = rulesets[0]
    for extra in rulesets[1:]:
        rules = type(rules)(rules.rules + extra.rules, {**rules.sources, **extra.sources})
    scoring = load_scoring(path.parent / spec.scorecard if spec.scorecard else None)
    unknown = {
        r for t in spec.tests for r in [*t.absent, *(t.rules or []), *(e.rule for e in t.expect)]
    } - rules.ids
    if unknown:
        from streams.config import ConfigError

        raise ConfigError(f"{path}: unknown rule id(s) {sorted(unknown)}")
    return [run_test(t, Engine(scoring, rules), spec.start) for t in spec.tests]
