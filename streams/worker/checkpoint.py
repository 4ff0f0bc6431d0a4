"""The worker's durability protocol: outputs, then states, then acks, each after the one before.

A step of the drivers produces output records, changed states and the input records it is done
with. A crash at any point must redo work, never lose it, so:

1. the outputs are handed to the producer at once (the step goes on without waiting for the broker);
2. the changed states are *held*, and written at most every ``flush_s`` seconds -- after every output
   sent before is acknowledged -- to the changelog (and then the local databases), so an account
   changed in many steps is encoded and written once;
3. the inputs are acked only after that write.

A restart reads again from the committed offsets, and each state knows the input offsets it folded,
so the records folded since the last write are folded again and those before are skipped. In the
spirit of Quix Streams' ``Checkpoint``: the shell hands each step's result to :meth:`Checkpoint.add`
and asks :meth:`Checkpoint.flush_when_due`; everything the protocol talks to (the producer, the
changelog, the acks and the clock) is passed in, so it is unit-tested without Kafka or time.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

log = logging.getLogger("healthmon.checkpoint")

#: An output record as the shell sends it (opaque here).
Out = TypeVar("Out")


class Store(Protocol):
    """Where a partition's states live besides the changelog (Faust's RocksDB databases)."""

    def commit(self, records: list[tuple[bytes, bytes]], changelog_offset: int | None) -> None: ...


class State(Protocol):
    def dumps(self) -> bytes: ...


@dataclass(frozen=True)
class Durable(Generic[Out]):
    """What the protocol needs from the outside world, each an awaitable the shell provides."""

    #: Hand records to the producer; returns one handle per record to settle later.
    send: Callable[[list[Out]], Awaitable[list[Any]]]
    #: Wait until every sent record is acknowledged (sending again what failed).
    settle: Callable[[list[Any]], Awaitable[object]]
    #: Write (partition, key, value) to the changelog and wait for it; returns, per partition, the
    #: offset of its last record written.
    write_changelog: Callable[[list[tuple[int, bytes, bytes]]], Awaitable[dict[int, int]]]
    #: Ack one input record's handle (the consumer commits up to the acked offsets).
    ack: Callable[[Any], None]


class Checkpoint(Generic[Out]):
    """Held outputs, states and acks of the steps since the last flush, and their flush.

    ``clock`` is a monotonic clock in seconds (injected: nothing here reads the time). Not
    reentrant: the caller serialises :meth:`add` and :meth:`flush` (the worker's lock)."""

    def __init__(self, durable: Durable[Out], flush_s: float, clock: Callable[[], float]) -> None:
        self.durable = durable
        self.flush_s = flush_s
        self.clock = clock
        #: Outputs sent but not yet known to be in Kafka.
        self.unsettled: list[Any] = []
        #: Changed states per partition, in the order of their latest change (a state changed again
        #: moves to the end: it must not be written before a portfolio frozen since).
        self.held: dict[int, dict[str, State]] = {}
        self.stores: dict[int, Store] = {}
        self.acks: list[Any] = []
        #: When the oldest held thing was added; None when nothing is held.
        self.since: float | None = None
        #: Why nothing may be written any more: a step broke half-way, so states were changed in
        #: place whose outputs were never sent (a restart redoes it, as after a SIGKILL).
        self.broken: BaseException | None = None

    def __bool__(self) -> bool:
        return bool(self.unsettled or self.acks or any(self.held.values()))

    async def add(
        self, outputs: list[Out], steps: Sequence[tuple[int, dict[str, Any], Store, Sequence[Any]]]
    ) -> None:
        """One round of steps: its outputs are sent now; per partition, its changed states (held
        with the partition's store) and the handles of the inputs it is done with (held)."""
        if self.broken is not None:
            return
        self.unsettled.extend(await self.durable.send(outputs))
        for p, states, store, acks in steps:
            held = self.held.setdefault(p, {})
            for key, state in states.items():
                held.pop(key, None)
                held[key] = state
            self.stores[p] = store
            self.acks.extend(h for h in acks if h is not None)
        if self.since is None and self:
            self.since = self.clock()

    def due(self) -> bool:
        return self.since is not None and self.clock() - self.since >= self.flush_s

    async def flush_when_due(self) -> dict[int, dict[str, State]]:
        return await self.flush() if self.due() else {}

    def breaks(self, reason: BaseException) -> None:
        """A step stopped half-way: from now on nothing is written or acked."""
        if self.broken is None:
            self.broken = reason

    async def flush(self, stopping: bool = False) -> dict[int, dict[str, State]]:
        """Outputs acknowledged, then the held states to the changelog, then into the partitions'
        stores with the changelog offset they reached, then the acks. Returns the states written.

        ``stopping``: a clean stop, the consumer and tables stopped. The changelog write is what
        matters then (a restart skips the records these states folded, so it repeats no output);
        a store may be closed already, and nothing is acked."""
        self.since = None
        if self.broken is not None:
            if stopping:
                log.warning(
                    "a step broke half-way (%r): nothing written; redone after the restart", self.broken
                )
            return {}
        if self.unsettled:
            await self.durable.settle(self.unsettled)
            self.unsettled.clear()  # (the caller's lock: nothing was sent meanwhile)
        if not self.acks and not any(self.held.values()):
            return {}
        written = {
            p: [(k.encode(), st.dumps()) for k, st in states.items()] for p, states in self.held.items()
        }
        reached = await self.durable.write_changelog([(p, k, v) for p, w in written.items() for k, v in w])
        for p, w in written.items():
            try:
                self.stores[p].commit(w, reached.get(p))
            except Exception:
                if not stopping:
                    raise
                log.info("partition %s: states in the changelog, not in the closed local database", p)
        flushed = dict(self.held)
        acks = [] if stopping else list(self.acks)
        self.held = {}
        self.stores.clear()
        self.acks.clear()
        for handle in acks:
            self.durable.ack(handle)
        return flushed
