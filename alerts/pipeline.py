"""The delivery pipeline for one flush of one group: silence -> dedupe -> wait -> rate -> retry -> send.

Each stage is a small unit (Alertmanager's notify/ package is the model). The group timers (group_wait,
group_interval, repeat_interval) live in the dispatcher; ``wait`` here honours a receiver's Retry-After,
``rate`` is the receiver's limit: in production a GCRA bucket in Redis shared by every ``deliver``
process (alerts/ratelimit.py), in-process (aiolimiter) for a single process without Redis. Time comes
from an injected clock, so tests drive it with a fake one.
"""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Protocol

from aiolimiter import AsyncLimiter

from alerts.config import Receiver
from alerts.dispatch import Snapshot
from alerts.model import Notification
from alerts.notifiers import Notifier, RetryableError
from alerts.routing import alert_labels
from alerts.store import DeliveryStore, Silence
from rules.model import AlertEvent


class Clock(Protocol):
    def time(self) -> float:
        """Wall-clock seconds (epoch)."""
        ...

    async def sleep(self, seconds: float) -> None: ...


class LoopClock:
    """Epoch time that advances with the event loop's clock: real in production, fake under a
    fast-forwarding loop (looptime) in tests, and the same clock aiolimiter reads."""

    def __init__(self, epoch: float | None = None) -> None:
        self.epoch = epoch
        self._anchor: float | None = None

    def time(self) -> float:
        loop_now = asyncio.get_running_loop().time()
        if self._anchor is None:
            self._anchor = (time.time() if self.epoch is None else self.epoch) - loop_now
        return self._anchor + loop_now

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(max(0.0, seconds))


def backoff(attempt: int, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


@dataclass
class Flush:
    """What a flush works on, narrowed stage by stage."""

    snap: Snapshot
    receiver: Receiver
    firing: list[AlertEvent]
    resolved: list[AlertEvent]
    #: firing keys held back by a silence -> until when
    silenced: dict[str, float] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    #: firing keys of episodes that already resolved (replayed records): dropped, never sent
    stale: list[str] = field(default_factory=list)
    accounts: dict[str, dict[str, str]] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)

    def notification(self) -> Notification:
        g = self.snap.group
        return Notification(
            receiver=self.receiver.name,
            group_key=g.key,
            group_labels=g.labels,
            firing=self.firing,
            resolved=self.resolved,
            new=self.new,
            accounts=self.accounts,
            tasks=self.tasks,
        )


async def silence_stage(f: Flush, silences: list[Silence], now: float) -> list[tuple[str, str]]:
    """Hold back what an active silence matches; firing alerts are snoozed until it ends.
    Returns (alert_id, silence_id) pairs for the record."""
    hits: list[tuple[str, str]] = []
    keep: list[AlertEvent] = []
    for a in f.firing:
        matching = [s for s in silences if s.matches(alert_labels(a), now)]
        if matching:
            f.silenced[a.alert_id] = max(s.ends_at for s in matching)
            hits.append((a.alert_id, matching[0].id))
        else:
            keep.append(a)
    f.firing = keep
    resolved = []
    for a in f.resolved:
        hit = next((s for s in silences if s.matches(alert_labels(a), now)), None)
        if hit is None:
            resolved.append(a)
        else:
            hits.append((a.alert_id, hit.id))
    f.resolved = resolved
    return hits


async def dedupe_stage(f: Flush, store: DeliveryStore, repeat_interval: float, now: float) -> bool:
    """No firing of an episode that already resolved (a replayed record), no resolution for what was
    never notified (Alertmanager's rule), none at all when the receiver says ``send_resolved: false``;
    then send only if something is new or the repeat is due."""
    if f.firing:
        closed = await store.closed(f.snap.group.key, [a.alert_id for a in f.firing])
        f.stale = [a.alert_id for a in f.firing if a.alert_id in closed]
        f.firing = [a for a in f.firing if a.alert_id not in closed]
    if not f.receiver.send_resolved:
        f.resolved = []
    elif f.resolved:
        told = await store.notified(f.snap.group.key, [a.alert_id for a in f.resolved])
        f.resolved = [a for a in f.resolved if a.alert_id in told]
    if not f.firing and not f.resolved:
        return False
    told = await store.last_firing(f.snap.group.key)
    f.new = [a.alert_id for a in f.firing if a.alert_id not in told]
    return await store.needs_update(f.notification(), repeat_interval, now)


class Limiter(Protocol):
    async def acquire(self) -> None:
        """Return when one more send is allowed."""
        ...


@dataclass
class ReceiverGate:
    """Per receiver: the rate limit and a pause a 429's Retry-After asks for (the ``wait`` stage)."""

    limiter: Limiter
    paused_until: float = 0.0

    @classmethod
    def for_rate(cls, rate_per_s: float) -> ReceiverGate:
        # aiolimiter's bucket holds max_rate units: below one a second, count one per 1/rate seconds
        if rate_per_s >= 1:
            return cls(AsyncLimiter(rate_per_s, 1.0))
        return cls(AsyncLimiter(1, 1.0 / rate_per_s))

    async def wait_stage(self, clock: Clock) -> None:
        while (delay := self.paused_until - clock.time()) > 0:
            await clock.sleep(delay)

    async def rate_stage(self) -> None:
        await self.limiter.acquire()


async def send_stage(notifier: Notifier, n: Notification) -> None:
    await notifier.notify(n)


@dataclass(frozen=True)
class Failed:
    """A send that failed and is to be tried again at ``at``."""

    at: float
    #: The receiver may have got it all the same (see RetryableError).
    maybe_delivered: bool


async def retry_stage(
    gate: ReceiverGate, notifier: Notifier, n: Notification, clock: Clock, attempt: int, cap: float
) -> Failed | None:
    """Send once; on a retryable failure say when to try again (a 429 pauses the whole receiver).
    PermanentError propagates: retrying cannot help."""
    try:
        await send_stage(notifier, n)
    except RetryableError as exc:
        if exc.retry_after is not None:
            delay = min(exc.retry_after, cap)
            gate.paused_until = max(gate.paused_until, clock.time() + delay)
        else:
            delay = backoff(attempt + 1, cap)
        return Failed(clock.time() + delay, exc.maybe_delivered)
    return None
