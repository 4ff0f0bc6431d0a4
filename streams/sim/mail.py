"""What each CSM would really receive, day by day: the simulator's history through the worker's own
partition driver, then delivery's own routing, groups and timers on *event* time, rendered by the email
notifier's templates (``healthmon mail-preview``).

A live demo cannot show this: it replays weeks of history in minutes, while ``healthmon deliver`` groups
on the wall clock, so the whole history arrives as a couple of digests. Here every timer (group_wait,
group_interval, repeat_interval) runs on the replayed time, and the figures in a digest are the
account's latest snapshot at the moment it is sent, as the read model would hold them.

Offline and deterministic; no Kafka, Redis or SMTP. The dedupe rules are the pipeline's
(alerts/pipeline.py ``dedupe_stage``): a resolution only for a firing that went out, and a group is sent
again only when something new fires or resolves, or its repeat is due. Silences, rate limits and
retries are left out: they depend on people and receivers, not on the history.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson

from alerts.config import EmailConfig, RoutingConfig
from alerts.digest import snapshot_figures
from alerts.dispatch import Dispatcher, Group
from alerts.model import Notification
from alerts.notifiers.email import build_message, recipients
from alerts.routing import alert_labels, group_key, route_alert
from rules.engine import RuleSet
from rules.model import AlertEvent
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import ScoringConfig
from streams.engine.driver import Output, run_offline
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator


@dataclass(frozen=True)
class Mail:
    """One email a receiver would get."""

    sent_at: datetime  # event time
    receiver: str
    to: tuple[str, ...]
    subject: str
    text: str
    firing: int
    resolved: int


@dataclass
class _History:
    """The simulated history's alerts, and each account's snapshots in time order."""

    alerts: list[AlertEvent]
    snapshots: dict[str, list[tuple[float, dict[str, Any]]]]

    def figures(self, account_id: str, at: float) -> dict[str, str]:
        """The account's latest snapshot at ``at``, as ``DeliveryStore.account_figures`` reads it."""
        latest = None
        for t, snap in self.snapshots.get(account_id, ()):
            if t > at:
                break
            latest = snap
        if latest is None:
            return {}
        metrics = latest.get("metrics") or {}
        got = {
            "score": "" if latest.get("score") is None else str(latest["score"]),
            "band": latest.get("band") or "",
            "mrr": str(metrics.get("mrr") or ""),
            "name": (latest.get("account") or {}).get("name") or "",
        }
        got = {k: v for k, v in got.items() if v}
        got.update(snapshot_figures(latest))
        return got


def replay_history(sim: Simulator, scoring: ScoringConfig, rules: RuleSet) -> _History:
    alerts: list[AlertEvent] = []
    snapshots: dict[str, list[tuple[float, dict[str, Any]]]] = defaultdict(list)

    def collect(o: Output) -> None:
        for name, _, value, _ in o.records:
            if name == "alerts":
                alerts.append(AlertEvent.model_validate_json(value))
            elif name == "health":
                snap = orjson.loads(value)
                t = datetime.fromisoformat(snap["as_of"].replace("Z", "+00:00")).timestamp()
                snapshots[snap["account_id"]].append((t, snap))

    events = [EVENT_ADAPTER.validate_python(raw) for raw in sim.events()]
    run_offline(events, Engine(scoring, rules), on_output=collect)
    for series in snapshots.values():
        series.sort(key=lambda x: x[0])
    return _History(alerts, snapshots)


def _when(a: AlertEvent) -> float:
    return (a.ends_at or a.starts_at).timestamp()


class MailPreview:
    """Delivery's dispatcher driven on event time, collecting the email each flush would send."""

    def __init__(self, routing: RoutingConfig, rules: RuleSet, history: _History) -> None:
        self.routing = routing
        #: Rules that never resolve their alerts: notified once, not repeated (as DeliveryWorker.once_keys).
        self.once_rules = {r.id for r in rules.rules if not r.send_resolved}
        self.history = history
        self.dispatcher = Dispatcher()
        self.receivers = {r.name: r for r in routing.receivers}
        self.last_firing: dict[str, set[str]] = {}
        self.last_sent: dict[str, float] = {}
        self.mail: list[Mail] = []
        #: The replayed clock: a flush overdue when an alert arrives goes out then, not in the past.
        self.now = 0.0

    def run(self, until: float) -> list[Mail]:
        for pos, alert in enumerate(sorted(self.history.alerts, key=_when)):
            t = _when(alert)
            self._flush_until(t)
            self.now = max(self.now, t)
            labels = alert_labels(alert)
            matches = [(m, group_key(m, labels), labels) for m in route_alert(self.routing, labels)]
            self.dispatcher.add(alert, matches, (0, pos), self.now)
        self._flush_until(until)
        return self.mail

    def _flush_until(self, t: float) -> None:
        while True:
            due = [(g.next_due(t), g.key, g) for g in self.dispatcher.groups.values()]
            ready = sorted((at, key, g) for at, key, g in due if at is not None and at <= t)
            if not ready:
                return
            at, _, g = ready[0]
            self.now = max(self.now, at)
            self._flush(g, self.now)

    def _flush(self, g: Group, now: float) -> None:
        snap = self.dispatcher.snapshot(g)
        receiver = self.receivers[g.match.receiver]
        firing = snap.firing
        notified = {k for k, e in g.entries.items() if e.notified}
        resolved = [a for a in snap.resolved if a.alert_id in notified] if receiver.send_resolved else []
        told = self.last_firing.get(g.key, set())
        fresh = {a.alert_id for a in firing} - told
        repeat = bool(firing) and now >= self.last_sent.get(g.key, 0.0) + g.match.repeat_interval
        once = {a.alert_id for a in firing if a.rule_id in self.once_rules}
        if not (fresh or resolved or repeat):
            self.dispatcher.done(snap, now, sent=set(), once=once)
            return
        n = Notification(
            receiver=receiver.name,
            group_key=g.key,
            group_labels=g.labels,
            firing=firing,
            resolved=resolved,
            new=sorted(fresh),
            accounts={
                aid: self.history.figures(aid, now) for aid in {a.account_id for a in firing + resolved}
            },
        )
        self.last_firing[g.key] = {a.alert_id for a in firing}
        self.last_sent[g.key] = now
        self.dispatcher.done(snap, now, sent={a.alert_id for a in n.alerts}, once=once)
        config = receiver.email or EmailConfig(to=["account_csm"])
        to = recipients(config, n)
        msg = build_message(config, n, to, self.routing.link_base_url)
        self.mail.append(
            Mail(
                sent_at=datetime.fromtimestamp(now, UTC),
                receiver=receiver.name,
                to=tuple(to),
                subject=str(msg["Subject"]),
                text=msg.get_body(("plain",)).get_content(),  # type: ignore[union-attr]
                firing=len(firing),
                resolved=len(resolved),
            )
        )


@dataclass(frozen=True)
class Volume:
    """Emails per person and day, over the days each person got any and over every day."""

    people: int
    days: int
    emails: int
    per_person_day: float
    median_on_mail_days: float
    busiest_day: int


def per_person_day(mail: list[Mail]) -> dict[tuple[str, date], int]:
    per: dict[tuple[str, date], int] = defaultdict(int)
    for m in mail:
        for addr in m.to:
            per[addr, m.sent_at.date()] += 1
    return dict(per)


def busiest(mail: list[Mail], csms: set[str]) -> tuple[str, date] | None:
    """The CSM who got the most mail, and that CSM's busiest day (ties: the first in order)."""
    per = {k: n for k, n in per_person_day(mail).items() if k[0] in csms}
    if not per:
        return None
    totals: dict[str, int] = defaultdict(int)
    for (addr, _), n in per.items():
        totals[addr] += n
    person = min(totals, key=lambda p: (-totals[p], p))
    day = min((d for a, d in per if a == person), key=lambda d: (-per[person, d], d))
    return person, day


def volume(mail: list[Mail], days: int) -> Volume:
    per = per_person_day(mail)
    people = {addr for addr, _ in per}
    total = sum(per.values())
    return Volume(
        people=len(people),
        days=days,
        emails=total,
        per_person_day=total / max(1, len(people) * days),
        median_on_mail_days=statistics.median(per.values()) if per else 0.0,
        busiest_day=max(per.values(), default=0),
    )


def day_of(mail: list[Mail], person: str, day: date) -> list[Mail]:
    return [m for m in mail if person in m.to and m.sent_at.date() == day]
