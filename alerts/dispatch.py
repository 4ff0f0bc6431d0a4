"""Aggregation groups and their timers (group_wait, group_interval, repeat_interval). Pure: ``now`` is
passed in. Which Kafka offsets a group still holds is tracked here too, so the worker commits only
what has been delivered (or deliberately dropped): a restart re-reads the rest."""

from __future__ import annotations

from dataclasses import dataclass, field

from rules.model import AlertEvent

from .config import Receiver
from .model import Notification
from .routing import RouteMatch

Position = tuple[int, int]  # (partition, offset)


@dataclass
class Group:
    key: str
    match: RouteMatch
    labels: dict[str, str]
    created: float
    alerts: dict[str, AlertEvent] = field(default_factory=dict)
    positions: set[Position] = field(default_factory=set)
    last_flush: float | None = None
    changed: bool = True
    next_attempt: float = 0.0
    attempts: int = 0
    inflight: bool = False

    def due(self, now: float) -> bool:
        if self.inflight or now < self.next_attempt or not self.alerts:
            return False
        if self.last_flush is None:
            return now >= self.created + self.match.group_wait
        if self.changed:
            return now >= self.last_flush + self.match.group_interval
        firing = any(a.status == "firing" for a in self.alerts.values())
        return firing and now >= self.last_flush + self.match.repeat_interval


@dataclass
class Dispatcher:
    groups: dict[str, Group] = field(default_factory=dict)
    #: position -> how many groups still hold it
    holds: dict[Position, int] = field(default_factory=dict)

    def add(
        self,
        alert: AlertEvent | None,
        matches: list[tuple[RouteMatch, str, dict[str, str]]],
        pos: Position,
        now: float,
    ) -> None:
        """File an alert into its groups; with no match (or no alert) the position is done at once."""
        for match, key, labels in matches:
            assert alert is not None
            g = self.groups.get(key)
            if g is None:
                g = self.groups[key] = Group(key, match, labels, created=now)
            known = g.alerts.get(alert.alert_id)
            if known is not None and known.status == "resolved" and alert.status == "firing":
                continue  # a replayed firing after its resolution: the resolution stands
            g.alerts[alert.alert_id] = alert
            g.changed = True
            if pos not in g.positions:
                g.positions.add(pos)
                self.holds[pos] = self.holds.get(pos, 0) + 1
        if not matches:
            self.holds.setdefault(pos, 0)

    def due(self, now: float) -> list[Group]:
        return [g for g in self.groups.values() if g.due(now)]

    def notification(self, g: Group, receiver: Receiver) -> Notification:
        firing = [a for a in g.alerts.values() if a.status == "firing"]
        resolved = [a for a in g.alerts.values() if a.status == "resolved"] if receiver.send_resolved else []
        return Notification(
            receiver=receiver.name, group_key=g.key, group_labels=g.labels, firing=firing, resolved=resolved
        )

    def done(self, g: Group, now: float) -> None:
        """The group's current content is delivered (or dropped on purpose): release what it holds."""
        g.last_flush = now
        g.changed = False
        g.attempts = 0
        g.next_attempt = 0.0
        for alert_id in [i for i, a in g.alerts.items() if a.status == "resolved"]:
            del g.alerts[alert_id]
        for pos in g.positions:
            self.holds[pos] -= 1
        g.positions.clear()
        if not g.alerts:
            del self.groups[g.key]

    def committable(self, consumed: dict[int, int]) -> dict[int, int]:
        """Per partition, the offset to commit: the oldest still held, else one past the last consumed."""
        for pos in [p for p, n in self.holds.items() if n <= 0]:
            del self.holds[pos]
        out = {}
        for partition, last in consumed.items():
            held = [off for (p, off) in self.holds if p == partition]
            out[partition] = min(held) if held else last + 1
        return out
