"""Event-time orchestration for the accounts of one worker: fold, score, evaluate rules, schedule.

Pure (no Kafka, no Redis, no clock): the Faust agent and ``healthmon rules test`` both drive it, so a
rule test runs exactly the code that runs in production.

Engine time is per input partition: the highest event time seen there (and, in live mode, the wall
clock, which the agent passes in). Every account has a ``next_due`` time: the next UTC midnight (all
windows move by whole days) or an earlier rule timer (``for``, ``keep_firing_for``, ``cooldown``). Due
times sit in one heap per partition, so advancing the clock touches only accounts that are due, and an
account that sends nothing is still re-evaluated when, say, 14 days without a login have passed.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from rules.engine import RuleSet, evaluate, next_rule_due
from rules.model import AlertEvent

from .aggregate import apply_event
from .events import BaseEvent
from .scoring import ScoringConfig
from .snapshot import HealthChange, HealthSnapshot, assess, remember
from .state import DAY_S, AccountState


@dataclass
class Evaluation:
    snapshot: HealthSnapshot
    change: HealthChange | None
    alerts: list[AlertEvent]


@dataclass
class Engine:
    scoring: ScoringConfig
    rules: RuleSet
    dedupe_window: int = 64
    clocks: dict[int, int] = field(default_factory=dict)
    schedule: dict[int, list[tuple[int, str]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.key_features = frozenset(self.scoring.metrics.key_features)

    def apply(self, state: AccountState, event: BaseEvent, partition: int) -> bool:
        state.partition = partition
        return apply_event(state, event, key_features=self.key_features, dedupe_window=self.dedupe_window)

    def clock(self, partition: int) -> int:
        return self.clocks.get(partition, 0)

    def advance(self, partition: int, t: int) -> None:
        if t > self.clocks.get(partition, 0):
            self.clocks[partition] = t

    def evaluate(self, state: AccountState, as_of: int) -> Evaluation:
        """Score the account at ``as_of`` and advance its rules; reschedules it."""
        as_of = max(as_of, state.last_eval_at or 0)  # an account's time never runs backwards
        snapshot, change = assess(state, as_of, self.scoring)
        remember(state, snapshot, change)
        alerts = evaluate(self.rules, snapshot, state.rules, as_of)
        state.last_eval_at = as_of
        due = (as_of // DAY_S + 1) * DAY_S
        rule_due = next_rule_due(self.rules, state.rules, as_of)
        state.next_due = due if rule_due is None else min(due, rule_due)
        if state.partition is not None:
            heapq.heappush(self.schedule.setdefault(state.partition, []), (state.next_due, state.account_id))
        return Evaluation(snapshot, change, alerts)

    def next_due(self, partition: int) -> int | None:
        heap = self.schedule.get(partition)
        return heap[0][0] if heap else None

    def pop_due(self, partition: int, until: int) -> Iterator[tuple[str, int]]:
        """Accounts due at or before ``until``, earliest first. Entries may be stale: check next_due."""
        heap = self.schedule.get(partition)
        while heap and heap[0][0] <= until:
            due, account_id = heapq.heappop(heap)
            yield account_id, due

    def rebuild(self, states: Iterable[AccountState], partitions: set[int]) -> None:
        """After a rebalance or recovery: the schedule of the partitions this worker now owns."""
        self.schedule = {p: [] for p in partitions}
        for st in states:
            if st.partition in partitions and st.next_due is not None:
                self.schedule[st.partition].append((st.next_due, st.account_id))
        for heap in self.schedule.values():
            heapq.heapify(heap)


@dataclass
class Watermarks:
    """The event time a partition has safely reached across its input topics.

    The five topics of one partition are fetched side by side, so one of them may be hours of event
    time ahead of another (a replay, a lagging producer). Due times are only run up to the *lowest*
    latest event time among the topics that still have unread messages; a topic that is caught up
    (nothing left to read) does not hold time back, or a quiet topic would stop the clock forever.
    """

    latest: dict[tuple[str, int], int] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def seen(self, topic: str, partition: int, offset: int, ts: int | None) -> None:
        """Record a message read (``ts`` None for one that was rejected: it still counts as read)."""
        key = (topic, partition)
        if ts is not None and ts > self.latest.get(key, -1):
            self.latest[key] = ts
        self.offsets[key] = offset

    def low(
        self, partition: int, topics: Iterable[str], highwater: Callable[[str, int], int | None]
    ) -> int | None:
        """The partition's low watermark, or None while a topic with unread data has shown no event yet."""
        lows: list[int] = []
        highs: list[int] = []
        for topic in topics:
            key = (topic, partition)
            ts = self.latest.get(key)
            if ts is not None:
                highs.append(ts)
            hw = highwater(topic, partition)
            caught_up = hw is not None and self.offsets.get(key, -1) + 1 >= hw
            if not caught_up:
                if ts is None:
                    return None
                lows.append(ts)
        if lows:
            return min(lows)
        return max(highs) if highs else None


@dataclass
class HeldWatermark:
    """Releases a partition's watermark only after it has been seen for ``hold_s`` of wall time.

    A producer writing to several topics sends one batch per partition, so a message can land after
    messages of other topics with later event times; and an empty topic cannot hold time back. Holding
    the watermark for a moment lets such stragglers in before due times are run (which cannot be undone).
    ``now`` is passed in: this class reads no clock.
    """

    hold_s: float
    #: Per partition, watermarks offered and not released yet, oldest first. In live mode nearly
    #: every event offers one, so a hold's worth of them queue here: popped from the left in O(1).
    pending: dict[int, deque[tuple[float, int]]] = field(default_factory=dict)
    released: dict[int, int] = field(default_factory=dict)

    def offer(self, partition: int, wm: int, now: float) -> None:
        queue = self.pending.setdefault(partition, deque())
        if wm > (queue[-1][1] if queue else self.released.get(partition, -1)):
            queue.append((now, wm))

    def effective(self, partition: int, now: float) -> int | None:
        queue = self.pending.get(partition)
        while queue and queue[0][0] <= now - self.hold_s:
            self.released[partition] = queue.popleft()[1]
        return self.released.get(partition)
