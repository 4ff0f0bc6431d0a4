"""Rule evaluation: the pending -> firing -> resolved state machine per (account, rule).

Pure: the event time ``t`` is passed in, state is a plain list per rule kept in the account's
changelogged state, so a restart neither re-fires nor forgets. Alert ids are derived from
(account, rule, episode start), so replays and restarts produce the same ids.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

from rules.context import rule_context
from rules.expr import Compiled
from rules.model import AlertEvent, Rule, RuleFile
from streams.config import ConfigError, load_yaml
from streams.core.snapshot import HealthSnapshot

DEFAULT_RULES = Path(__file__).with_name("default")

# Rule state: [status, active_since, fired_at, last_true, resolved_at, episode]
INACTIVE, PENDING, FIRING = 0, 1, 2
RULE_STATE_LEN = 6
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

    @cached_property
    def superseding(self) -> tuple[tuple[Rule, tuple[Rule, ...]], ...]:
        """The rules that supersede others, each with those of them in the set (the evaluation then
        has a second pass)."""
        by_id = {r.id: r for r in self.rules}
        return tuple(
            (r, tuple(by_id[o] for o in r.supersedes if o in by_id)) for r in self.rules if r.supersedes
        )


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
    by_id = {r.id: r for r in rules}
    for rule in rules:
        for other in rule.supersedes:
            if other in by_id and rule.id in by_id[other].supersedes:
                raise ConfigError(f"{sources[rule.id]}: rules {rule.id!r} and {other!r} supersede each other")
    return RuleSet(tuple(rules), sources)


def alert_id(account_id: str, rule_id: str, active_since: int, episode: int = 0) -> str:
    """Deterministic per episode: replays and restarts give the same id, a new episode a new one
    (the episode number separates two episodes that start at one clamped evaluation time)."""
    digest = hashlib.sha256(f"{account_id}\x00{rule_id}\x00{active_since}\x00{episode}".encode()).hexdigest()
    return digest[:24]


def _dt(ts: int) -> datetime:
    return datetime.fromtimestamp(ts, UTC)


class SummaryFormatter(string.Formatter):
    """Formats a rule summary whatever the values: a missing value prints "n/a" and a format spec
    that does not fit the value's type falls back to the plain value, so a summary can never
    stop an alert from being built (specs are also checked when the rules are loaded)."""

    def format_field(self, value: Any, format_spec: str) -> str:
        if value is None:
            return "n/a"
        if isinstance(value, float) and not format_spec:
            value = round(value, 2)
        try:
            return super().format_field(value, format_spec)
        except (ValueError, TypeError):
            return str(value)


SUMMARY = SummaryFormatter()


def _summary(rule: Rule, ctx: dict[str, Any], name: str | None) -> str:
    if rule.summary is None:
        return f"{name or ctx.get('account_id', '')}: {rule.description}"
    return SUMMARY.format(rule.summary, **{**ctx, "account": name or ""})


def _ended_summary(rule: Rule, snapshot: HealthSnapshot, ended_by: str, by: str | None = None) -> str:
    """A resolution's line, true when it is sent: the rule's own summary describes the firing
    ("is red: health 52") and would be false of the account now."""
    who = snapshot.account.name or snapshot.account_id
    if ended_by == "cancelled":
        return f"{who}: account cancelled; closed: {rule.description}"
    score = "n/a" if snapshot.score is None else SUMMARY.format("{0}", snapshot.score)
    if ended_by == "superseded":
        return f"{who}: superseded by {by}: {rule.description}; health {score} ({snapshot.band or 'unknown'})"
    return f"{who}: no longer: {rule.description}; health {score} ({snapshot.band or 'unknown'})"


def _alert(
    rule: Rule,
    snapshot: HealthSnapshot,
    ctx: dict[str, Any],
    st: list[int],
    status: str,
    t: int,
    ended_by: str | None = None,
    superseded_by: str | None = None,
) -> AlertEvent:
    return AlertEvent(
        alert_id=alert_id(snapshot.account_id, rule.id, st[1], st[5]),
        rule_id=rule.id,
        account_id=snapshot.account_id,
        status=status,  # type: ignore[arg-type]
        severity=rule.severity,
        active_since=_dt(st[1]),
        starts_at=_dt(st[2]),
        ends_at=_dt(t) if status == "resolved" else None,
        ended_by=ended_by,  # type: ignore[arg-type]
        summary=_summary(rule, ctx, snapshot.account.name)
        if ended_by is None
        else _ended_summary(rule, snapshot, ended_by, superseded_by),
        description=rule.description,
        action=rule.action.step,
        playbook=rule.action if rule.action.tracked else None,
        supersedes=list(rule.supersedes),
        labels={"severity": rule.severity, "rule": rule.id, **rule.labels},
        values={f: ctx.get(f) for f in rule.condition.fields},
        score=snapshot.score,
        band=snapshot.band,
        drivers=snapshot.drivers,
        account=snapshot.account,
    )


def evaluate(
    ruleset: RuleSet, snapshot: HealthSnapshot, states: dict[str, list[int]], t: int
) -> tuple[dict[str, list[int]], list[AlertEvent]]:
    """Advance every rule's state to event time ``t``.

    Transactional: ``states`` is not touched; the new states come back with the alerts they imply,
    and the caller keeps both or neither, so a rule is firing only together with its alert."""
    ctx = rule_context(snapshot)
    canceled = bool(ctx.get("canceled"))
    out: list[AlertEvent] = []
    new: dict[str, list[int]] = {}
    for rule, condition in zip(ruleset.rules, ruleset.conditions, strict=True):
        old = states.get(rule.id)
        st = [*old, *[0] * (RULE_STATE_LEN - len(old))] if old is not None else [INACTIVE, 0, 0, 0, 0, 0]
        new[rule.id] = st
        if t < st[3] or t < st[1]:
            continue  # never move a rule back in time (a late evaluation)
        holds = condition(ctx)
        status = st[0]
        if holds:
            st[3] = t
            if status == INACTIVE:
                if rule.cooldown and st[4] and t < st[4] + rule.cooldown:
                    continue
                st[0], st[1], st[5] = PENDING, t, st[5] + 1
                status = PENDING
            if status == PENDING and t - st[1] >= rule.for_:
                st[0], st[2] = FIRING, t
                out.append(_alert(rule, snapshot, ctx, st, "firing", t))
        elif status == PENDING:
            st[0] = INACTIVE
        elif status == FIRING and (t >= st[3] + rule.keep_firing_for or canceled):
            # keep_firing_for damps flapping; a canceled account does not flap back: its other
            # alerts resolve at once instead of staying open for days beside the cancellation.
            st[0], st[4] = INACTIVE, t
            if rule.send_resolved:
                ended_by = "cancelled" if canceled else "recovered"
                out.append(_alert(rule, snapshot, ctx, st, "resolved", t, ended_by))
    if ruleset.superseding:
        out = _supersede(ruleset, snapshot, ctx, new, out, t)
    for stale in states.keys() - ruleset.ids:  # a rule removed by a reload: its episode ends
        st = states[stale]
        if st[0] == FIRING:
            out.append(_orphan_resolved(stale, snapshot, st, t))
    return new, out


def _supersede(
    ruleset: RuleSet,
    snapshot: HealthSnapshot,
    ctx: dict[str, Any],
    states: dict[str, list[int]],
    out: list[AlertEvent],
    t: int,
) -> list[AlertEvent]:
    """One crossing, one episode: while a rule is firing, the rules it supersedes hold no episode of
    their own. A firing one resolves as ``superseded`` (right after the firing that took it over; its
    cooldown runs from then), a pending one goes back to inactive (after the superseding episode it
    must hold its whole ``for`` again), and one that would have fired at this very evaluation does
    not."""
    for rule, others in ruleset.superseding:
        if states[rule.id][0] != FIRING:
            continue
        for other in others:
            st = states[other.id]
            if st[0] == INACTIVE:
                continue
            fired_now = [a for a in out if a.rule_id == other.id and a.status == "firing"]
            if st[0] == PENDING or fired_now:
                out = [a for a in out if not any(a is f for f in fired_now)]
                st[0] = INACTIVE
                continue
            st[0], st[4] = INACTIVE, t
            if other.send_resolved:
                ended = _alert(other, snapshot, ctx, st, "resolved", t, "superseded", rule.id)
                at = next(
                    (i + 1 for i, a in enumerate(out) if a.rule_id == rule.id and a.status == "firing"),
                    len(out),
                )
                out.insert(at, ended)
    return out


def _orphan_resolved(rule_id: str, snapshot: HealthSnapshot, st: list[int], t: int) -> AlertEvent:
    """The resolution of a firing episode whose rule no longer exists (removed by a reload), so
    that delivery stops re-notifying it."""
    episode = st[5] if len(st) > 5 else 0
    return AlertEvent(
        alert_id=alert_id(snapshot.account_id, rule_id, st[1], episode),
        rule_id=rule_id,
        account_id=snapshot.account_id,
        status="resolved",
        severity="info",
        active_since=_dt(st[1]),
        starts_at=_dt(st[2]),
        ends_at=_dt(max(t, st[2])),
        ended_by="rule_removed",
        summary=f"{snapshot.account.name or snapshot.account_id}: rule {rule_id} was removed",
        description=f"The rule {rule_id} was removed from the rule pack; its alert is closed.",
        action="None: the rule no longer exists.",
        labels={"severity": "info", "rule": rule_id, "reason": "rule_removed"},
        values={},
        score=snapshot.score,
        band=snapshot.band,
        drivers=snapshot.drivers,
        account=snapshot.account,
    )


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
