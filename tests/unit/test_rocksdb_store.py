"""The driver on Faust's RocksDB store: the same outputs and states as on the memory store, with the
step's states written back in one batch with the changelog offset, and a restart that reads them."""

from __future__ import annotations

import random
from pathlib import Path

import faust
from faust.types import TP

from streams.core.metrics import Portfolio
from streams.core.state import AccountState
from streams.engine.driver import (
    RESERVED_PREFIX,
    DriverConfig,
    Output,
    PartitionDriver,
    RocksStateStore,
    StateStore,
    state_store,
)
from streams.worker.codecs import STATE_CODEC
from tests.unit.test_driver import Run, history, topics_of  # noqa: F401  (history is a fixture)


def rocks_table(datadir: Path) -> tuple[faust.App, RocksStateStore]:
    app = faust.App("t-rocks", broker="kafka://127.0.0.1:1", store="rocksdb://", datadir=str(datadir))
    table = app.Table("accounts", partitions=1, key_type=str)
    table.key_serializer = "raw"
    table.value_serializer = STATE_CODEC
    store = state_store(table.data)
    assert isinstance(store, RocksStateStore)
    return app, store


class RocksRun(Run):
    """A run whose steps are made durable as the worker does: each step's states go to the
    changelog (here: a counter for its offsets), then into the partition's database."""

    def __init__(self, store: StateStore, config: DriverConfig | None = None) -> None:
        super().__init__(store.for_partition(0), config)
        self.changelog_offset = -1

    def collect(self, out: Output) -> None:
        super().collect(out)
        written = [(a.encode(), s.dumps()) for a, s in out.states.items()]
        self.changelog_offset += len(written)
        self.store.commit(written, self.changelog_offset if written else None)

    def finals(self) -> dict[str, bytes]:
        assert isinstance(self.store, RocksStateStore)
        return {
            k.decode(): (Portfolio.loads(v) if k.startswith(b"\x00") else AccountState.loads(v)).dumps()
            for k, v in self.store.table_store._visible_items(self.store.db)
        }


def test_rocksdb_gives_the_memory_result(history, tmp_path):  # noqa: F811
    topics = topics_of(history)
    memory = Run()
    memory.feed(topics, random.Random(4))
    app, root = rocks_table(tmp_path)
    rocks = RocksRun(root)
    rocks.feed(topics, random.Random(4))
    assert memory.episodes(), "the history must fire alerts for the comparison to mean something"
    assert rocks.records == memory.records
    assert rocks.finals() == memory.finals()
    assert isinstance(rocks.store, RocksStateStore) and not rocks.store.touched  # all written back
    changelog = TP(app.tables["accounts"].changelog_topic.get_topic_name(), 0)
    assert root.table_store.persisted_offset(changelog) == rocks.changelog_offset > 0


def test_budgeted_steps_on_rocksdb_give_the_memory_result(history, tmp_path):  # noqa: F811
    """A freeze and a slot's close cut over steps, each step written back before the next: the freeze
    reads every state as written (``peek``), and nothing of a step is lost or read stale."""
    topics = topics_of(history)
    memory = Run()
    memory.feed(topics, random.Random(4))
    _, root = rocks_table(tmp_path)
    rocks = RocksRun(root, DriverConfig(hold_s=1.0, step_budget=3))
    rocks.feed(topics, random.Random(4))
    assert rocks.driver.stats.paused_steps
    assert rocks.records == memory.records
    assert rocks.finals() == memory.finals()


def test_a_state_changed_twice_in_one_step_keeps_both_changes(tmp_path):
    _, root = rocks_table(tmp_path)
    store = root.for_partition(0)
    store.put(AccountState(account_id="a", partition=0))
    a = store.get("a")
    assert a is not None
    a.counts["login"] = 1
    again = store.get("a")
    assert again is not None and again.counts == {"login": 1}  # a read in the step sees the change
    store.commit([(b"a", again.dumps())], 0)
    fresh = root.for_partition(0).get("a")  # a new view: read from the database
    assert fresh is not None and fresh.counts == {"login": 1} and fresh is not a


def test_restart_on_the_local_database_after_a_crash(history, tmp_path):  # noqa: F811
    """A SIGKILL mid-way: what the last step touched but did not commit is lost with the process;
    the new driver rebuilds its schedule from the database, skips what the states already hold, and
    ends where an uninterrupted memory run ends."""
    topics = topics_of(history)
    reference = Run()
    reference.feed(topics, random.Random(1))

    _, root = rocks_table(tmp_path)
    first = RocksRun(root)
    rng = random.Random(2)
    first.feed(topics, rng, crash_after=60)
    assert 0 < first.driver.stats.processed < len(history) // 2
    committed = first.finals()
    states = [AccountState.loads(v) for k, v in committed.items() if not k.startswith(RESERVED_PREFIX)]
    folded = [max((st.offsets[k] for st in states), default=-1) for k in range(len(topics))]
    resume = [max(0, f + 1 - rng.randint(0, 400)) for f in folded]
    second = RocksRun(root)  # a new driver on a fresh view of the same database
    assert second.driver.schedule_size > 0  # due times rebuilt from the stored states
    # ... reading only their schedule fields (RocksStateStore.briefs): as the whole states say
    assert second.driver._scheduled == {s.account_id: s.next_due for s in states if s.next_due is not None}
    assert second.driver.bands == {s.account_id: s.last_change_band or "none" for s in states}
    assert second.driver._dirty == {s.account_id: s.owed for s in states if s.owed is not None}
    # The worker rebuilds in chunks, giving its event loop a turn between them: the same schedule.
    d = second.driver
    chunked = PartitionDriver(0, d.engine, root.for_partition(0), d.config, rebuild=False)
    assert chunked.schedule_size == 0
    assert sum(1 for _ in chunked.rebuild(chunk=3)) == len(states) // 3 > 1
    assert (chunked._due, chunked._scheduled, chunked.bands, chunked._dirty, chunked.portfolio) == (
        d._due,
        d._scheduled,
        d.bands,
        d._dirty,
        d.portfolio,
    )
    second.records = list(first.records)
    second.changelog_offset = first.changelog_offset
    second.feed([t[r:] for t, r in zip(topics, resume, strict=True)], rng)
    assert second.driver.stats.redelivered > 0
    assert second.finals() == reference.finals()
    assert sorted(set(second.episodes())) == sorted(set(reference.episodes()))
