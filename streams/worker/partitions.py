"""The partitions a worker drives: their drivers, the records waiting for one, the cut queue, revocation.

- A partition gets a driver only once its table is recovered (a state write for a recovering
  partition would overwrite what the changelog is about to restore), and only if the group did not
  move while its offsets were read and its schedule rebuilt (each rebalance is a new generation).
- A revoked partition's driver is dropped with its pending work: the new owner redoes it from the
  committed offsets.
- The cut queue: a partition whose due work is more than one step runs (a midnight: every account
  due) is *cut* into steps, and only the first cut partition goes on. At a midnight every partition
  freezes its portfolio and holds its accounts' metrics until they are evaluated, and 8 partitions
  of 125k accounts doing that side by side took 4.8 GB; one after the other, one partition's worth
  (the total work is the same).

Everything it talks to (the offsets, the assignment, the clocks) is passed in, so it is unit-tested
without Kafka; the caller serialises the calls (the worker's lock).
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from streams.engine.driver import Output, PartitionDriver, Record, StateStore

log = logging.getLogger("healthmon.ingest")

#: One step's result: partition, what its driver produced, the store its states live in.
Stepped = tuple[int, Output, StateStore]


class PartitionSet:
    def __init__(
        self,
        make_driver: Callable[[int, list[int | None]], PartitionDriver],
        positions: Callable[[int], Awaitable[list[int | None]]],
        assigned: Callable[[], set[int]],
        halted: Callable[[], bool],
        wall: Callable[[], float],
        current: Callable[[Any], bool] = lambda handle: True,
    ) -> None:
        """``positions``: where the consumer starts reading each topic of a partition; ``current``:
        whether a record's handle was fetched in this generation of the group (one fetched before a
        rebalance is delivered again by the seek to the committed offset)."""
        self.make_driver = make_driver
        self.positions = positions
        self.assigned = assigned
        self.halted = halted
        self.wall = wall
        self.current = current
        self.drivers: dict[int, PartitionDriver] = {}
        #: Records of a partition whose driver is not ready yet.
        self.waiting: dict[int, list[Record]] = {}
        #: Set when a rebalance has completed with every table partition recovered; cleared when the
        #: next one starts. No driver is made while it is clear.
        self.recovered = asyncio.Event()
        self.generation = 0
        #: Partitions whose due work is being cut into steps, in the order they got there.
        self.cut: dict[int, None] = {}
        #: Set when a partition is cut: the worker's ``run_cut`` task steps it on.
        self.cut_waiting = asyncio.Event()

    # --- rebalances ----------------------------------------------------------------------------

    def rebalance_completed(self, mine: set[int]) -> None:
        self.generation += 1
        self.recovered.set()
        for p in [p for p in self.waiting if p not in mine]:
            del self.waiting[p]

    def rebalance_started(self) -> None:
        self.recovered.clear()
        self.generation += 1

    def drop(self, partitions: Iterable[int]) -> None:
        """Revoked: the drivers go with their pending work (the caller made their states durable)."""
        for p in partitions:
            self.drivers.pop(p, None)
            self.waiting.pop(p, None)

    # --- drivers -------------------------------------------------------------------------------

    def offer(self, p: int, record: Record, now: float, driver: PartitionDriver | None) -> bool:
        """To the partition's driver, or set aside until it is ready; True when offered."""
        if driver is None:
            self.waiting.setdefault(p, []).append(record)
            return False
        driver.offer(record, now)
        return True

    async def ensure(self, p: int) -> PartitionDriver | None:
        """The partition's driver, made once its table is recovered (never before: a state write
        for a recovering partition would overwrite what the changelog is about to restore)."""
        driver = self.drivers.get(p)
        if driver is not None or not self.recovered.is_set() or self.halted() or p not in self.assigned():
            return driver
        generation = self.generation
        positions = await self.positions(p)
        if p in self.drivers or generation != self.generation or self.halted() or p not in self.assigned():
            return self.drivers.get(p)  # the world moved while we asked
        driver = self.make_driver(p, positions)
        for _ in driver.rebuild():
            await asyncio.sleep(0)  # the loop's other tasks (heartbeats, the web) get a turn
        if generation != self.generation or self.halted() or p not in self.assigned():
            return None  # revoked meanwhile (the revocation waits for the lock we hold)
        self.drivers[p] = driver
        log.info("partition %s ready: %d accounts due", p, driver.schedule_size)
        now = self.wall()
        for record in self.waiting.pop(p, []):
            if self.current(record.handle):
                driver.offer(record, now)
        return driver

    # --- steps and the cut queue -----------------------------------------------------------------

    async def step(
        self,
        parts: Iterable[int],
        highwaters: Callable[[int], list[int | None]],
        step_budget: int | None,
        timed: Callable[[PartitionDriver, Callable[[], Output]], Output] = lambda d, run: run(),
    ) -> list[Stepped]:
        """Step the drivers of ``parts`` (a cut partition only when it is the first cut); what each
        produced. ``timed`` wraps each driver's step (the caller's evaluation-time metric)."""
        done: list[Stepped] = []
        for q in [q for q in self.cut if (d := self.drivers.get(q)) is None or not d.paused]:
            del self.cut[q]  # done, or dropped at a revocation
        for p in parts:
            driver = self.drivers.get(p)
            if driver is None:
                continue
            if p in self.cut and next(iter(self.cut)) != p:
                continue  # another partition's due work goes first
            evaluations = driver.stats.evaluations
            out = timed(driver, functools.partial(driver.step, highwaters(p), self.wall()))
            n = driver.stats.evaluations - evaluations
            if out:
                done.append((p, out, driver.store))
            if driver.paused and p not in self.cut:
                self.cut[p] = None
                self.cut_waiting.set()
                log.info(
                    "partition %s: more is due than one step runs; going on in steps of %s", p, step_budget
                )
            elif not driver.paused:
                self.cut.pop(p, None)
            if n or driver.paused:
                # At most a step budget of work per partition, then the loop's other tasks get a
                # turn (the caller's lock stays held: only our own drivers wait).
                await asyncio.sleep(0)
        return done

    def uncut(self, parts: Iterable[int]) -> bool:
        """None of ``parts`` has a driver stopped at its step budget (a dropped one does not count)."""
        return not any((d := self.drivers.get(p)) is not None and d.paused for p in parts)

    def first_cut(self) -> list[int]:
        return list(self.cut)[:1]
