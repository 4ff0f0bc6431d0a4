"""The partition set (streams/worker/partitions.py): drivers made once recovered, records waiting for
them, the cut queue, revocation. Real drivers and engine over an in-memory store; no Kafka."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson

from rules.engine import load_rules
from streams.core.events import TYPE_TOPIC
from streams.core.scoring import load_scoring
from streams.core.state import INPUT_KINDS
from streams.engine.driver import DriverConfig, PartitionDriver, Record, StateStore
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator
from streams.worker.partitions import PartitionSet

END = datetime(2026, 3, 1, tzinfo=UTC)


def topics_of(seed: int) -> list[list[Record]]:
    """A simulated history as the five topics of one partition (per-topic offsets, in order)."""
    per: list[list[Record]] = [[] for _ in INPUT_KINDS]
    for ev in Simulator(accounts=8, days=7, seed=seed, end=END).events():
        k = INPUT_KINDS.index(TYPE_TOPIC[ev["type"]])
        per[k].append(Record(k, len(per[k]), ev["account_id"].encode(), orjson.dumps(ev)))
    return per


class World:
    def __init__(self, budget: int | None = None) -> None:
        self.engine = Engine(load_scoring(None), load_rules(None))
        self.store = StateStore()
        self.config = DriverConfig(
            hold_s=0.0, max_age_s=float("inf"), max_future_s=float("inf"), step_budget=budget
        )
        self.mine = {0, 1}
        self.stopping = False
        self.asked: list[int] = []
        self.stale: set[object] = set()
        self.parts = PartitionSet(
            self.make,
            self.positions,
            lambda: self.mine,
            lambda: self.stopping,
            lambda: END.timestamp() + 60,
            self.current,
        )

    def make(self, p: int, positions: list[int | None]) -> PartitionDriver:
        return PartitionDriver(p, self.engine, self.store, self.config, positions, rebuild=False)

    async def positions(self, p: int) -> list[int | None]:
        self.asked.append(p)
        return [0] * len(INPUT_KINDS)

    def current(self, handle: object) -> bool:
        return handle not in self.stale


async def test_no_driver_before_recovery_and_waiting_records_are_offered_then() -> None:
    w = World()
    assert await w.parts.ensure(0) is None and w.asked == []  # the table is not recovered yet
    first, second = topics_of(1)[0][:2]
    kind = first.kind
    assert not w.parts.offer(0, Record(kind, 0, first.key, first.value, "h0"), 0.0, None)
    assert not w.parts.offer(0, Record(kind, 1, second.key, second.value, "old"), 0.0, None)
    w.stale.add("old")  # fetched in an earlier generation: never offered
    w.parts.rebalance_completed({0, 1})
    driver = await w.parts.ensure(0)
    assert driver is not None and w.parts.drivers == {0: driver}
    assert driver.position[kind] == 1 and driver.buffered == 1 and not w.parts.waiting
    assert await w.parts.ensure(2) is None  # not ours


async def test_a_rebalance_while_the_offsets_are_read_makes_no_driver() -> None:
    w = World()
    w.parts.rebalance_completed({0, 1})
    gate = asyncio.Event()

    async def slow(p: int) -> list[int | None]:
        await gate.wait()
        return [0] * len(INPUT_KINDS)

    w.parts.positions = slow
    making = asyncio.create_task(w.parts.ensure(1))
    await asyncio.sleep(0)
    w.parts.rebalance_started()  # a revocation starts meanwhile
    gate.set()
    assert await making is None and not w.parts.drivers
    w.parts.rebalance_completed({0})
    w.parts.waiting[1] = []
    w.parts.rebalance_completed({0})
    assert 1 not in w.parts.waiting  # records of a partition no longer ours are dropped


async def test_revocation_drops_drivers_and_stopping_makes_none() -> None:
    w = World()
    w.parts.rebalance_completed({0, 1})
    assert await w.parts.ensure(0) is not None and await w.parts.ensure(1) is not None
    w.parts.drop({1})
    assert set(w.parts.drivers) == {0}
    w.stopping = True
    assert await w.parts.ensure(1) is None


async def test_only_the_first_cut_partition_goes_on() -> None:
    """At a midnight every account is due: a partition over its step budget is cut, and another
    partition cut after it waits until the first is done."""
    w = World(budget=2)
    w.parts.rebalance_completed({0, 1})
    topics = {p: topics_of(p + 1) for p in (0, 1)}
    for p in (0, 1):
        driver = await w.parts.ensure(p)
        assert driver is not None
        for records in topics[p]:
            for r in records:
                driver.offer(r, 0.0)

    def hw(p: int) -> list[int | None]:
        return [len(records) for records in topics[p]]

    await w.parts.step([0, 1], hw, 2)
    assert list(w.parts.cut) == [0, 1] and w.parts.cut_waiting.is_set()
    assert not w.parts.uncut({0}) and w.parts.first_cut() == [0]
    steps = 0
    while w.parts.drivers[0].paused:
        before = w.parts.drivers[1].stats.evaluations
        await w.parts.step([0, 1], hw, 2)
        assert w.parts.drivers[1].stats.evaluations == before  # the second waits its turn
        steps += 1
    assert steps > 1 and w.parts.uncut({0})
    while w.parts.cut:
        await w.parts.step(w.parts.first_cut(), hw, 2)
    assert w.parts.uncut({0, 1}) and all(d.buffered == 0 for d in w.parts.drivers.values())
