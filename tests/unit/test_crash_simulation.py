"""The worker's durability protocol crashed at every boundary, in memory, against an uninterrupted run.

The production objects run unchanged -- :class:`Shell` (offer, reread, step, make durable),
:class:`PartitionSet`, :class:`OffsetTracker`, :class:`Checkpoint`, :class:`Outputs` and the engine's
:class:`PartitionDriver` -- wired to an in-memory broker instead of Faust and Kafka:

- input topics (5 per partition) with committed offsets, read by a consumer that fetches in random
  chunks, interleaves topics and partitions at random and now and then skips records (a hole: the
  tracker seeks back, as it does for Faust's);
- an output log where a sent record lands once settled (one in flight at a crash either landed or
  did not: both are tried);
- the table's changelog, from which a restart restores the states (as Faust's recovery does), and
  acks that commit the contiguous offsets at once (the worst case: nothing acked is ever redone).

A crash is an exception raised at the N-th boundary (after each send, before and after each state
written, before and after each ack; ``Boundaries`` counts them over every life of a run); the run is
then restarted from what was durable and goes on until the worker is idle (every input committed to
its end, nothing held). Its outcome -- what a consumer reads of the outputs and the final states --
must equal the uninterrupted run's. Each of ``HEALTHMON_SIM_RUNS`` runs (8) crashes about 180 times,
at most ``HEALTHMON_SIM_APART`` (30) boundaries apart; ``HEALTHMON_SIM_EXHAUSTIVE=1`` adds one run per
boundary of the uninterrupted run with a single crash there (minutes). Two broken protocols (acks
before states, states before the outputs are settled) show the simulation finds what it is meant to.

What it found and what fixed it: a restart's merge starts again from the committed offsets, which
may be behind a state written before the acks of the records it folded; such a state owes an
evaluation in a later slot than the one the merge reopens. The driver kept one open slot and closed
every owed account with it (an evaluation the uninterrupted run never made: a cancellation's alerts
resolved early), or evaluated an account of an earlier slot before its last events of that slot were
folded again (a rule pending from the wrong time). Each owed account now waits for its own slot.
"""

from __future__ import annotations

import asyncio
import os
import random
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from rules.engine import load_rules
from streams.core.events import TYPE_TOPIC
from streams.core.scoring import load_scoring
from streams.core.state import INPUT_KINDS
from streams.engine.driver import DriverConfig, PartitionDriver, Record, StateStore
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator
from streams.worker.checkpoint import Checkpoint, Durable, State
from streams.worker.codecs import AccountStateCodec
from streams.worker.offsets import Consumer, OffsetTracker
from streams.worker.outputs import Out, Outputs
from streams.worker.partitions import PartitionSet
from streams.worker.shell import Shell

END = datetime(2026, 3, 1, tzinfo=UTC)
PARTITIONS = 2
NAMES = {"health": "health", "changes": "changes", "alerts": "alerts", "errors": "errors"}
CODEC = AccountStateCodec()
KINDS = ("after send", "before state write", "after state write", "before ack", "after ack")
#: Runs of the simulation, and the most boundaries between two crashes of a run.
RUNS = int(os.environ.get("HEALTHMON_SIM_RUNS", "8"))
APART = int(os.environ.get("HEALTHMON_SIM_APART", "30"))
#: What a consumer reads of the outputs (the final states and the snapshots' deltas are compared apart).
PUBLISHED = ("finals", "alerts", "changes", "errors")
EXHAUSTIVE = os.environ.get("HEALTHMON_SIM_EXHAUSTIVE") == "1"
#: Simulated time per fetch round (the worker's tick is 0.05 s; a Kafka fetch takes milliseconds).
ROUND_S = 0.05
#: HEALTHMON_STATE_FLUSH_S here: the states are written every ten rounds.
FLUSH_S = 0.5
ENGINE = Engine(load_scoring(None), load_rules(None))  # holds no account state: shared by every run
#: Evaluation slots of a day: the protocol is the same, the runs are shorter.
SLOT_MS = 86_400_000


class Crash(Exception):
    """The process dies here."""


def history(accounts: int, days: int, seed: int) -> dict[int, list[list[tuple[bytes, bytes]]]]:
    """A simulated history as the five topics of each partition (by account), in offset order."""
    topics: dict[int, list[list[tuple[bytes, bytes]]]] = {
        p: [[] for _ in INPUT_KINDS] for p in range(PARTITIONS)
    }
    ids: dict[str, int] = {}
    for ev in Simulator(accounts=accounts, days=days, seed=seed, end=END).events():
        p = ids.setdefault(ev["account_id"], len(ids) % PARTITIONS)
        topics[p][INPUT_KINDS.index(TYPE_TOPIC[ev["type"]])].append(
            (ev["account_id"].encode(), orjson.dumps(ev))
        )
    return topics


@dataclass
class Broker:
    """What survives a crash: the input topics and their committed offsets, the outputs that
    landed, the changelog."""

    topics: dict[int, list[list[tuple[bytes, bytes]]]]
    committed: dict[tuple[int, int], int] = field(default_factory=dict)
    outputs: list[Out] = field(default_factory=list)
    changelog: list[tuple[int, bytes, bytes]] = field(default_factory=list)
    #: Forced releases and late records seen by the lives that reached idle: none is expected (the
    #: fetch rounds are far shorter than HEALTHMON_MAX_BLOCK_S; a starved topic would make its
    #: records late and the outcome differ for a reason that is not the protocol's).
    forced: int = 0

    def end(self, p: int, k: int) -> int:
        return len(self.topics[p][k])

    def idle(self) -> bool:
        """Every input committed to its end."""
        return all(
            self.committed.get((p, k), 0) == self.end(p, k)
            for p in self.topics
            for k in range(len(INPUT_KINDS))
        )

    def outcome(self) -> dict[str, Any]:
        """What a consumer reads once the worker is idle: the final states (the changelog's last
        record per key), the last snapshot of each account, every alert, band change and dead letter
        record (a redo publishes some again: the same records). The snapshots before the last are
        not compared: a restart may publish a preview at a point an uninterrupted run did not. The
        last snapshots' ``deltas`` (score changes over 1, 7 and 30 days, from the states'
        ``score_history``) are kept apart, to tell which differs."""
        states: dict[bytes, bytes] = {}
        for _, key, value in self.changelog:
            states[key] = value
        finals: dict[bytes | None, dict[str, Any]] = {}
        published: dict[str, set[tuple[bytes | None, bytes | None]]] = {
            "alerts": set(),
            "changes": set(),
            "errors": set(),
        }
        for topic, key, value, *_ in self.outputs:
            if topic == "health":
                finals[key] = orjson.loads(value or b"{}")
            else:
                published[topic].add((key, value))
        deltas = {key: snap.pop("deltas", None) for key, snap in finals.items()}
        return {"states": states, "finals": finals, "deltas": deltas, **published}


@dataclass
class Boundaries:
    """Counts the protocol's boundaries over every life of a run; raises :class:`Crash` at each of
    the boundary numbers in ``crash_at``."""

    crash_at: set[int] = field(default_factory=set)
    passed: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    crashed: dict[str, int] = field(default_factory=dict)

    def __call__(self, what: str) -> None:
        self.passed += 1
        self.kinds[what] = self.kinds.get(what, 0) + 1
        if self.passed in self.crash_at:
            self.crashed[what] = self.crashed.get(what, 0) + 1
            raise Crash(what)


class Process:
    """One life of the worker: restored from what the broker holds, reading from the committed offsets."""

    def __init__(
        self,
        broker: Broker,
        boundaries: Boundaries,
        seed: int,
        checkpoint_class: type[Checkpoint[Out]] = Checkpoint,
        step_budget: int | None = 40,
    ) -> None:
        self.broker = broker
        self.boundaries = boundaries
        self.rng = random.Random(seed)
        self.mono = 0.0
        self.wall = END.timestamp() + 60
        self.in_flight: list[Out] = []
        self.acked: set[tuple[int, int, int]] = set()  # Faust's acked offsets: in memory, lost at a crash
        store = StateStore()
        latest = {key: value for _, key, value in broker.changelog}
        for key, value in latest.items():  # Faust's recovery: the changelog into the table
            store.data[key.decode()] = CODEC.loads(value)
        self.position = {
            (p, k): broker.committed.get((p, k), 0) for p in broker.topics for k in range(len(INPUT_KINDS))
        }
        config = DriverConfig(
            slot_ms=SLOT_MS,
            hold_s=0.0,
            max_age_s=float("inf"),
            max_future_s=float("inf"),
            step_budget=step_budget,
        )
        self.offsets = OffsetTracker(
            len(INPUT_KINDS),
            Consumer(self.probe, self.seek, lambda k, p, a, b: None, lambda k, p: broker.end(p, k)),
            lambda: self.mono,
            lambda: self.wall,
            INPUT_KINDS,
        )
        self.partitions = PartitionSet(
            lambda p, positions: PartitionDriver(p, ENGINE, store, config, positions, rebuild=False),
            self.start_positions,
            lambda: set(broker.topics),
            lambda: self.checkpoint.broken is not None,
            lambda: self.wall,
        )
        self.checkpoint = checkpoint_class(
            Durable(self.send, self.settle, self.write_changelog, self.ack), FLUSH_S, lambda: self.mono
        )
        sink = Outputs(lambda: None, NAMES, INPUT_KINDS, lambda: "changelog")
        self.shell: Shell[Out] = Shell(
            self.partitions, self.offsets, self.checkpoint, sink.records, step_budget
        )

    # --- the in-memory broker behind the production interfaces -------------------------------------

    async def start_positions(self, p: int) -> list[int | None]:
        self.offsets.record_ends(p, [self.broker.end(p, k) for k in range(len(INPUT_KINDS))])
        return [
            self.broker.committed.get((p, k), 0) for k in range(len(INPUT_KINDS))
        ]  # as the broker has them

    async def probe(self, k: int, p: int, offset: int) -> int | None:
        return offset if offset < self.broker.end(p, k) else None

    async def seek(self, k: int, p: int, offset: int) -> bool:
        self.position[(p, k)] = offset
        return True

    async def send(self, records: list[Out]) -> list[Out]:
        for rec in records:
            self.in_flight.append(rec)
            self.boundaries("after send")
        return list(records)

    async def settle(self, sent: list[Out]) -> None:
        self.broker.outputs.extend(self.in_flight)
        self.in_flight.clear()

    async def write_changelog(self, rows: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        reached: dict[int, int] = {}
        for p, key, value in rows:
            self.boundaries("before state write")
            self.broker.changelog.append((p, key, value))
            reached[p] = len(self.broker.changelog) - 1
            self.boundaries("after state write")
        return reached

    def ack(self, handle: tuple[int, int, int]) -> None:
        """Faust commits the acked offsets up to the first one not acked (here at once)."""
        self.boundaries("before ack")
        b = self.broker
        self.acked.add(handle)
        p, k, _ = handle
        n = b.committed.get((p, k), 0)
        while (p, k, n) in self.acked:
            n += 1
        b.committed[(p, k)] = n
        self.boundaries("after ack")

    def fetch(self) -> list[tuple[int, Record]]:
        """A chunk of one topic of one partition, now and then after a few skipped records."""
        left = [(p, k) for (p, k), pos in self.position.items() if pos < self.broker.end(p, k)]
        if not left:
            return []
        p, k = self.rng.choice(sorted(left))
        pos = self.position[(p, k)]
        if self.rng.random() < 0.05:
            pos += self.rng.randint(1, 3)  # the client skipped records: a hole
        end = min(self.broker.end(p, k), pos + self.rng.randint(1, 12))
        self.position[(p, k)] = max(end, self.position[(p, k)])
        topic = self.broker.topics[p][k]
        return [(p, Record(k, o, topic[o][0], topic[o][1], (p, k, o))) for o in range(pos, end)]

    # --- the worker's loop, as its agent and timers run it ------------------------------------------

    async def run(self, max_rounds: int = 20_000) -> None:
        parts = set(self.broker.topics)
        self.partitions.rebalance_completed(parts)
        for _ in range(max_rounds):
            self.mono += ROUND_S
            self.wall += ROUND_S
            for p in parts:  # the read_ends timer
                self.offsets.record_ends(p, [self.broker.end(p, k) for k in range(len(INPUT_KINDS))])
            batch = self.fetch()
            if batch:  # the ingest agent
                touched = await self.shell.offer(batch, self.wall)
                await self.shell.step(sorted(touched))
                while not self.partitions.uncut(touched):  # run_cut
                    await self.shell.step(self.partitions.first_cut())
            # the tick (HEALTHMON_TICK_S, a round here), whether input comes or not
            await self.shell.tick(parts)
            while self.partitions.cut:
                await self.shell.step(self.partitions.first_cut())
            if not batch and self.broker.idle() and not self.checkpoint:
                self.count_forced()
                return
        b = self.broker
        stuck = {
            (p, k): (b.committed.get((p, k), 0), b.end(p, k))
            for p in parts
            for k in range(len(INPUT_KINDS))
            if b.committed.get((p, k), 0) != b.end(p, k)
        }
        drivers = {p: d.describe(self.offsets.highwaters(p)) for p, d in self.drivers_now().items()}
        cp = self.checkpoint
        raise AssertionError(
            f"the worker never became idle: committed/end {stuck}; {drivers}; checkpoint broken "
            f"{cp.broken!r}, acks {cp.acks[:5]}, held {sum(map(len, cp.held.values()))}, since {cp.since}"
        )

    def drivers_now(self) -> dict[int, PartitionDriver]:
        return self.partitions.drivers

    def count_forced(self) -> None:
        for d in self.partitions.drivers.values():
            self.broker.forced += d.stats.forced_releases + d.stats.late

    def die(self, landed: bool) -> None:
        """The process is gone: what was in flight landed in the log or not."""
        self.count_forced()
        if landed:
            self.broker.outputs.extend(self.in_flight)
        self.in_flight.clear()


async def run(
    topics: dict[int, list[list[tuple[bytes, bytes]]]],
    crash_at: set[int],
    landed: random.Random | bool = False,
    checkpoint_class: type[Checkpoint[Out]] = Checkpoint,
    seed: int = 1,
) -> tuple[Broker, Boundaries]:
    """A run to idle, crashed at each boundary number in ``crash_at`` (counted over all its lives)
    and restarted each time from what was durable, fetching in another order. ``landed``: whether
    what was in flight at a crash reached the log (a random choice per crash, when a Random)."""
    broker = Broker(topics)
    boundaries = Boundaries(set(crash_at))
    for life in range(len(crash_at) + 1):
        proc = Process(broker, boundaries, seed + 1000 * life, checkpoint_class)
        try:
            await proc.run()
            return broker, boundaries
        except Crash:
            proc.die(landed.random() < 0.5 if isinstance(landed, random.Random) else landed)
    raise AssertionError("more lives than crashes")


def differences(got: dict[str, Any], want: dict[str, Any], what: tuple[str, ...] = ()) -> list[str]:
    return [w for w in what or tuple(want) if got[w] != want[w]]


@pytest.fixture(scope="module")
def topics() -> dict[int, list[list[tuple[bytes, bytes]]]]:
    return history(accounts=6, days=14, seed=5)


@pytest.fixture(scope="module")
def reference(topics) -> tuple[dict[str, Any], Boundaries]:
    broker, boundaries = asyncio.run(run(topics, set()))
    assert broker.forced == 0
    return broker.outcome(), boundaries


def crash_points(rng: random.Random, total: int, most_apart: int) -> set[int]:
    """Boundary numbers from 1 to past ``total`` (a restart redoes work: a run passes more), at most
    ``most_apart`` apart."""
    points, n = set(), 0
    while n < total * 1.5:
        n += rng.randint(1, most_apart)
        points.add(n)
    return points


async def test_the_outcome_does_not_depend_on_how_the_input_was_fetched(topics, reference) -> None:
    want, boundaries = reference
    assert want["alerts"] and want["finals"] and want["states"], "the history must publish and alert"
    assert set(boundaries.kinds) == set(KINDS)
    for seed in (2, 3):
        broker, _ = await run(topics, set(), seed=seed)
        assert differences(broker.outcome(), want) == []


_runs: dict[int, tuple[Broker, Boundaries]] = {}


async def crashed_run(topics, reference, seed: int) -> Broker:
    """Seed ``seed``'s run, crashed every few boundaries (about 180 crash points, every kind) and
    restarted from what was durable each time; run once for both tests below."""
    if seed not in _runs:
        _, boundaries = reference
        rng = random.Random(seed)
        _runs[seed] = await run(topics, crash_points(rng, boundaries.passed, APART), rng, seed=seed)
    broker, crashed = _runs[seed]
    assert set(crashed.crashed) == set(KINDS) and sum(crashed.crashed.values()) >= 120, crashed.crashed
    assert broker.forced == 0, "a topic starved: time ran ahead of its records"
    return broker


@pytest.mark.parametrize("seed", range(RUNS))
async def test_crashes_at_every_kind_of_boundary_publish_what_the_uninterrupted_run_does(
    topics, reference, seed
) -> None:
    """What a consumer reads once the worker is idle: last snapshots, alerts, band changes, dead letters."""
    broker = await crashed_run(topics, reference, seed)
    assert differences(broker.outcome(), reference[0], PUBLISHED) == []


@pytest.mark.parametrize("seed", range(RUNS))
async def test_crashes_at_every_kind_of_boundary_leave_the_final_states_of_the_uninterrupted_run(
    topics, reference, seed
) -> None:
    broker = await crashed_run(topics, reference, seed)
    assert differences(broker.outcome(), reference[0], ("states", "deltas")) == []


@pytest.mark.skipif(not EXHAUSTIVE, reason="HEALTHMON_SIM_EXHAUSTIVE=1: one run per boundary (minutes)")
@pytest.mark.parametrize("landed", [False, True], ids=["in-flight-lost", "in-flight-landed"])
async def test_a_crash_at_each_boundary_of_the_uninterrupted_run(topics, reference, landed) -> None:
    want, boundaries = reference
    failed: dict[int, list[str]] = {}
    for n in range(1, boundaries.passed + 1):
        broker, crashed = await run(topics, {n}, landed)
        assert sum(crashed.crashed.values()) == 1  # the crash happened there
        if diff := differences(broker.outcome(), want):
            failed[n] = diff
    assert not failed, (
        f"{len(failed)} of {boundaries.passed} crash points differ: {dict(list(failed.items())[:5])}"
    )


class AcksBeforeStates(Checkpoint[Out]):
    """A broken protocol: the inputs acked before the states they changed are written."""

    async def flush(self, stopping: bool = False) -> dict[int, dict[str, State]]:
        for handle in self.acks:
            self.durable.ack(handle)
        self.acks.clear()
        return await super().flush(stopping)


class StatesBeforeOutputs(Checkpoint[Out]):
    """A broken protocol: the states written before the outputs they imply are acknowledged."""

    async def flush(self, stopping: bool = False) -> dict[int, dict[str, State]]:
        unsettled, self.unsettled = self.unsettled, []
        flushed = await super().flush(stopping)
        if unsettled:
            await self.durable.settle(unsettled)
        return flushed


@pytest.mark.parametrize("broken", [AcksBeforeStates, StatesBeforeOutputs])
async def test_the_simulation_finds_a_broken_order(topics, reference, broken) -> None:
    want, boundaries = reference
    rng = random.Random(0)  # the crash points of seed 0, where the right order ends as the reference
    broker, _ = await run(topics, crash_points(rng, boundaries.passed, APART), rng, broken, seed=0)
    assert differences(broker.outcome(), want), f"no crash of {broken.__name__} made a difference"
