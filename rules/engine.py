"""Rule evaluation: the pending -> firing -> resolved state machine per (account, rule).

Pure: the event time ``t`` is passed in, state is a plain list per rule kept in the account's
changelogged state, so a restart neither re-fires nor forgets. Alert ids are derived from
(account, rule, episode start), so replays and restarts produce the same ids.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from streams.config import ConfigError, load_yaml
from streams.snapshot import HealthSnapshot

from .context import rule_context
from .expr import Compiled
from .model import AlertEvent, Rule, RuleFile

DEFAULT_RULES = Path(__file__).with_name("default")

# Rule state: [status, active_since, fired_at, last_true, resolved_at]
INACTIVE, PENDING, FIRING = 0, 1, 2
STATUS_NAMES = {INACTIVE: "inactive", PENDING: "pending", FIRING: "firing"}


@dataclass(frozen=True)
class RuleSet:
    rules: tuple[Rule, ...]
    sources: dict[str, str]  # rule id -> file

    @cached_property
    def ids(self) -> frozenset[str]:
        return frozenset(r.id for r in self.rules)

    @cached_property
    def conditions(self) -> tuple[Compiled, ...]:
        """The compiled conditions, aligned with ``rules`` (read per evaluation: a rule's private
        attribute goes through pydantic's slow ``__getattr__``)."""
        return tuple(r.condition for r in self.rules)


def rule_files(path: Path) -> list[Path]:
    if path.is_dir():
        return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())
    return [path]


def load_rules(path: Path | str | None = None) -> RuleSet:
    """Load a rule file or every ``*.yaml`` in a folder; ids must be unique across files."""
    root = Path(path) if path is not None else DEFAULT_RULES
    if not root.exists():
        raise ConfigError(f"{root}: no such rule file or folder")
    rules: list[Rule] = []
    sources: dict[str, str] = {}
    for file in rule_files(root):
        for rule in load_yaml(file, RuleFile).rules:
            if rule.id in sources:
                raise ConfigError(f"{file}: rule id {rule.id!r} is already defined in {sources[rule.id]}")
            sources[rule.id] = str(file)
            rules.append(rule)
    return RuleSet(tuple(rules), sources)


def alert_id(account_id: str, rule_id: str, active_since: int) -> str:
    digest = hashlib.sha256(f"{account_id}\x00{rule_id}\x00{active_since}".encode()).hexdigest()
    return digest[:24]


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


def _summary(rule: Rule, ctx: dict[str, Any], name: str | None) -> str:
    if rule.summary is None:
        return f"{name or ctx.get('account_id', '')}: {rule.description}"
    values = {k: ("n/a" if v is None else round(v, 2) if isinstance(v, float) else v) for k, v in ctx.items()}
    return rule.summary.format(account=name or "", **values)


def _alert(
    rule: Rule, snapshot: HealthSnapshot, ctx: dict[str, Any], st: list[int], status: str, t: int
) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id(snapshot.account_id, rule.id, st[1]),
        rule_id=rule.id,
        account_id=snapshot.account_id,
        status=status,  # type: ignore[arg-type]
        severity=rule.severity,
        active_since=_dt(st[1]),
        starts_at=_dt(st[2]),
        ends_at=_dt(t) if status == "resolved" else None,
        summary=_summary(rule, ctx, snapshot.account.name),
        description=rule.description,
        action=rule.action,
        labels={"severity": rule.severity, "rule": rule.id, **rule.labels},
        values={f: ctx.get(f) for f in rule.condition.fields},
        score=snapshot.score,
        band=snapshot.band,
        drivers=snapshot.drivers,
        account=snapshot.account,
    )


def evaluate(
    ruleset: RuleSet, snapshot: HealthSnapshot, states: dict[str, list[int]], t: int
) -> list[AlertEvent]:
    """Advance every rule's state to event time ``t``; returns the firing/resolved alerts to publish."""
    ctx = rule_context(snapshot)
    out: list[AlertEvent] = []
    for rule, condition in zip(ruleset.rules, ruleset.conditions, strict=True):
        st = states.get(rule.id)
        if st is None:
            st = states[rule.id] = [INACTIVE, 0, 0, 0, 0]
        if t < st[3] or t < st[1]:
            continue  # never move a rule back in time (a late evaluation)
        holds = condition(ctx)
        status = st[0]
        if holds:
            st[3] = t
            if status == INACTIVE:
                if rule.cooldown and st[4] and t < st[4] + rule.cooldown:
                    continue
                st[0], st[1] = PENDING, t
                status = PENDING
            if status == PENDING and t - st[1] >= rule.for_:
                st[0], st[2] = FIRING, t
                out.append(_alert(rule, snapshot, ctx, st, "firing", t))
        elif status == PENDING:
            st[0] = INACTIVE
        elif status == FIRING and t >= st[3] + rule.keep_firing_for:
            st[0], st[4] = INACTIVE, t
            if rule.send_resolved:
                out.append(_alert(rule, snapshot, ctx, st, "resolved", t))
    for stale in states.keys() - ruleset.ids:  # a rule removed by a reload: forget its state
        del states[stale]
    return out


def next_rule_due(ruleset: RuleSet, states: dict[str, list[int]], t: int) -> int | None:
    """The earliest time after ``t`` at which a rule timer (for, keep_firing_for, cooldown) expires."""
    due: int | None = None
    for rule in ruleset.rules:
        st = states.get(rule.id)
        if st is None:
            continue
        candidates = []
        if st[0] == PENDING:
            candidates.append(st[1] + rule.for_)
        elif st[0] == FIRING and rule.keep_firing_for:
            candidates.append(st[3] + rule.keep_firing_for)
        elif st[0] == INACTIVE and rule.cooldown and st[4]:
            candidates.append(st[4] + rule.cooldown)
        for c in candidates:
            if c > t and (due is None or c < due):
                due = c
    return due
