"""The partition driver: the result depends on the input only, not on how it was read."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime

import orjson
import pytest

from rules.engine import load_rules
from streams.core.aggregate import apply_event
from streams.core.events import EVENT_ADAPTER, TYPE_TOPIC
from streams.core.metrics import (
    PERCENTILE_OF,
    PORTFOLIO_MIN_ACCOUNTS,
    Percentiles,
    Portfolio,
    compute_metrics,
    portfolio_at,
    with_portfolio,
)
from streams.core.scoring import load_scoring
from streams.core.state import DAY_S, INPUT_KINDS, AccountState
from streams.engine.driver import DriverConfig, Output, PartitionDriver, Record, StateStore, run_offline
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator
from streams.worker.codecs import AccountStateCodec

END = datetime(2026, 3, 1, tzinfo=UTC)
CODEC = AccountStateCodec()
NOW = END.timestamp() + 60  # the wall clock the tests pretend it is


def engine() -> Engine:
    return Engine(load_scoring(None), load_rules(None))


def topics_of(events: list[dict]) -> list[list[Record]]:
    """The simulated events as five topics of one partition (per-topic offsets, in order)."""
    per: list[list[Record]] = [[] for _ in INPUT_KINDS]
    for ev in events:
        k = INPUT_KINDS.index(TYPE_TOPIC[ev["type"]])
        per[k].append(Record(k, len(per[k]), ev["account_id"].encode(), orjson.dumps(ev)))
    return per


@pytest.fixture(scope="module")
def history() -> list[dict]:
    # 12 accounts: at least PORTFOLIO_MIN_ACCOUNTS active ones, so the partition's portfolio ranks
    # them and every property below covers the percentiles too.
    return list(Simulator(accounts=12, days=40, seed=3, end=END).events())


class Run:
    """Feeds topics to a driver the way a consumer might: in chunks, interleaved at random."""

    def __init__(
        self, store: StateStore | None = None, config: DriverConfig | None = None, drain: bool = True
    ) -> None:
        self.store = store or StateStore()
        self.config = config or DriverConfig(hold_s=1.0)
        self.driver = PartitionDriver(0, engine(), self.store, self.config)
        self.records: list[tuple[str, bytes, bytes, int]] = []
        self.dead: list[str] = []
        self.now = NOW
        #: A step that stopped at its budget is stepped again before more input (as the worker's
        #: ingest agent does), or not (input keeps coming, as a tick may step it later).
        self.drain = drain
        self.most_work_in_a_step = 0

    def step(self, ends: list[int | None]) -> None:
        before = self.driver.stats.evaluations
        self.collect(self.driver.step(ends, self.now))
        self.most_work_in_a_step = max(self.most_work_in_a_step, self.driver.stats.evaluations - before)

    def collect(self, out: Output) -> None:
        self.records.extend(out.records)
        self.dead.extend(d.reason for d in out.dead_letters)

    def feed(
        self,
        topics: list[list[Record]],
        rng: random.Random,
        chunk: int = 50,
        ends: list[int | None] | None = None,
        crash_after: int | None = None,
        crash_when: Callable[[], bool] | None = None,
    ) -> None:
        """Offer the topics; ``ends`` are the end offsets in Kafka (default: the last record's);
        ``crash_after`` stops after that many chunks, as a SIGKILL would."""
        cursors = [0] * len(topics)
        chunks = 0
        ends = ends or [t[-1].offset + 1 if t else 0 for t in topics]
        while any(c < len(t) for c, t in zip(cursors, topics, strict=True)):
            k = rng.choice([i for i, t in enumerate(topics) if cursors[i] < len(t)])
            n = rng.randint(1, chunk)
            for rec in topics[k][cursors[k] : cursors[k] + n]:
                self.driver.offer(rec, self.now)
            cursors[k] += n
            self.now += rng.random() * 0.01
            self.step(ends)
            while self.drain and self.driver.paused:
                self.step(ends)
            chunks += 1
            if crash_after is not None and chunks >= crash_after:
                return
            if crash_when is not None and crash_when():
                return
        self.settle(ends)

    def settle(self, ends: list[int | None]) -> None:
        self.now += 10  # past the hold: idle topics release the rest
        self.step(ends)
        while self.driver.paused:
            self.step(ends)

    def episodes(self) -> list[tuple[str, str, str]]:
        out = []
        for name, _, value, _ in self.records:
            if name == "alerts":
                a = orjson.loads(value)
                out.append((a["alert_id"], a["status"], a["starts_at"]))
        return out

    def finals(self) -> dict[str, bytes]:
        """Every record of the table: the account states and the partition's portfolio."""
        return {key: value.dumps() for key, value in self.store.data.items()}

    def states(self) -> list[AccountState]:
        return list(self.store.states(0))

    def snapshots(self) -> list[dict]:
        return [orjson.loads(v) for name, _, v, _ in self.records if name == "health"]


def test_same_result_whatever_the_interleaving(history):
    topics = topics_of(history)
    runs = [Run() for _ in range(3)]
    for seed, run in enumerate(runs):
        run.feed(topics, random.Random(seed), chunk=[5, 80, 400][seed])
    first = runs[0]
    assert first.episodes(), "the history must fire alerts for the comparison to mean something"
    ranked = [s for s in first.snapshots() if s["metrics"]["usage_percentile"] is not None]
    assert len(ranked) > len(first.snapshots()) // 2, "the portfolio measures must be live here"
    for other in runs[1:]:
        assert other.records == first.records
        assert other.finals() == first.finals()


@pytest.mark.parametrize("budget", [1, 5, 13])
@pytest.mark.parametrize("drain", [True, False], ids=["drained", "input-while-paused"])
def test_a_step_budget_changes_nothing_but_how_the_work_is_cut(history, budget, drain):
    """A midnight (every account due, the portfolio frozen from every state) or a slot's close spread
    over steps of at most ``budget`` evaluations: the same records in the same order and the same
    states as in unbounded steps, whether or not input keeps arriving while the driver is paused."""
    topics = topics_of(history)
    whole = Run()
    whole.feed(topics, random.Random(3))
    split = Run(config=DriverConfig(hold_s=1.0, step_budget=budget), drain=drain)
    split.feed(topics, random.Random(3))
    assert split.driver.stats.paused_steps, "the budget must have cut some step for this to mean something"
    assert split.most_work_in_a_step <= budget < whole.most_work_in_a_step
    assert split.records == whole.records
    assert split.finals() == whole.finals()
    assert split.driver.stats.evaluations == whole.driver.stats.evaluations


def test_a_crash_between_budgeted_steps_recovers_the_uninterrupted_result(history):
    """A worker killed while a midnight is half evaluated: the states written so far and a fresh
    driver on them give the uninterrupted run's final states and alert episodes."""
    topics = topics_of(history)
    whole = Run()
    whole.feed(topics, random.Random(8))
    config = DriverConfig(hold_s=1.0, step_budget=2)
    crashed = Run(config=config, drain=False)
    # Killed at the first cut step after a midnight's freeze has begun.
    crashed.feed(
        topics,
        random.Random(8),
        crash_when=lambda: crashed.driver.paused and crashed.driver.portfolio is not None,
    )
    assert crashed.driver.paused, "the crash must come while a step's work is cut"
    restarted = Run(store=crashed.store, config=config)  # the table as written; offsets in the states
    restarted.records = crashed.records
    restarted.feed(topics, random.Random(9))
    assert restarted.finals() == whole.finals()
    assert set(restarted.episodes()) == set(whole.episodes())


@pytest.mark.parametrize("seed", range(6))
def test_a_restart_whose_merge_starts_behind_some_states_ends_as_the_uninterrupted_run(history, seed):
    """After a crash the merge starts again from the committed offsets, which can be behind some
    states: a state is written before the acks of what it folded, and a changelog cut mid-flush
    keeps some accounts' latest states and others' earlier ones. Here the table mixes the states of
    two moments a few chunks apart, and the merge starts again from the first record. An account
    ahead of the merge owes an evaluation in a later slot than the merge's: it is made when the
    merge reaches that slot's end, not with the earlier slot (which resolved alerts early), and an
    account owing an earlier slot is evaluated after the rest of that slot's events are folded
    again (not at once: a rule pending from the wrong time). The result: the uninterrupted run's
    states, alert episodes and last snapshots."""
    topics = topics_of(history)
    config = DriverConfig(hold_s=1.0, slot_ms=6 * 3_600_000)
    whole = Run(config=config)
    whole.feed(topics, random.Random(4))
    rng = random.Random(seed)
    crash_after = rng.randint(50, 1200)
    moments = []
    for n in (crash_after, crash_after + 12):
        crashed = Run(config=config)
        crashed.feed(topics, random.Random(4), chunk=20, crash_after=n)
        moments.append({key: CODEC.loads(value) for key, value in crashed.finals().items()})
    earlier, later = moments
    # The portfolios are written first in a flush: the later moment's, with accounts of either.
    table = {
        key: (earlier if key in earlier and key[0] != "\x00" and rng.random() < 0.5 else later)[key]
        for key in later
    }
    restarted = Run(store=StateStore(table), config=config)
    slots = {s.owed * 1000 // config.slot_ms for s in restarted.states() if s.owed is not None}
    restarted.feed(topics, random.Random(5))
    assert restarted.finals() == whole.finals(), f"owed in slots {sorted(slots)}"
    assert restarted.driver.stats.portfolio_misses == 0
    assert set(restarted.episodes()) <= set(whole.episodes())
    last = {s["account_id"]: s for s in whole.snapshots()}
    assert {s["account_id"]: s for s in restarted.snapshots()} == last


def test_topic_by_topic_backlog_equals_interleaved(history):
    topics = topics_of(history)
    interleaved = Run()
    interleaved.feed(topics, random.Random(7))
    backlog = Run()
    ends: list[int | None] = [len(t) for t in topics]
    for t in topics:  # one whole topic after the other, as a consumer reading a backlog might
        for rec in t:
            backlog.driver.offer(rec, backlog.now)
        backlog.collect(backlog.driver.step(ends, backlog.now))
    backlog.settle(ends)
    assert backlog.records == interleaved.records


def test_a_topic_with_unread_records_holds_time_back(history):
    topics = topics_of(history)
    run = Run()
    usage = INPUT_KINDS.index("usage")
    ends: list[int | None] = [len(t) for t in topics]
    for k, t in enumerate(topics):
        if k != usage:
            for rec in t:
                run.driver.offer(rec, run.now)
    out = run.driver.step(ends, run.now + 100)
    # Usage has unread records and none read yet: nothing may pass its first event's time.
    first_usage_ms = min(orjson.loads(r.value)["occurred_at"] for r in topics[usage][:1])
    assert run.driver.clock_ms < datetime.fromisoformat(first_usage_ms).timestamp() * 1000
    assert not out.records


def test_redelivered_records_are_skipped_exactly(history):
    """A crash after states were written but before the input was committed redelivers an
    arbitrary range: the restarted driver skips exactly what each state already holds."""
    topics = topics_of(history)
    reference = Run()
    reference.feed(topics, random.Random(1))

    store = StateStore()
    first = Run(store)
    rng = random.Random(2)
    first.feed(topics, rng, crash_after=60)
    assert 0 < first.driver.stats.processed < len(history) // 2
    # What each topic had folded in somewhere; the consumer resumes from an older committed offset.
    folded = [max((st.offsets[k] for st in first.states()), default=-1) for k in range(len(topics))]
    resume = [max(0, f + 1 - rng.randint(0, 400)) for f in folded]
    second = Run(store)  # a new driver on the recovered states
    second.records = list(first.records)
    second.feed([t[r:] for t, r in zip(topics, resume, strict=True)], rng)
    assert second.driver.stats.redelivered > 0
    assert second.finals() == reference.finals()
    # Outputs: the same set of episodes (a redelivered range may repeat identical records).
    assert sorted(set(second.episodes())) == sorted(set(reference.episodes()))
    latest = {k: v for name, k, v, _ in second.records if name == "health"}
    assert latest == {k: v for name, k, v, _ in reference.records if name == "health"}


def test_due_schedule_keeps_one_live_entry_per_account(history):
    run = Run(config=DriverConfig(hold_s=0.0, live=True))
    topics = topics_of(history)
    run.feed(topics, random.Random(3), chunk=3)
    accounts = len(run.states())
    assert run.driver.schedule_size <= 3 * accounts


def test_a_backlog_behind_one_topic_at_the_present_keeps_its_event_time_slots(history):
    """A restart's catch-up: one topic is fetched up to the present while the others still hold
    weeks of backlog. The backlog is evaluated per event-time slot, as a replay is: live (50 ms)
    slots for it evaluated nearly every event on its own, and how many depended on fetch order."""
    first = INPUT_KINDS.index("usage")
    latest = max((e for e in history if TYPE_TOPIC[e["type"]] == "usage"), key=lambda e: e["occurred_at"])
    now_iso = datetime.fromtimestamp(NOW - 1, UTC).isoformat().replace("+00:00", "Z")
    topics = topics_of([*history, {**latest, "event_id": "present", "occurred_at": now_iso}])
    horizon_ms = int((NOW - 120) * 1000)  # live slots only for the stream's last two minutes
    runs = []
    for config in (DriverConfig(hold_s=1.0), DriverConfig(hold_s=1.0, live=True, live_within_s=120)):
        run = Run(config=config)
        ends = [t[-1].offset + 1 if t else 0 for t in topics]
        for rec in topics[first]:  # the current topic, whole, before anything of the others
            run.driver.offer(rec, run.now)
        run.step(ends)
        rest = [t if k != first else [] for k, t in enumerate(topics)]
        run.feed(rest, random.Random(8), ends=ends)
        runs.append(run)
    replay, live = ([r for r in run.records if r[3] < horizon_ms] for run in runs)
    assert len(replay) > 100
    assert live == replay
    assert runs[1].driver.stats.evaluations < runs[0].driver.stats.evaluations + 20


def test_hostile_but_valid_events_are_dead_lettered_with_a_reason(history):
    run = Run()
    base = {"event_id": "x", "account_id": "acct-hostile", "type": "login", "user_id": "u"}
    bad = [
        {**base, "event_id": "e1970", "occurred_at": "1970-01-01T00:00:00Z"},
        {**base, "event_id": "e0001", "occurred_at": "0001-01-01T00:00:00Z"},
        {**base, "event_id": "efuture", "occurred_at": "2999-01-01T00:00:00Z"},
    ]
    usage = INPUT_KINDS.index("usage")
    recs = [Record(usage, i, b"acct-hostile", orjson.dumps(e)) for i, e in enumerate(bad)]
    huge = {**base, "event_id": "ebig", "occurred_at": END.isoformat(), "note": "x" * 1_030_000}
    recs.append(Record(usage, 3, b"acct-hostile", orjson.dumps(huge)))
    for r in recs:
        run.driver.offer(r, run.now)
    run.settle([0, 4, 0, 0, 0])
    assert len(run.dead) == 4
    assert "older than the accepted range" in run.dead[0] and "older" in run.dead[1]
    assert "future" in run.dead[2] and "too large" in run.dead[3]
    assert run.store.get("acct-hostile") is None  # nothing folded, nothing walked


def test_a_failing_evaluation_is_isolated_and_keeps_the_folded_state(history, monkeypatch):
    run = Run()
    eng = run.driver.engine
    real = eng.evaluate
    victim = history[0]["account_id"]

    def evaluate(state, as_of, *args):
        if state.account_id == victim:
            raise RuntimeError("boom")
        return real(state, as_of, *args)

    monkeypatch.setattr(eng, "evaluate", evaluate)
    run.feed(topics_of(history), random.Random(4))
    errors = [orjson.loads(v) for name, _, v, _ in run.records if name == "errors"]
    assert errors and all(e["account_id"] == victim for e in errors)
    assert run.store.get(victim).counts  # its events are folded in all the same
    others = {k for name, k, _, _ in run.records if name == "health"}
    assert victim.encode() not in others and len(others) == len({e["account_id"] for e in history}) - 1


def test_an_old_account_does_not_walk_midnights():
    """An account whose last event is far behind the clock falls dormant instead of being
    evaluated at every midnight in between."""
    run = Run(config=DriverConfig(hold_s=0.0))
    usage = INPUT_KINDS.index("usage")
    t0 = END.timestamp() - 3000 * DAY_S
    evs = [
        {"event_id": "a", "account_id": "old", "type": "login", "user_id": "u",
         "occurred_at": datetime.fromtimestamp(t0, UTC).isoformat()},
        {"event_id": "b", "account_id": "new", "type": "login", "user_id": "u",
         "occurred_at": END.isoformat()},
    ]  # fmt: skip
    for i, e in enumerate(evs):
        run.driver.offer(Record(usage, i, e["account_id"].encode(), orjson.dumps(e)), run.now)
    run.settle([0, 2, 0, 0, 0])
    old = [r for r in run.records if r[1] == b"old" and r[0] == "health"]
    assert 1 <= len(old) <= 100


def test_a_hole_in_delivery_is_read_again_never_skipped(history):
    """A client that skips a range of one topic (Faust 0.15 did, after a restart): the records
    after the hole are set aside, not folded (folding them would mark the hole as applied, and
    its records would be skipped as redelivered), until the caller has sought back to it."""
    topics = topics_of(history)
    reference = Run()
    reference.feed(topics, random.Random(1))
    usage = INPUT_KINDS.index("usage")
    t = topics[usage]
    lo, hi = len(t) // 3, len(t) // 3 + 88
    lossy = [list(x) for x in topics]
    lossy[usage] = t[:lo] + t[hi:]
    run = Run()
    run.feed(lossy, random.Random(2), ends=[len(x) for x in topics])
    assert run.driver.gaps == {usage: (lo, hi)}
    assert run.driver.stats.gaps == 1
    assert run.driver.stats.gap_discarded == len(t) - hi
    assert max(st.offsets[usage] for st in run.states()) < lo
    assert "hole before" in run.driver.describe([len(x) for x in topics])
    # The caller seeks the consumer back to the hole: the rest of the topic comes again.
    rest: list[list[Record]] = [[] for _ in topics]
    rest[usage] = t[lo:]
    run.feed(rest, random.Random(3), ends=[len(x) for x in topics])
    assert not run.driver.gaps
    assert run.finals() == reference.finals()
    assert sorted(set(run.episodes())) == sorted(set(reference.episodes()))


def test_a_hole_the_broker_has_nothing_in_is_accepted(history):
    """Offsets a transactional producer's markers (or compaction) leave out: skip_to accepts
    them, and the record after the hole, which came again, is folded."""
    topics = topics_of(history)
    usage = INPUT_KINDS.index("usage")
    shifted = [list(x) for x in topics]
    cut = len(topics[usage]) // 2
    shifted[usage] = [
        Record(r.kind, r.offset + (2 if r.offset >= cut else 0), r.key, r.value) for r in topics[usage]
    ]
    ends = [x[-1].offset + 1 if x else 0 for x in shifted]
    run = Run()
    for rec in shifted[usage]:
        run.driver.offer(rec, run.now)
    assert run.driver.gaps == {usage: (cut, cut + 2)}
    run.driver.skip_to(usage, cut + 2)
    assert not run.driver.gaps
    for rec in shifted[usage][cut:]:
        run.driver.offer(rec, run.now)
    for k, x in enumerate(shifted):
        if k != usage:
            for rec in x:
                run.driver.offer(rec, run.now)
    run.settle(ends)
    reference = Run()
    reference.feed(topics, random.Random(1))
    assert run.driver.stats.processed == reference.driver.stats.processed
    assert {st.account_id: st.counts for st in run.states()} == {
        st.account_id: st.counts for st in reference.states()
    }


def test_a_silent_topic_is_released_only_while_others_deliver(history):
    """max_block_s bounds one stuck topic; a broker outage (nothing delivers) makes nothing late."""
    topics = topics_of(history)
    usage = INPUT_KINDS.index("usage")
    ends: list[int | None] = [len(t) for t in topics]
    run = Run(config=DriverConfig(hold_s=1.0, max_block_s=30.0))
    for k, t in enumerate(topics):
        for rec in t[: len(t) // 2 if k == usage else 0]:
            run.driver.offer(rec, run.now)
    run.driver.step(ends, run.now)
    # The other topics have unread records and deliver nothing: an outage, however long.
    run.driver.step(ends, run.now + 1)
    out = run.driver.step(ends, run.now + 3600)
    assert run.driver.stats.forced_releases == 0 and run.driver.stats.late == 0
    assert not [r for r in out.records if r[0] != "health"]
    # One topic delivers again while the others stay silent: after max_block_s they stop holding.
    later = run.now + 3601
    run.driver.offer(topics[usage][len(topics[usage]) // 2], later)
    run.driver.step(ends, later + 29)
    assert run.driver.stats.forced_releases == 0  # the outage restarted their clocks
    run.driver.step(ends, later + 31)
    assert run.driver.stats.forced_releases > 0


def _as_of(snapshot: dict) -> int:
    return int(datetime.fromisoformat(snapshot["as_of"]).timestamp())


def test_live_percentiles_equal_a_portfolio_built_at_midnight(history):
    """The driver's portfolio measures at a midnight equal those of a Portfolio built directly, with
    its own incremental API, from every account as of that midnight (events at or before it)."""
    run = Run()
    run.feed(topics_of(history), random.Random(5))
    cfg = run.driver.engine.scoring.metrics
    live = {(s["account_id"], _as_of(s)): s["metrics"] for s in run.snapshots() if _as_of(s) % DAY_S == 0}
    events = sorted(
        (EVENT_ADAPTER.validate_python(e) for e in history),
        key=lambda e: (e.occurred_at, INPUT_KINDS.index(TYPE_TOPIC[e.type])),
    )
    midnights = sorted({t for _, t in live})
    compared = 0
    for midnight in midnights[len(midnights) // 3 :: 7]:
        states: dict[str, AccountState] = {}
        for e in events:
            if int(e.occurred_at.timestamp()) > midnight:
                break
            st = states.setdefault(e.account_id, AccountState(account_id=e.account_id))
            apply_event(st, e)
        portfolio = Portfolio()
        raw = {a: compute_metrics(st, midnight, cfg) for a, st in states.items()}
        for a, st in states.items():
            signed_up = st.profile is not None and st.profile.signed_up_at <= midnight
            if signed_up and not raw[a].canceled:
                portfolio.observe(a, raw[a], st)
        for a in states:
            got = live.get((a, midnight))
            if got is None:
                continue
            want = with_portfolio(raw[a], portfolio, midnight)
            for name in (*PERCENTILE_OF.values(), "feature_breadth_catalog"):
                assert got[name] == getattr(want, name), (a, midnight, name)
            compared += got["usage_percentile"] is not None and got["feature_breadth_catalog"] is not None
    assert compared >= 20, "the comparison must cover accounts with live portfolio measures"


def test_a_restart_mid_day_uses_the_frozen_portfolio(history):
    """A new driver on the recovered states restores the portfolio frozen at the last midnight
    (rebuilt from the states it would differ: they hold events after it) and publishes the very
    snapshots an uninterrupted run does."""
    topics = topics_of(history)
    reference = Run()
    reference.feed(topics, random.Random(1))

    store = StateStore()
    first = Run(store)
    rng = random.Random(2)
    first.feed(topics, rng, crash_after=300)
    frozen = first.driver.portfolio
    assert frozen is not None and frozen.as_of is not None
    assert len(frozen.stats["logins_30d"]) >= PORTFOLIO_MIN_ACCOUNTS
    # the day's information check goes with it (the simulator sends no CSM reads: listed as no data)
    assert ("outcomes", "csm", "csm_sentiment", "no_data") in {r[:4] for r in frozen.set_aside["default"]}
    assert first.driver.clock_ms // 1000 - frozen.as_of > 3600  # mid-day, hours after the midnight
    rebuilt, _ = portfolio_at(first.states(), frozen.as_of, first.driver.engine.scoring.metrics)
    assert rebuilt != frozen, "the states must hold events after the midnight for this to test anything"

    folded = [max((st.offsets[k] for st in first.states()), default=-1) for k in range(len(topics))]
    resume = [max(0, f + 1 - rng.randint(0, 400)) for f in folded]
    second = Run(store)  # a new driver on the recovered states
    assert second.driver.portfolio == frozen
    second.records = list(first.records)
    second.feed([t[r:] for t, r in zip(topics, resume, strict=True)], rng)
    assert second.driver.stats.redelivered > 0
    assert second.finals() == reference.finals()
    # Every snapshot, not just the last per account (a redelivered range may repeat identical ones).
    assert {v for name, _, v, _ in second.records if name == "health"} == {
        v for name, _, v, _ in reference.records if name == "health"
    }


def test_portfolio_record_round_trips_through_the_table_codec(history):
    run = Run()
    run.feed(topics_of(history), random.Random(6))
    portfolio = run.driver.portfolio
    assert portfolio is not None and len(portfolio.stats["active_user_days_30d"]) >= PORTFOLIO_MIN_ACCOUNTS
    assert portfolio.features
    codec = AccountStateCodec()
    raw = codec.dumps(portfolio)
    assert Portfolio.loads(raw) == portfolio == codec.loads(raw)
    state = run.states()[0]
    assert codec.loads(codec.dumps(state)).dumps() == state.dumps()
    # Distinct values and their counts, not an entry per account: 30,000 ranked values in ~1 KB.
    rng = random.Random(0)
    big = Portfolio(as_of=portfolio.as_of, features=portfolio.features)
    big.stats = {name: Percentiles(rng.randrange(60) for _ in range(10_000)) for name in PERCENTILE_OF}
    assert len(big.dumps()) < 1500 and Portfolio.loads(big.dumps()) == big


def test_run_offline_folds_every_event(history):
    """Offline runs number each topic's records as Kafka does (from 0, no gaps): a shared counter
    would leave holes the driver sets records aside for, and most events would never be folded."""
    events = [EVENT_ADAPTER.validate_python(e) for e in history]
    store = run_offline(events, engine())
    states = list(store.states(0))
    assert {st.account_id for st in states} == {e.account_id for e in events}
    for k, kind in enumerate(INPUT_KINDS):
        n = sum(1 for e in events if TYPE_TOPIC[e.type] == kind)
        assert max(st.offsets[k] for st in states) == n - 1, kind


def test_run_offline_splits_accounts_as_the_producer_does(history):
    """With partitions, each account lands where Kafka's default partitioner (murmur2 of the key) puts
    it, and each partition freezes a portfolio of its own accounts only."""
    from aiokafka.partitioner import DefaultPartitioner

    events = [EVENT_ADAPTER.validate_python(e) for e in history]
    store = run_offline(events, engine(), partitions=3)
    route = DefaultPartitioner()
    owners = {st.account_id: p for p in range(3) for st in store.states(p)}
    assert owners == {a: route(a.encode(), [0, 1, 2], [0, 1, 2]) for a in {e.account_id for e in events}}
    assert len(set(owners.values())) > 1
    for p in range(3):
        portfolio = store.get_portfolio(p)
        assert portfolio is not None
        assert len(portfolio.stats["logins_30d"]) <= sum(1 for q in owners.values() if q == p)


class ReferenceDriver(PartitionDriver):
    """The merge loop as first written: every bound recomputed for every record taken."""

    def step(self, highwaters: list[int | None], now: float) -> Output:
        while self._held and self._held[0][0] <= now - self.config.hold_s:
            self._released = self._held.popleft()[1]
        idle_bound = self._released
        cfg = self.config
        self._realtime = self._caught_up(now)
        if self._realtime:
            idle_bound = max(idle_bound, int((now - cfg.live_lateness_s) * 1000))
        while True:
            bounds = self._bounds(highwaters, idle_bound, now)
            head_k, head = -1, None
            for k in range(len(INPUT_KINDS)):
                q = self.queues[k]
                if q and (head is None or (q[0][0], k) < head):
                    head, head_k = (q[0][0], k), k
            if head is None:
                break
            if not all(k == head_k or head < bounds[k] for k in range(len(INPUT_KINDS))):
                if self.buffered <= self.config.max_buffered:
                    break
                self.stats.forced_releases += 1
            item = self.queues[head_k].popleft()
            if item[2] is not None and item[0] > self.clock_ms:
                self._advance(item[0] - 1)  # what is due before the record
            self._take(item)
            self.buffered -= 1
        safe = min(bounds)[0] - 1
        if safe > self.clock_ms:
            self._advance(safe)
        if self._dirty and not self.buffered and safe >= self._max_offered and not self._realtime:
            self._preview()
        out, self._out = self._out, Output()
        return out


@pytest.mark.parametrize(
    "config",
    [
        DriverConfig(hold_s=1.0),
        DriverConfig(hold_s=0.5, max_buffered=40, max_block_s=0.3),  # memory bound, stuck topic
        DriverConfig(hold_s=0.0, live=True, live_within_s=1e9),
    ],
    ids=["event", "bounded", "live"],
)
def test_the_merge_loop_matches_the_reference_loop(history, config):
    """Recomputing only the taken topic's bound changes nothing: records, dead letters, states and
    counters are the same as with every bound recomputed per record, step by step."""
    topics = topics_of(history)
    topics[INPUT_KINDS.index("surveys")].append(Record(4, len(topics[4]), b"x", b"{not json"))
    ends: list[int | None] = [len(t) for t in topics]
    ends[INPUT_KINDS.index("billing")] += 3  # records it never delivers: it blocks, then is forced
    runs = []
    for cls in (PartitionDriver, ReferenceDriver):
        driver = cls(0, engine(), StateStore(), config)
        rng, now, cursors, steps = random.Random(11), NOW, [0] * len(topics), []
        while any(c < len(t) for c, t in zip(cursors, topics, strict=True)):
            k = rng.choice([i for i, t in enumerate(topics) if cursors[i] < len(t)])
            n = rng.randint(1, 120)
            for rec in topics[k][cursors[k] : cursors[k] + n]:
                driver.offer(rec, now)
            cursors[k] += n
            now += rng.random() * 0.2
            out = driver.step(ends, now)
            steps.append(
                (out.records, [d.reason for d in out.dead_letters], sorted(out.states), len(out.acks))
            )
        out = driver.step(ends, now + 100)
        steps.append((out.records, [d.reason for d in out.dead_letters], sorted(out.states), len(out.acks)))
        finals = {a: st.dumps() for a, st in driver.store.data.items()}
        runs.append((steps, finals, driver.stats, driver.clock_ms))
    assert runs[1][2].forced_releases or config.max_buffered == DriverConfig().max_buffered
    assert runs[0] == runs[1]
