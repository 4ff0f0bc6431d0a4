"""The event-time driver of one input partition: records in; states, outputs and acks out.

Pure and clock-injected (no Kafka, no Redis, no clock reads: ``now`` is passed in). The Faust agent,
``healthmon rules test`` and offline scoring all run it, so a rule test runs production code.

Why it exists: the five input topics of a partition are fetched side by side, so one can be hours of
event time ahead of another, and how far depends on fetch timing. The driver merges them into one
sequence ordered by ``(event time, topic, offset)`` and advances the partition's clock along it:

- A record is taken from the merge only when no topic can still deliver an earlier one: each topic
  either has a record waiting (its head is later) or is *idle* (read up to its end offset, and the
  record has waited ``hold_s`` of wall time for stragglers, or in live mode is older than the wall clock
  minus ``live_lateness_s``). A topic that has unread records but delivers none for ``max_block_s``
  while other topics do is treated as idle (``forced_releases`` counts it), so a stuck topic delays,
  never stalls, the rest; when no topic delivers (a broker outage) time waits.
- Evaluations happen at times that depend only on the merged sequence: an account is evaluated once
  per evaluation slot (``slot_s`` of event time) in which it had events, at the time of its latest event
  there, when the merge passes the slot's end; and at its due times (midnights, rule timers), after
  every event at or before them. So a replay gives the same alert episodes and snapshots whether it was
  paced, flat out, produced topic by topic, or interrupted.
- Each state records the input offset it has folded per topic: a redelivered record is skipped
  exactly. A record is acked only after the state it changed is handed out for writing.

A record that cannot be parsed, is too large, or lies outside the accepted event-time range becomes a
dead letter with a reason, in its place in the sequence (so acks stay in offset order).
"""

from __future__ import annotations

import heapq
import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import orjson

from streams import compat
from streams.core.events import BaseEvent, InvalidEvent, parse_event
from streams.core.metrics import NO_PREVIOUS, AccountMetrics, Portfolio, PortfolioBuilder
from streams.core.scoring import check_portfolio
from streams.core.state import DAY_S, INPUT_KINDS, AccountState, StateBrief, decode_brief
from streams.engine.engine import Engine

log = logging.getLogger("healthmon.driver")

N_KINDS = len(INPUT_KINDS)
NEVER = -(1 << 62)
#: Keys in the ``accounts`` table that hold no account: a partition's frozen portfolio (no account id
#: starts with a NUL byte; every iteration over states skips them).
RESERVED_PREFIX = "\x00"


_S = TypeVar("_S", AccountState, StateBrief)


#: Days of frozen portfolios a partition keeps besides the one in force (a ring of table keys), for a
#: restart whose merge replays time before the latest midnight (see ``PartitionDriver._portfolio_at``).
PORTFOLIO_RING = 32


def portfolio_key(partition: int, day: int | None = None) -> str:
    """The key of the partition's portfolio in force, or of the one frozen at midnight ``day`` (s)."""
    if day is None:
        return f"{RESERVED_PREFIX}portfolio/{partition}"
    return f"{RESERVED_PREFIX}portfolio/{partition}/{day // DAY_S % PORTFOLIO_RING}"


@dataclass(frozen=True)
class DriverConfig:
    #: Event-time slot (ms) within which an account's events share one evaluation.
    slot_ms: int = 3_600_000
    #: Wall time (s) a record waits for stragglers on idle topics before it may be processed.
    hold_s: float = 2.0
    #: Live mode, once the stream is within ``live_within_s`` of the wall clock: idle topics release
    #: event time up to the wall clock minus ``live_lateness_s``, and slots are ``live_slot_ms``.
    #: A stream further behind (a backlog, a replay of history) runs on event time alone.
    live: bool = False
    live_within_s: float = 60.0
    live_lateness_s: float = 0.05
    live_slot_ms: int = 50
    #: A topic with unread records that delivers nothing for this long stops holding time back (s).
    max_block_s: float = 30.0
    #: More records than this waiting in a partition: the earliest is released (memory bound).
    max_buffered: int = 100_000
    #: Accepted event-time range: not older than this before the wall clock, not further ahead.
    max_age_s: float = 3650 * DAY_S
    max_future_s: float = 3600.0
    #: Records larger than this are dead-lettered unread (a valid event is well under 10 KB).
    max_record_bytes: int = 256 * 1024
    #: Evaluations (and states read to freeze the daily portfolio) one step may run; None: no limit.
    #: A step that reaches it stops before anything later in the merge and reports ``paused``; the
    #: caller steps again. So a UTC midnight, when every account of the partition is due, is spread
    #: over many short steps instead of one that blocks the worker's event loop for minutes.
    step_budget: int | None = None


@dataclass(slots=True)
class Record:
    """One input record as read from Kafka; ``handle`` is the caller's token, returned in acks."""

    kind: int
    offset: int
    key: bytes | None
    value: bytes | None
    handle: Any = None


@dataclass(slots=True)
class DeadLetter:
    record: Record
    reason: str


@dataclass(slots=True)
class Output:
    """What one step produced, in the order the caller must make it durable: ``records`` and
    ``dead_letters`` first (flushed), then ``states`` (flushed), then ``acks``."""

    #: (output name: "health" | "changes" | "alerts" | "errors", key, value, event time ms)
    records: list[tuple[str, bytes, bytes, int]] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    #: Changed account states, and the partition's portfolio under its reserved key (first, when the
    #: step froze one) -- each with ``dumps()``, all written to the table's changelog.
    states: dict[str, AccountState | Portfolio] = field(default_factory=dict)
    acks: list[Any] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.records or self.dead_letters or self.states or self.acks)


@dataclass
class DriverStats:
    """Counters the caller exports as metrics."""

    processed: int = 0
    redelivered: int = 0
    duplicates: int = 0
    late: int = 0
    dead_letters: int = 0
    evaluations: int = 0
    evaluation_errors: int = 0
    forced_releases: int = 0
    #: Records that arrived after a hole in their topic's offsets and were set aside (they come
    #: again once the caller has re-read the hole), and holes found.
    gap_discarded: int = 0
    gaps: int = 0
    #: Steps that stopped at ``step_budget`` with work left.
    paused_steps: int = 0
    #: Evaluations replayed after a restart at a time whose portfolio the partition no longer keeps.
    portfolio_misses: int = 0
    #: Events processed by (topic kind, event type), and dead letters by reason class.
    by_type: dict[tuple[str, str], int] = field(default_factory=dict)
    dead_by_reason: dict[str, int] = field(default_factory=dict)


class StateStore:
    """Where account states live: the Faust table's in-memory data in the worker, a dict offline.

    ``get`` returns the stored object itself, so the driver's changes land in place and
    :meth:`commit` has nothing left to do."""

    def __init__(self, data: Any = None) -> None:
        self.data: Any = {} if data is None else data

    def get(self, account_id: str) -> AccountState | None:
        return self.data.get(account_id)

    def put(self, state: AccountState) -> None:
        self.data[state.account_id] = state

    def states(self, partition: int) -> Iterable[AccountState]:
        """The states of one input partition (to rebuild its due schedule, to freeze its portfolio)."""
        for state in list(self.data.values()):
            if isinstance(state, AccountState) and state.partition == partition:
                yield state

    def briefs(self, partition: int) -> Iterable[AccountState | StateBrief]:
        """What rebuilding the partition's due schedule reads of each of its states: here the
        states themselves (a RocksDB store decodes only those fields)."""
        return self.states(partition)

    def account_ids(self, partition: int) -> list[str]:
        """The ids of the partition's accounts now, to be read one by one with :meth:`peek` (a
        portfolio freeze spread over several steps reads each state as it is when it gets there)."""
        return [a for a, s in self.data.items() if isinstance(s, AccountState) and s.partition == partition]

    def peek(self, account_id: str) -> AccountState | None:
        """A state to read, not to change (a RocksDB store does not keep it for the step's write)."""
        value = self.data.get(account_id)
        return value if isinstance(value, AccountState) else None

    def get_portfolio(self, partition: int, day: int | None = None) -> Portfolio | None:
        """The partition's portfolio as last written (restored from the changelog after a restart), or
        the one frozen at midnight ``day`` if the ring still holds it (else another day's, or None)."""
        value = self.data.get(portfolio_key(partition, day))
        return value if isinstance(value, Portfolio) else None

    def put_portfolio(self, partition: int, portfolio: Portfolio) -> None:
        self.data[portfolio_key(partition)] = portfolio
        if portfolio.as_of is not None:
            self.data[portfolio_key(partition, portfolio.as_of)] = portfolio

    def for_partition(self, partition: int) -> StateStore:
        """The store a partition's driver uses: this one serves every partition."""
        return self

    def commit(self, records: list[tuple[bytes, bytes]], changelog_offset: int | None) -> None:
        """The step's states are in the changelog (up to ``changelog_offset``): nothing to write."""


class RocksStateStore(StateStore):
    """One partition's database in Faust's RocksDB store (``store._db_for_partition``).

    Faust's own ``store[key] = value`` picks the database from the event being processed, and the
    driver's writes (due times, timers, merged input) have none; reads that way would also look in
    the wrong partition. So this goes to the partition's database directly. A read there is a fresh
    copy, so the states touched in a step are kept here, where later reads in the same step see
    their changes, until :meth:`commit` writes the step's states and the changelog offset they
    reached in one write batch (recovery then reads only the changelog after that offset)."""

    def __init__(self, table_store: Any, partition: int | None = None) -> None:
        self.table_store = table_store
        self.partition = partition  # None: the table as a whole, which only hands out partitions
        self.touched: dict[str, AccountState] = {}

    @property
    def db(self) -> Any:
        if self.partition is None:
            raise RuntimeError("a RocksDB state store serves one partition: use for_partition()")
        return compat.db_for_partition(self.table_store, self.partition)

    def get(self, account_id: str) -> AccountState | None:
        state = self.touched.get(account_id)
        if state is None:
            raw = self.db.get(account_id.encode())
            if raw is None:
                return None
            state = self.touched[account_id] = AccountState.loads(raw)
        return state

    def put(self, state: AccountState) -> None:
        self.touched[state.account_id] = state

    def account_ids(self, partition: int) -> list[str]:
        """Every account key of the partition's database and of the step's new states (the states'
        own partition is checked by the reader: keys alone do not say it)."""
        reserved = RESERVED_PREFIX.encode()
        ids = [
            k.decode()
            for k, _ in compat.visible_items(self.table_store, self.db)
            if not k.startswith(reserved)
        ]
        known = set(ids)
        ids.extend(a for a in self.touched if a not in known)
        return ids

    def peek(self, account_id: str) -> AccountState | None:
        state = self.touched.get(account_id)
        if state is None:
            raw = self.db.get(account_id.encode())
            state = None if raw is None else AccountState.loads(raw)
        return state

    def states(self, partition: int) -> Iterable[AccountState]:
        """The database's states, as changed in this step where they were, and the step's new ones."""
        return self._scan(partition, AccountState.loads)

    def briefs(self, partition: int) -> Iterable[AccountState | StateBrief]:
        """As :meth:`states`, decoding only the fields the due schedule needs (``decode_brief``):
        a restart reads every state of its partitions, and decoding them whole was most of the time
        from "Worker ready" to the first snapshot (11.6 s of one blocked tick at 100k accounts)."""
        return self._scan(partition, decode_brief)

    def _scan(self, partition: int, decode: Callable[[bytes], _S]) -> Iterator[AccountState | _S]:
        reserved = RESERVED_PREFIX.encode()
        seen: set[str] = set()
        for key, raw in compat.visible_items(self.table_store, self.db):  # skips Faust's offset key
            if key.startswith(reserved):
                continue
            account_id = key.decode()
            seen.add(account_id)
            state = self.touched.get(account_id)
            item = decode(raw) if state is None else state
            if item.partition == partition:
                yield item
        for account_id, state in list(self.touched.items()):
            if account_id not in seen and state.partition == partition:
                yield state

    def get_portfolio(self, partition: int, day: int | None = None) -> Portfolio | None:
        raw = self.db.get(portfolio_key(partition, day).encode())
        return None if raw is None else Portfolio.loads(raw)

    def put_portfolio(self, partition: int, portfolio: Portfolio) -> None:
        """Nothing to keep here: the driver holds it, and :meth:`commit` writes it with the step."""

    def for_partition(self, partition: int) -> StateStore:
        return RocksStateStore(self.table_store, partition)

    def commit(self, records: list[tuple[bytes, bytes]], changelog_offset: int | None) -> None:
        """Write the step's states (already in the changelog) and the offset of its last changelog
        record in one batch: the database never holds a state without the offset that covers it."""
        if self.table_store.use_rocksdict:
            import rocksdict

            batch = rocksdict.WriteBatch(raw_mode=True)
        else:  # python-rocksdb, which Faust prefers when both are installed
            import rocksdb

            batch = rocksdb.WriteBatch()
        for key, value in records:
            batch.put(key, value)
        if changelog_offset is not None:
            batch.put(self.table_store.offset_key, str(changelog_offset).encode())
        self.db.write(batch)
        self.touched.clear()


def state_store(table_data: Any) -> StateStore:
    """The store for a Faust table's data: per-partition RocksDB databases, or the memory dict."""
    from faust.stores.rocksdb import Store as RocksStore

    if isinstance(table_data, RocksStore):
        return RocksStateStore(table_data)
    return StateStore(table_data)


class PartitionDriver:
    def __init__(
        self,
        partition: int,
        engine: Engine,
        store: StateStore,
        config: DriverConfig = DriverConfig(),
        positions: list[int | None] | None = None,
        rebuild: bool = True,
    ) -> None:
        """``rebuild=False``: the caller runs :meth:`rebuild` itself, in chunks, before using it."""
        self.partition = partition
        self.engine = engine
        self.store = store
        self.config = config
        self.stats = DriverStats()
        self.queues: list[deque[tuple[int, int, BaseEvent | None, Record, str | None]]] = [
            deque() for _ in range(N_KINDS)
        ]
        self.buffered = 0
        #: Per topic: the next offset to read (None: unknown) and the latest event time offered.
        self.position: list[int | None] = [None] * N_KINDS
        self.offered_ts: list[int] = [NEVER] * N_KINDS
        self.blocked_since: list[float | None] = [None] * N_KINDS
        self.forced: list[bool] = [False] * N_KINDS
        #: Event time (ms) up to which the merge has processed the partition.
        self.clock_ms = NEVER
        #: Wall-time hold on the latest offered event time: (offered at, event time ms), oldest first.
        self._held: deque[tuple[float, int]] = deque()
        self._released = NEVER
        self._max_offered = NEVER
        self._offered_at = float("-inf")  # wall time of the latest record offered, any topic
        self._resumed_at = float("-inf")  # ... and of the first one after a pause (an outage)
        #: Accounts owing an evaluation (account -> latest event time, s), the open slots they owe
        #: it in (each slot's last millisecond -> its accounts, in the order they joined), each
        #: account's slot, and the earliest slot's last millisecond. One slot is open, except after
        #: a restart: a state written after the committed offsets of other topics is ahead of the
        #: merge, and its slot closes when the merge gets there again, not with the earlier ones.
        self._dirty: dict[str, int] = {}
        self._slots: dict[int, dict[str, None]] = {}
        self._slot_of: dict[str, int] = {}
        self._close_at = NEVER
        self._realtime = False
        self._previewed: dict[str, int] = {}
        #: Due schedule: heap of (due, account) with at most one live entry per account.
        self._due: list[tuple[int, str]] = []
        self._scheduled: dict[str, int] = {}
        self._out = Output()
        #: Per topic with a hole in its offsets: (next offset expected, offset that came instead).
        self.gaps: dict[int, tuple[int, int]] = {}
        #: The portfolio in force (frozen at the latest UTC midnight the merge passed), the merge time
        #: at which the next one is due, and its members' raw metrics at that midnight (reused by the
        #: midnight's evaluations within the same advance).
        self.portfolio: Portfolio | None = None
        self._next_freeze_ms = NEVER
        self._frozen_metrics: dict[str, AccountMetrics] = {}
        self._earlier: dict[int, Portfolio] = {}  # earlier portfolios read back for a replay (by as_of)
        #: Work left in the current step (``step_budget``); the merge time an advance stopped
        #: short of (NEVER: none did); a closed slot's accounts not evaluated yet; a freeze under way:
        #: (its midnight, the account ids still to read, the portfolio being built).
        self._work: float = float("inf")
        self._behind = NEVER
        self._closing: deque[tuple[str, int]] = deque()
        self._freezing: tuple[int, Iterator[str], PortfolioBuilder] | None = None
        #: Each account's last band, for the caller's gauges: from the pass that rebuilds the
        #: schedule, then kept by the caller from the states it makes durable.
        self.bands: dict[str, str] = {}
        if positions is not None:  # where the consumer starts reading (committed offsets)
            self.position = list(positions)
        if rebuild:
            for _ in self.rebuild():
                pass

    # --- input -------------------------------------------------------------------------------

    def offer(self, record: Record, now: float) -> None:
        """Queue one record (records of a topic arrive in offset order)."""
        k = record.kind
        pos = self.position[k]
        if pos is not None and record.offset > pos:
            # A hole: records pos..offset-1 never reached us (the client skipped them). Folding
            # this one would mark them as applied in the account's offsets, and a later
            # redelivery would be skipped: the record is set aside until the caller has read
            # the hole again (``gaps``, then ``skip_to`` if the broker has nothing there).
            if k not in self.gaps:
                self.gaps[k] = (pos, record.offset)
                self.stats.gaps += 1
            self.stats.gap_discarded += 1
            return
        self.gaps.pop(k, None)
        if pos is not None and record.offset < pos:
            # A rewind (the consumer sought back to the committed offset after a rebalance): drop
            # the queued copies from here on; they come again, in order, and are acked then.
            q = self.queues[k]
            while q and q[-1][1] >= record.offset:
                q.pop()
                self.buffered -= 1
        self.position[k] = record.offset + 1
        if now - self._offered_at > 5.0:
            # Nothing was delivered for a while (an outage): the silent topics' max_block_s
            # counts from now, so the first topic back does not release the others at once.
            self._resumed_at = now
        self._offered_at = now
        self.blocked_since[k] = None
        self.forced[k] = False
        event, reason, ts_ms = self._parse(record, now)
        if ts_ms is None:
            # Not an event: it keeps its place in its topic's order but holds no time back.
            ts_ms = self.offered_ts[k] if self.offered_ts[k] != NEVER else self.clock_ms
        elif ts_ms > self.offered_ts[k]:
            self.offered_ts[k] = ts_ms
            if ts_ms > self._max_offered:
                self._max_offered = ts_ms
                self._held.append((now, ts_ms))
        self.queues[k].append((ts_ms, record.offset, event, record, reason))
        self.buffered += 1

    def _parse(self, record: Record, now: float) -> tuple[BaseEvent | None, str | None, int | None]:
        cfg = self.config
        size = len(record.value or b"")
        if size > cfg.max_record_bytes:
            return None, f"record too large: {size} bytes (limit {cfg.max_record_bytes})", None
        try:
            event = parse_event(record.value, record.key, INPUT_KINDS[record.kind])
        except InvalidEvent as exc:
            return None, exc.reason, None
        ts = event.occurred_at.timestamp()
        if ts > now + cfg.max_future_s:
            return None, f"occurred_at: {event.occurred_at.isoformat()} is in the future", None
        if ts < now - cfg.max_age_s:
            return (
                None,
                (
                    f"occurred_at: {event.occurred_at.isoformat()} is older than the accepted range "
                    f"({cfg.max_age_s / DAY_S:.0f} days)"
                ),
                None,
            )
        return event, None, int(ts * 1000)

    # --- the merge ---------------------------------------------------------------------------

    @property
    def paused(self) -> bool:
        """The last step stopped at its work budget with due work left: step again (no new input
        is needed; a step with input goes on with that work first)."""
        return self._behind != NEVER

    def step(self, highwaters: list[int | None], now: float) -> Output:
        """Process everything the merge allows, up to ``step_budget`` evaluations;
        ``highwaters`` are the topics' end offsets."""
        limit = self.config.step_budget
        self._work = float("inf") if limit is None else limit
        if self._behind != NEVER and not self._advance(self._behind):
            return self._paused_output()
        while self._held and self._held[0][0] <= now - self.config.hold_s:
            self._released = self._held.popleft()[1]
        idle_bound = self._released
        cfg = self.config
        self._realtime = self._caught_up(now)
        if self._realtime:
            idle_bound = max(idle_bound, int((now - cfg.live_lateness_s) * 1000))
        queues = self.queues
        # Per topic, the smallest (event time, topic) it may still deliver. A step offers nothing,
        # so taking a record changes only its own topic's bound: that one is recomputed, not all.
        bounds = self._bounds(highwaters, idle_bound, now)
        while True:
            # The head is the earliest waiting record; it goes when it is before every other bound,
            # that is when it is the least of them all (bounds of different topics never tie).
            first = min(bounds)
            head_k = first[1]
            if head_k < 0 or not queues[head_k]:  # an empty topic may still deliver an earlier one
                waiting = [k for k in range(N_KINDS) if queues[k]]
                if not waiting:
                    break
                if self.buffered <= self.config.max_buffered:
                    break
                self.stats.forced_releases += 1  # memory bound: the earliest goes through
                head_k = min(waiting, key=bounds.__getitem__)
            q = queues[head_k]
            ts_ms = q[0][0]
            # Everything due before the record runs first; a step out of budget stops here.
            if q[0][2] is not None and ts_ms > self.clock_ms and not self._advance(ts_ms - 1):
                return self._paused_output()
            self._take(q.popleft())
            self.buffered -= 1
            bounds[head_k] = (q[0][0], head_k) if q else self._bound(head_k, highwaters, idle_bound, now)
        # Everything at or before this has been read: run what falls due up to it.
        safe = min(bounds)[0] - 1
        if safe > self.clock_ms and not self._advance(safe):
            return self._paused_output()
        if self._dirty and not self.buffered and safe >= self._max_offered and not self._realtime:
            self._preview()  # in live mode the slot closes within milliseconds: no preview needed
        return self._output()

    def _output(self) -> Output:
        out, self._out = self._out, Output()
        return out

    def _caught_up(self, now: float) -> bool:
        """Live mode: the newest record is within ``live_within_s`` of the wall clock, and so is
        every record waiting. A catch-up (a restart, a backlog) where one topic is read up to the
        present while others still deliver old records stays on event-time slots: live slots
        evaluated its backlog nearly event by event, and how many times depended on fetch order."""
        cfg = self.config
        if not cfg.live:
            return False
        horizon = now * 1000 - cfg.live_within_s * 1000
        return self._max_offered > horizon and all(not q or q[0][0] > horizon for q in self.queues)

    def _paused_output(self) -> Output:
        self.stats.paused_steps += 1
        return self._output()

    def _bounds(self, highwaters: list[int | None], idle_bound: int, now: float) -> list[tuple[int, int]]:
        """Per topic, the smallest (event time, topic) it may still deliver."""
        return [self._bound(k, highwaters, idle_bound, now) for k in range(N_KINDS)]

    def _bound(self, k: int, highwaters: list[int | None], idle_bound: int, now: float) -> tuple[int, int]:
        """The smallest (event time, topic) topic ``k`` may still deliver: its first waiting record,
        or for an empty topic its latest event time while it has unread records (the idle bound
        once it is read to its end or stuck for ``max_block_s``). Asked again within a step, with
        the same ``now``, it gives the same answer (``max_block_s`` > 0)."""
        q = self.queues[k]
        if q:
            return (q[0][0], k)
        hw, pos = highwaters[k], self.position[k]
        caught_up = hw is not None and (hw == 0 or (pos is not None and pos >= hw))
        if caught_up:
            self.blocked_since[k] = None
            self.forced[k] = False
        else:
            since = self.blocked_since[k]
            if since is None:
                self.blocked_since[k] = now
            elif now - max(since, self._resumed_at) >= self.config.max_block_s and self._offered_at > since:
                # Only while other topics deliver: in a broker outage nothing does, and
                # releasing would make everything read after it late.
                # It stops holding time back until it delivers a record again (offer clears
                # blocked_since), so a stuck topic delays the rest once, not per record.
                if not self.forced[k]:
                    self.stats.forced_releases += 1
                    self.forced[k] = True
                caught_up = True
        if caught_up:
            return (idle_bound + 1, -1)
        return (self.offered_ts[k], k)

    def _take(self, item: tuple[int, int, BaseEvent | None, Record, str | None]) -> None:
        """Fold one record; what was due before it has run (``step`` does that first)."""
        ts_ms, offset, event, record, reason = item
        out = self._out
        if event is None:
            self._dead(record, reason or "invalid")
            out.acks.append(record.handle)
            return
        if ts_ms > self.clock_ms:
            self.clock_ms = ts_ms
        elif ts_ms < self.clock_ms:
            self.stats.late += 1
        account_id = event.account_id
        state = self.store.get(account_id)
        if state is None:
            state = AccountState(account_id=account_id)
            self.store.put(state)
        k = record.kind
        if offset <= state.offsets[k]:
            self.stats.redelivered += 1  # folded in before a crash or a rebalance
            out.acks.append(record.handle)
            return
        try:
            changed = self.engine.apply(state, event, self.partition)
        except Exception as exc:  # a bug costs one event, never the worker
            log.exception("failed to apply event %s", event.event_id)
            self._dead(record, f"internal error: {exc!r}")
            changed = False
        state.offsets[k] = offset
        out.states[account_id] = state
        out.acks.append(record.handle)
        self.stats.processed += 1
        by_type = self.stats.by_type
        key = (INPUT_KINDS[k], event.type)  # type: ignore[attr-defined]
        by_type[key] = by_type.get(key, 0) + 1
        if not changed:
            self.stats.duplicates += 1
            return
        ts = ts_ms // 1000
        if state.owed is None or ts > state.owed:
            state.owed = ts
        self._owe(account_id, state.owed, max(ts_ms, self.clock_ms))

    def _dead(self, record: Record, reason: str) -> None:
        self.stats.dead_letters += 1
        kind = reason.split(":", 1)[0][:40]  # "occurred_at", "record too large", "Invalid JSON", ...
        self.stats.dead_by_reason[kind] = self.stats.dead_by_reason.get(kind, 0) + 1
        self._out.dead_letters.append(DeadLetter(record, reason))

    def _advance(self, until_ms: int) -> bool:
        """Everything up to ``until_ms`` has been read: close finished slots and run due times, in
        time order (a slot closes at its last millisecond, a due time ``T`` after second ``T``).

        False: the step's work budget ran out first. The clock stays where it was and the rest runs
        in the next step, before anything later; the evaluations and their order are the same."""
        due = self._due
        while True:
            if self._closing and not self._close_some():
                return self._pause(until_ms)
            close_at = self._close_at if self._slots else None
            due_at = due[0][0] * 1000 + 999 if due else None
            if not self._freeze(min(t for t in (close_at, due_at, until_ms) if t is not None)):
                return self._pause(until_ms)
            if close_at is not None and close_at <= until_ms and (due_at is None or close_at <= due_at):
                self._close_slot()
                continue
            if due_at is None or due_at > until_ms:
                break
            if self._work <= 0:
                return self._pause(until_ms)
            t, account_id = heapq.heappop(due)
            if self._scheduled.get(account_id) != t:
                continue  # superseded by a later schedule of the account
            del self._scheduled[account_id]
            state = self.store.get(account_id)
            if state is not None and state.next_due == t:
                self._evaluate(state, t)
        if until_ms > self.clock_ms:
            self.clock_ms = until_ms
        self._behind = NEVER
        self._frozen_metrics.clear()  # events may be folded next: the midnight's metrics are stale
        return True

    def _pause(self, until_ms: int) -> bool:
        """Out of budget: the next step goes on advancing to ``until_ms`` before anything else."""
        self._behind = until_ms
        return False

    def _freeze(self, t_ms: int) -> bool:
        """Before anything at merge time ``t_ms`` runs: if the end of a UTC midnight's second ``D``
        has passed since the last freeze, the portfolio of day ``D``, built from every state of the
        partition as of ``D`` (all events at or before ``D`` are folded, none after: the merge order).

        Scores use it until the next midnight, so they are a function of the partition's event
        sequence, not of how the partitions' evaluations interleave. Several midnights passed with
        nothing to run between them give the latest one's (the others would be used by nothing). The
        portfolio goes out first among the step's states, so a changelog that kept part of the step
        never holds a later state without it.

        The states are read a step's work budget at a time (False: not done yet). Nothing of the
        partition changes in between: no event is folded and nothing evaluated until it is done."""
        if t_ms < self._next_freeze_ms:
            return True
        midnight = (t_ms - 999) // 1000 // DAY_S * DAY_S
        job = self._freezing
        if job is None or job[0] != midnight:
            ids = iter(self.store.account_ids(self.partition))
            job = self._freezing = (midnight, ids, PortfolioBuilder(midnight, self.engine.scoring.metrics))
        _, ids, builder = job
        peek, partition = self.store.peek, self.partition
        while True:
            if self._work <= 0:
                return False
            account_id = next(ids, None)
            if account_id is None:
                break
            self._work -= 1
            state = peek(account_id)
            if state is not None and state.partition == partition:
                builder.add(state)
        self._freezing = None
        previous = self.portfolio
        self.portfolio, self._frozen_metrics = builder.build()
        self.portfolio.previous = NO_PREVIOUS if previous is None else previous.as_of
        self._earlier.clear()  # the merge is past any replay they served
        # The day's information check (which measures carry none in this book): one pass over the
        # members at the freeze, a function of the partition's events like the portfolio itself.
        self.portfolio.set_aside = check_portfolio(
            self.engine.card_at(midnight), self.portfolio, self._frozen_metrics, builder.segments
        )
        self._next_freeze_ms = (midnight + DAY_S) * 1000 + 999
        self.store.put_portfolio(self.partition, self.portfolio)
        # The dated copies first (this step's earlier freezes', then this one's), the one in force
        # after them: a changelog holding it holds them too.
        dated, latest = portfolio_key(self.partition, midnight), portfolio_key(self.partition)
        rest = self._out.states
        rest.pop(dated, None)
        rest.pop(latest, None)
        reserved = {k: v for k, v in rest.items() if k.startswith(RESERVED_PREFIX)}
        accounts = {k: v for k, v in rest.items() if not k.startswith(RESERVED_PREFIX)}
        self._out.states = {**reserved, dated: self.portfolio, latest: self.portfolio, **accounts}
        return True

    def _portfolio_at(self, t: int) -> Portfolio | None:
        """The portfolio in force at event time ``t`` (s): the latest frozen, unless a restart's merge
        is replaying time before its midnight. The merge starts again from the committed offsets, which
        can be behind a portfolio already written (states and portfolios are written before the acks
        of what they folded); an account whose state was not written is evaluated again at those
        times, and the uninterrupted run used the portfolio of that day. The partition keeps
        PORTFOLIO_RING days of them; past that (or in a table written before they were chained) the
        latest is used, and ``portfolio_misses`` counts it."""
        found = self.portfolio
        while found is not None and found.as_of is not None and t < found.as_of:
            previous = found.previous
            if previous == NO_PREVIOUS:
                return None  # before the partition's first freeze, as the uninterrupted run was
            if previous is None:  # a record from before portfolios were chained
                self.stats.portfolio_misses += 1
                return self.portfolio
            earlier = self._earlier.get(previous) or self.store.get_portfolio(self.partition, previous)
            if earlier is None or earlier.as_of != previous:  # older than the ring keeps
                self.stats.portfolio_misses += 1
                return self.portfolio
            self._earlier[previous] = found = earlier
        return found

    def _owe(self, account_id: str, owed: int, t_ms: int) -> None:
        """The account owes an evaluation at ``owed`` in the slot of merge time ``t_ms``, which
        closes at its last millisecond. A live (shorter) slot opened while event-time ones are open
        closes them sooner (a stream that caught up with the wall clock must not wait for the end
        of the hour its replay ended in): in live mode every account owing one shares a slot."""
        slot = self.config.live_slot_ms if self._realtime else self.config.slot_ms
        close_at = (t_ms // slot + 1) * slot - 1
        slots = self._slots
        if self._realtime and slots:
            close_at = min(close_at, self._close_at)
            for end in [e for e in slots if e != close_at]:
                for a in slots.pop(end):
                    self._join(a, close_at)
        prev = self._slot_of.get(account_id)
        if prev is not None and prev != close_at:
            if prev < close_at:  # its slot is still open: the event joins it
                close_at = prev
            else:
                self._leave(account_id)
        self._join(account_id, close_at)
        self._dirty[account_id] = owed
        if len(slots) == 1 or close_at < self._close_at:  # per event: no min() over the slots
            self._close_at = close_at

    def _join(self, account_id: str, close_at: int) -> None:
        self._slots.setdefault(close_at, {})[account_id] = None
        self._slot_of[account_id] = close_at

    def _leave(self, account_id: str) -> None:
        """The account owes nothing any more (evaluated), or owes it in another slot."""
        close_at = self._slot_of.pop(account_id, None)
        if close_at is None:
            return
        members = self._slots[close_at]
        del members[account_id]
        if not members:
            del self._slots[close_at]
            self._close_at = min(self._slots) if self._slots else NEVER

    def _preview(self) -> None:
        """Nothing waits to be read and the latest event is released, yet the open slot has not
        closed (event time moves only with events): publish what its evaluation would show now, so
        a quiet stream's last events are visible. Rules and trends wait for the slot to close, so
        this changes no alert and no later snapshot."""
        for account_id, owed in self._dirty.items():
            if self._previewed.get(account_id) == owed:
                continue
            state = self.store.get(account_id)
            if state is None:
                continue
            self._previewed[account_id] = owed
            try:
                snapshot = self.engine.preview(state, owed, self.portfolio)
            except Exception:
                continue  # the slot's evaluation reports it
            key = account_id.encode()
            self._out.records.append(("health", key, snapshot.model_dump_json().encode(), owed * 1000))

    def _close_slot(self) -> bool:
        """Close the earliest open slot: its accounts are evaluated in order, a step's budget at a time."""
        members = self._slots.pop(self._close_at)
        self._close_at = min(self._slots) if self._slots else NEVER
        dirty, slot_of, previewed = self._dirty, self._slot_of, self._previewed
        for account_id in members:
            del slot_of[account_id]
            previewed.pop(account_id, None)
            self._closing.append((account_id, dirty.pop(account_id)))
        return self._close_some()

    def _close_some(self) -> bool:
        closing = self._closing
        while closing:
            if self._work <= 0:
                return False
            account_id, as_of = closing.popleft()
            state = self.store.get(account_id)
            if state is not None and state.owed is not None:
                self._evaluate(state, as_of)
        return True

    def flush(self) -> Output:
        """Evaluate every account owing an evaluation now (end of an offline run: no budget)."""
        self._work = float("inf")
        if self._behind != NEVER:
            self._advance(self._behind)
        while self._slots:
            self._close_slot()
        self._close_some()
        return self._output()

    def run_until(self, t_ms: int) -> Output:
        """Offline: let event time run on to ``t_ms`` with nothing more to read (no budget)."""
        self._work = float("inf")
        self._advance(max(t_ms, self._behind))
        return self._output()

    # --- evaluation --------------------------------------------------------------------------

    def _evaluate(self, state: AccountState, as_of: int) -> None:
        account_id = state.account_id
        out = self._out
        if self._dirty.pop(account_id, None) is not None:
            self._leave(account_id)
        key = account_id.encode()
        when = max(as_of, state.last_eval_at or 0) * 1000
        portfolio = self._portfolio_at(as_of)
        self._work -= 1
        metrics = None
        if portfolio is not None and portfolio is self.portfolio and portfolio.as_of == as_of:
            metrics = self._frozen_metrics.pop(account_id, None)
        try:
            result = self.engine.evaluate(state, as_of, portfolio, metrics)
        except Exception as exc:  # isolated to this account: reported, retried at its next due time
            self.stats.evaluation_errors += 1
            log.exception("evaluation of %s at %s failed", account_id, as_of)
            state.next_due = (as_of // DAY_S + 1) * DAY_S
            error = {"account_id": account_id, "as_of": as_of, "error": repr(exc)[:1000]}
            out.records.append(("errors", key, orjson.dumps(error), when))
        else:
            self.stats.evaluations += 1
            out.records.append(("health", key, result.snapshot.model_dump_json().encode(), when))
            if result.change is not None:
                out.records.append(("changes", key, result.change.model_dump_json().encode(), when))
            for alert in result.alerts:
                out.records.append(("alerts", key, alert.model_dump_json().encode(), when))
        state.owed = None
        out.states[account_id] = state
        self._schedule(state)

    def _schedule(self, state: AccountState | StateBrief) -> None:
        t = state.next_due
        account_id = state.account_id
        if t is None:
            self._scheduled.pop(account_id, None)
            return
        if self._scheduled.get(account_id) != t:
            self._scheduled[account_id] = t
            heapq.heappush(self._due, (t, account_id))

    # --- recovery ----------------------------------------------------------------------------

    def rebuild(self, chunk: int = 5_000) -> Iterator[None]:
        """After a restart or a rebalance: the due schedule and owed evaluations from the states, and
        the portfolio in force as it was frozen (rebuilt from the states now, it would see events of
        the day after its midnight). Yields after every ``chunk`` states, so a worker can give its
        event loop a turn: 125k states took 2 s at a 1M-account restart."""
        portfolio = self.store.get_portfolio(self.partition)
        if portfolio is not None and portfolio.as_of is not None:
            self.portfolio = portfolio
            self._next_freeze_ms = (portfolio.as_of + DAY_S) * 1000 + 999
        owed: dict[str, int] = {}
        for n, state in enumerate(self.store.briefs(self.partition), 1):
            self.bands[state.account_id] = state.last_change_band or "none"
            self._schedule(state)
            if state.owed is not None:
                owed[state.account_id] = state.owed
            if n % chunk == 0:
                yield
        # Each owed evaluation waits for the end of its own slot (a rebuild comes before any step:
        # event-time slots). They can be in several: the merge starts again from the committed
        # offsets, which may be behind the states (a state is written before the acks of the
        # records it folded, and a topic commits only up to its first record not acked). A state
        # ahead of that point owes a later slot, which the merge must reach again before it
        # closes; an account of an earlier slot (being closed, a step's budget at a time, when the
        # worker stopped) is evaluated when the merge passes that slot's end, as the uninterrupted
        # run did, after its events of the slot still to be read are folded.
        for account_id, t in sorted(owed.items(), key=lambda item: (item[1], item[0])):
            self._owe(account_id, t, t * 1000)

    def describe(self, highwaters: list[int | None]) -> str:
        """Why the partition waits, for the log: per topic, records queued, next offset, end offset."""
        parts = []
        for k, kind in enumerate(INPUT_KINDS):
            q = self.queues[k]
            gap = f", hole before {self.gaps[k][1]}" if k in self.gaps else ""
            parts.append(f"{kind}: {len(q)} queued, at {self.position[k]} of {highwaters[k]}{gap}")
        return f"clock {self.clock_ms}, released {self._released}; " + "; ".join(parts)

    def skip_to(self, kind: int, offset: int) -> None:
        """The broker holds nothing before ``offset`` past where the topic stopped (transaction
        markers, compaction): accept ``offset`` as the next record."""
        pos = self.position[kind]
        if pos is None or offset > pos:
            self.position[kind] = offset
        self.gaps.pop(kind, None)

    @property
    def schedule_size(self) -> int:
        return len(self._due)


def run_offline(
    events: Iterable[BaseEvent],
    engine: Engine,
    *,
    until_ms: int | None = None,
    store: StateStore | None = None,
    config: DriverConfig | None = None,
    on_output: Callable[[Output], None] | None = None,
    partitions: int = 1,
) -> StateStore:
    """Drive the partitions over events already in memory (rule tests, offline scoring): the same
    code the worker runs, with every topic read to its end and no wall-clock hold.

    ``partitions``: split the accounts as the producer's default partitioner does (murmur2 of the
    key), one driver each, so each partition's portfolio ranks the accounts the worker's would."""
    from aiokafka.partitioner import murmur2

    store = store or StateStore()
    cfg = config or DriverConfig(hold_s=0.0, max_age_s=float("inf"), max_future_s=float("inf"))
    drivers = [PartitionDriver(p, engine, store, cfg) for p in range(partitions)]

    def emit(out: Output) -> None:
        if on_output:
            on_output(out)

    done = [[0] * N_KINDS for _ in range(partitions)]
    for event in events:
        kind = INPUT_KINDS.index(_kind_of(event))
        raw = orjson.dumps(event.model_dump(mode="json", by_alias=True))
        key = event.account_id.encode()
        p = (murmur2(key) & 0x7FFFFFFF) % partitions if partitions > 1 else 0
        # Offsets count per topic, as in Kafka: a jump would be a hole the driver sets records aside for.
        drivers[p].offer(Record(kind, done[p][kind], key, raw), now=0.0)
        done[p][kind] += 1
    for driver, read in zip(drivers, done, strict=True):
        # All read; no wall clock: the hold has nothing to wait for.
        highwaters: list[int | None] = [d if d else 0 for d in read]
        driver.position = [d if d else None for d in read]
        emit(driver.step(highwaters, now=float("inf")))
        while driver.paused:
            emit(driver.step(highwaters, now=float("inf")))
        assert not driver.gaps and driver.buffered == 0, "every record offered was taken"
        if until_ms is not None:
            emit(driver.run_until(until_ms))
        emit(driver.flush())
    return store


def _kind_of(event: BaseEvent) -> str:
    from streams.core.events import TYPE_TOPIC

    return TYPE_TOPIC[event.type]  # type: ignore[attr-defined]
