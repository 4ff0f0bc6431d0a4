"""Aggregation groups and their timers (group_wait, group_interval, repeat_interval). Pure: ``now`` is
passed in.

Like Alertmanager's dispatcher, a flush works on a *snapshot* of its group and, once delivered, releases
only what that snapshot held (its ``DeleteIfNotModified``): an alert added or updated while the message
was being sent stays in the group, with its Kafka offset held, for the next flush. The worker commits an
offset only when no group holds it any more, so a restart re-reads exactly what was not yet delivered.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from alerts.routing import RouteMatch
from rules.model import AlertEvent

Position = tuple[int, int]  # (partition, offset)


@dataclass
class Entry:
    """One alert episode in one group: its latest event, and the records not yet released."""

    alert: AlertEvent
    version: int
    positions: set[Position] = field(default_factory=set)
    #: The episode's firing went out in this group (so its resolution may be sent too).
    notified: bool = False
    #: Held back by a silence until then (snoozed, not dropped).
    silenced_until: float | None = None
    #: When the entry last changed (wall clock): firing alerts nobody refreshes expire.
    updated: float = 0.0


@dataclass
class Group:
    key: str
    match: RouteMatch
    labels: dict[str, str]
    created: float
    entries: dict[str, Entry] = field(default_factory=dict)
    last_flush: float | None = None
    #: Bumped on every change; a flush that delivered version v leaves the group changed if it moved on.
    version: int = 0
    flushed_version: int = -1
    next_attempt: float = 0.0
    attempts: int = 0
    inflight: bool = False

    @property
    def alerts(self) -> dict[str, AlertEvent]:
        return {k: e.alert for k, e in self.entries.items()}

    @property
    def changed(self) -> bool:
        return self.version != self.flushed_version

    def snooze_due(self, now: float) -> bool:
        """A silence ended while its alert still fires: notify now (the alert was snoozed, not dropped)."""
        return any(
            e.silenced_until is not None and now >= e.silenced_until and e.alert.status == "firing"
            for e in self.entries.values()
        )

    def next_due(self, now: float) -> float | None:
        """When the group is next due if nothing else arrives (None: not while it stays as it is),
        so a replay on event time can jump from one flush to the next instead of polling."""
        if self.inflight or not self.entries:
            return None
        if self.last_flush is None:
            at = self.created + self.match.group_wait
        elif self.changed or self.snooze_due(now):
            at = self.last_flush + self.match.group_interval
        elif any(a.status == "firing" for a in self.alerts.values()):
            at = self.last_flush + self.match.repeat_interval
        else:
            return None
        return max(at, self.next_attempt)

    def due(self, now: float) -> bool:
        at = self.next_due(now)
        return at is not None and now >= at


@dataclass(frozen=True)
class Snapshot:
    """What one flush of a group sends: entry versions and the positions it may release."""

    group: Group
    version: int
    entries: dict[str, tuple[int, AlertEvent, frozenset[Position]]]

    @property
    def firing(self) -> list[AlertEvent]:
        return [a for _, a, _ in self.entries.values() if a.status == "firing"]

    @property
    def resolved(self) -> list[AlertEvent]:
        return [a for _, a, _ in self.entries.values() if a.status == "resolved"]


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
        """File an alert into its groups; with no match (or no alert) the position is done at once.

        An alert id is one episode (the engine numbers them), so a firing read after its own
        resolution is a replayed record (the engine publishes at least once): it is done at once and
        never overwrites the resolution. This holds in every process alike: it needs no memory of
        earlier records (a closed episode delivered earlier is recognised from Redis at flush)."""
        if alert is not None and matches:
            self.account_partition[alert.account_id] = pos[0]
        for match, key, labels in matches:
            assert alert is not None
            g = self.groups.get(key)
            entry = g.entries.get(alert.alert_id) if g is not None else None
            if entry is not None and alert.status == "firing" and entry.alert.status == "resolved":
                self.holds.setdefault(pos, 0)
                continue
            if g is None:
                g = self.groups[key] = Group(key, match, labels, created=now)
            g.version += 1
            if entry is None:
                entry = g.entries[alert.alert_id] = Entry(alert, g.version)
            entry.alert, entry.version, entry.updated = alert, g.version, now
            if pos not in entry.positions:
                entry.positions.add(pos)
                self.holds[pos] = self.holds.get(pos, 0) + 1
        if not matches:
            self.holds.setdefault(pos, 0)

    def due(self, now: float) -> list[Group]:
        return [g for g in self.groups.values() if g.due(now)]

    def snapshot(self, g: Group) -> Snapshot:
        return Snapshot(
            g, g.version, {k: (e.version, e.alert, frozenset(e.positions)) for k, e in g.entries.items()}
        )

    def release(self, g: Group, key: str, positions: frozenset[Position] | set[Position]) -> None:
        entry = g.entries.get(key)
        if entry is None:
            return
        for pos in positions & entry.positions:
            entry.positions.discard(pos)
            self.holds[pos] -= 1

    def drop(self, g: Group, key: str) -> None:
        """Forget an entry (delivered resolution, expired, orphaned), releasing all it holds."""
        entry = g.entries.get(key)
        if entry is None:
            return
        self.release(g, key, set(entry.positions))
        del g.entries[key]

    def done(
        self,
        snap: Snapshot,
        now: float,
        sent: set[str],
        held: set[str] = frozenset(),  # type: ignore[assignment]
        once: set[str] = frozenset(),  # type: ignore[assignment]
    ) -> None:
        """The snapshot is delivered (or deliberately not sent): release what it held and nothing more.

        ``sent``: keys whose event went out; ``held``: firing keys kept back (silenced) that keep their
        offsets until delivered; ``once``: firing keys not to repeat (the rule never resolves them)."""
        g = snap.group
        g.last_flush = now
        g.attempts = 0
        g.next_attempt = 0.0
        g.flushed_version = snap.version  # changed again only if something arrived since the snapshot
        for key, (version, alert, positions) in snap.entries.items():
            entry = g.entries.get(key)
            if entry is None:
                continue
            if key in sent and alert.status == "firing":
                entry.notified = True
                entry.silenced_until = None
            if key not in held:
                self.release(g, key, positions)
            if entry.version != version:
                continue  # modified since the snapshot: the next flush handles it
            if alert.status == "resolved" or key in once:
                self.drop(g, key)
        if not g.entries and self.groups.get(g.key) is g:
            del self.groups[g.key]

    def failed(self, g: Group, retry_at: float) -> None:
        g.attempts += 1
        g.next_attempt = retry_at

    def expire(self, now: float, ttl: float) -> int:
        """Drop firing entries nobody refreshed for ``ttl`` seconds (a rule removed, never resolved)."""
        n = 0
        for g in list(self.groups.values()):
            if g.inflight:
                continue
            for key, e in list(g.entries.items()):
                if e.alert.status == "firing" and now - e.updated >= ttl and not e.positions:
                    self.drop(g, key)
                    n += 1
            if not g.entries:
                del self.groups[g.key]
        return n

    def revoke(self, partitions: set[int]) -> None:
        """Partitions moved to another consumer: forget their alerts (the new owner re-reads them)."""
        for g in list(self.groups.values()):
            for key, e in list(g.entries.items()):
                if any(p in partitions for p, _ in e.positions) or (
                    not e.positions and e.alert.account_id in self._accounts_of(partitions)
                ):
                    self.drop(g, key)
            if not g.entries and not g.inflight:
                del self.groups[g.key]
        for pos in [p for p in self.holds if p[0] in partitions]:
            del self.holds[pos]

    #: account -> partition, learned from positions (an account's alerts share a partition)
    account_partition: dict[str, int] = field(default_factory=dict)

    def _accounts_of(self, partitions: set[int]) -> set[str]:
        return {a for a, p in self.account_partition.items() if p in partitions}

    def committable(self, consumed: dict[int, int]) -> dict[int, int]:
        """Per partition, the offset to commit: the oldest still held, else one past the last consumed."""
        for pos in [p for p, n in self.holds.items() if n <= 0]:
            del self.holds[pos]
        oldest: dict[int, int] = {}
        for p, off in self.holds:
            if off < oldest.get(p, off + 1):
                oldest[p] = off
        return {partition: oldest.get(partition, last + 1) for partition, last in consumed.items()}
