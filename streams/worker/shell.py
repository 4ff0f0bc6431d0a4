"""What the worker does with input and time, with Faust and Kafka kept out: records offered to their
partition's driver, holes read again, drivers stepped, what they produced made durable in order.

:func:`streams.worker.app.create_app` wires it to Faust (agents, timers, rebalance hooks, the lock);
the crash simulation (tests/unit/test_crash_simulation.py) wires the very same object to an in-memory
broker log and changelog and crashes it at every boundary of the durability protocol.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from typing import Generic, TypeVar

from streams.core.state import AccountState
from streams.engine.driver import Output, PartitionDriver, Record
from streams.worker.checkpoint import Checkpoint
from streams.worker.offsets import OffsetTracker
from streams.worker.partitions import PartitionSet
from streams.worker.telemetry import Telemetry

log = logging.getLogger("healthmon.ingest")

Out = TypeVar("Out")


class Shell(Generic[Out]):
    """The partitions, their offsets and the checkpoint, and the order they are used in. Not
    reentrant: the caller serialises every call (the worker's lock)."""

    def __init__(
        self,
        partitions: PartitionSet,
        offsets: OffsetTracker,
        checkpoint: Checkpoint[Out],
        records: Callable[[int, Output], list[Out]],
        step_budget: int | None,
        telemetry: Telemetry | None = None,
        on_broken: Callable[[BaseException], Awaitable[None]] | None = None,
    ) -> None:
        """``records``: a step's outputs as the records to send; ``on_broken``: a step failed half-way
        (the worker crashes the app: its restart redoes the work, as after a SIGKILL)."""
        self.partitions = partitions
        self.offsets = offsets
        self.checkpoint = checkpoint
        self.records = records
        self.step_budget = step_budget
        self.telemetry = telemetry
        self.on_broken = on_broken

    @property
    def drivers(self) -> dict[int, PartitionDriver]:
        return self.partitions.drivers

    async def offer(self, records: Iterable[tuple[int, Record]], now: float) -> set[int]:
        """Records to their partitions' drivers (made when first needed, or set aside until they can
        be); holes in a topic's offsets are read again. Returns the partitions offered to."""
        touched: set[int] = set()
        for p, record in records:
            if not self.partitions.current(record.handle):
                # fetched before a rebalance: the seek delivers it again, in order
                log.info(
                    "skipped %s[%s]@%s of an earlier generation",
                    self.offsets.names[record.kind],
                    p,
                    record.offset,
                )
                continue
            driver = self.drivers.get(p) or await self.partitions.ensure(p)
            if self.partitions.offer(p, record, now, driver):
                touched.add(p)
        for p in touched:
            driver = self.drivers.get(p)
            if driver is not None and driver.gaps:
                await self.offsets.reread(p, driver)
        return touched

    async def tick(self, assigned: Iterable[int]) -> None:
        """Time moves on without input: every partition's driver made, its stalls read again, stepped;
        the held states written when due (a quiet stream's too)."""
        parts = []
        for p in sorted(assigned):
            driver = self.drivers.get(p) or await self.partitions.ensure(p)
            if driver is not None:
                await self.offsets.reread(p, driver)
                parts.append(p)
        await self.step(parts)
        await self.write_states_when_due()

    async def step(self, parts: list[int]) -> None:
        """Step the drivers of ``parts`` and make what they produced durable, all together: outputs
        sent now, the states they imply held and written when due after every output sent before is
        acknowledged, the inputs acked after that write (:class:`Checkpoint`)."""
        if self.partitions.halted():
            return
        try:
            timed = self.telemetry.timed_step if self.telemetry else (lambda d, run: run())
            done = await self.partitions.step(parts, self.offsets.highwaters, self.step_budget, timed)
            if done:
                records = [rec for p, out, _ in done for rec in self.records(p, out)]
                await self.checkpoint.add(records, [(p, out.states, st, out.acks) for p, out, st in done])
                await self.write_states_when_due()
                if self.telemetry is not None:
                    for p, _, _ in done:
                        if (driver := self.drivers.get(p)) is not None:
                            self.telemetry.export_counts(driver)
        except BaseException as exc:
            self.checkpoint.breaks(exc)  # states changed in place, their outputs unsent: nothing more written
            if not isinstance(exc, asyncio.CancelledError):
                log.error("a step failed half-way (%r): stopping; nothing more is written or acked", exc)
                if self.on_broken is not None:
                    await self.on_broken(exc)
            raise

    async def write_states(self, stopping: bool = False) -> None:
        """What the steps since the last write hold, made durable (:meth:`Checkpoint.flush`); the
        drivers then know their accounts' bands as written."""
        for p, states in (await self.checkpoint.flush(stopping)).items():
            if (driver := self.drivers.get(p)) is not None:
                for a, st in states.items():
                    if isinstance(st, AccountState):  # not a partition's portfolio
                        driver.bands[a] = st.last_change_band or "none"

    async def write_states_when_due(self) -> None:
        if self.checkpoint.due():
            await self.write_states()

    async def revoke(self, partitions: Iterable[int]) -> None:
        """Drop the drivers of ``partitions`` once what they changed is in the changelog."""
        await self.write_states()
        gone = set(partitions)
        self.partitions.drop(gone)
        for p in gone:
            self.offsets.forget(p)
        if self.telemetry is not None:
            self.telemetry.forget_dropped(self.drivers.values())
