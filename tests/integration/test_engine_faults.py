"""Engine integrity through the real broker: the same input gives the same per-account event counts,
final snapshots and alert episodes whatever happens to the workers on the way.

Every scenario is compared with one uninterrupted single-worker run of a flat-out backlog (the
reference, run once per session). The end of a run is a positive signal: a marker event per
partition, dated after the whole history, whose snapshot shows that the partition's merge has passed
everything before it.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams.broker.tail import read_to_end
from streams.core.events import TYPE_TOPIC
from streams.settings import Settings
from streams.sim.simulate import Simulator
from tests.conftest import WorkerProcess
from tests.helpers import collect, produce, setup_topics

# No re-runs: a difference is a bug. (Until issue 10's fix the crash scenarios differed in about one
# run in four under full-suite load: Faust 0.15 can skip fetched records; see streams/worker/offsets.py.)
pytestmark = pytest.mark.kafka

END = datetime(2026, 6, 1, tzinfo=UTC)
MARK_AT = END + timedelta(days=3)
#: The scale, 16 accounts x 30 days on 4 partitions by default (tens of seconds per scenario). The
#: issue's operator run, by hand: HEALTHMON_FAULT_ACCOUNTS=150 HEALTHMON_FAULT_DAYS=40
#: HEALTHMON_FAULT_PARTITIONS=8 HEALTHMON_FAULT_TIMEOUT=1800 make test-faults
ACCOUNTS = int(os.environ.get("HEALTHMON_FAULT_ACCOUNTS", "16"))
DAYS = int(os.environ.get("HEALTHMON_FAULT_DAYS", "30"))
PARTITIONS = int(os.environ.get("HEALTHMON_FAULT_PARTITIONS", "4"))
TIMEOUT = float(os.environ.get("HEALTHMON_FAULT_TIMEOUT", "240"))
HISTORY = list(Simulator(accounts=ACCOUNTS, days=DAYS, seed=11, end=END).events())


@pytest.fixture
def kafka_settings(kafka_settings: Settings) -> Settings:
    """A paced producer's records for several topics can land seconds apart on a loaded 2-core
    machine; the hold that absorbs such stragglers (2 s by default, see docs/processing.md) is
    raised so that these tests measure the engine, not the machine's load."""
    return kafka_settings.model_copy(update={"watermark_hold_s": 8.0, "partitions": PARTITIONS})


def records(s: Settings, events: list[dict]) -> list[tuple[str, bytes, bytes]]:
    return [(s.topic(TYPE_TOPIC[e["type"]]), e["account_id"].encode(), orjson.dumps(e)) for e in events]


async def send_markers(s: Settings) -> None:
    """One login per partition, after the whole history, on the partition it names."""
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        for p in range(s.partitions):
            ev = {
                "event_id": f"marker-{p}",
                "account_id": f"marker-{p}",
                "type": "login",
                "user_id": "m",
                "occurred_at": MARK_AT.isoformat(),
            }
            await producer.send_and_wait(
                s.topic("usage"), orjson.dumps(ev), key=ev["account_id"].encode(), partition=p
            )
    finally:
        await producer.stop()


async def outcome(s: Settings, timeout: float = TIMEOUT) -> dict:
    """Wait for every marker, then read the outputs to their end."""

    def markers_in(rs: list) -> bool:
        return {r.key for r in rs} >= {f"marker-{p}".encode() for p in range(s.partitions)}

    await collect(s, "health", markers_in, timeout=timeout)
    return await read_outputs(s)


async def read_outputs(s: Settings) -> dict:
    """Every output read to its end: the last snapshot per account (markers left out), every alert
    record, and the event counts the last snapshots show."""
    finals: dict[str, dict] = {}
    episodes: set[tuple] = set()
    async for r in read_to_end(s, s.topic("health"), s.topic("alerts")):
        doc = orjson.loads(r.value)
        if r.key.startswith(b"marker-"):
            continue
        if r.topic == s.topic("health"):
            finals[r.key.decode()] = doc
        else:
            fields = ("account_id", "rule_id", "status", "starts_at", "ends_at", "alert_id")
            episodes.add(tuple(doc[f] for f in fields))
    counts = {a: snap["event_counts"] for a, snap in finals.items()}
    return {"finals": finals, "episodes": episodes, "counts": counts}


def assert_same(got: dict, want: dict) -> None:
    if got != want:
        want = dict(want)  # the caller's reference is the cached one: keep a copy to report from
        _reference.clear()  # the next test makes a fresh reference: either side may be the odd one
    assert got["counts"] == want["counts"]
    assert got["episodes"] == want["episodes"], (
        f"missing {sorted(want['episodes'] - got['episodes'])[:8]}, "
        f"extra {sorted(got['episodes'] - want['episodes'])[:8]}"
    )
    differing = [a for a in want["finals"] if got["finals"].get(a) != want["finals"][a]]
    assert not differing, f"final snapshots differ for {differing}"


_reference: dict = {}


async def reference(settings: Settings, tmp_path: Path) -> dict:
    """The uninterrupted run: the whole history in Kafka first, then one worker."""
    if not _reference:
        tag = "ref" + settings.app_id
        s = settings.model_copy(
            update={"app_id": tag, "topic_prefix": f"{tag}.", "data_dir": str(tmp_path / "ref")}
        )
        await setup_topics(s)
        await produce(s, records(s, HISTORY))
        await send_markers(s)
        w = WorkerProcess(s, tmp_path / "reference.log").start()
        try:
            _reference.update(await outcome(s))
        finally:
            w.stop()
        assert _reference["episodes"], "the history must fire alerts for the comparison to mean something"
    return _reference


async def while_producing(s: Settings, rate: float, action: Callable[[], Awaitable[None]]) -> None:
    """Produce the history at ``rate`` events/s while ``action`` runs, then the markers."""
    producing = asyncio.create_task(_paced(s, rate))
    try:
        await action()
        await producing
    finally:
        producing.cancel()
    await send_markers(s)


async def _paced(s: Settings, rate: float) -> None:
    from streams.broker.producer import produce_events

    await produce_events(s, records(s, HISTORY), rate=rate)


@pytest.mark.engine_crash
async def test_sigkill_at_random_points(kafka_settings, tmp_path):
    """The crashed workers run steps of one evaluation each (HEALTHMON_STEP_BUDGET=1): the kills also
    land half-way through slot closes and midnights, which the reference runs in whole steps."""
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings.model_copy(update={"step_budget": 1})
    await setup_topics(s)
    rng = random.Random(5)
    w = WorkerProcess(s, tmp_path / "worker.log").start()

    async def kill_five_times() -> None:
        nonlocal w
        for _ in range(5):
            await asyncio.sleep(rng.uniform(1.0, 3.0))  # a random point, not a wait for a condition
            assert w.proc is not None
            w.proc.kill()
            w.proc.wait()
            w.stop()
            w = WorkerProcess(s, tmp_path / "worker.log").start()

    try:
        await while_producing(s, rate=len(HISTORY) / 20, action=kill_five_times)
        got = await outcome(s)
    finally:
        w.stop()
    assert b"going on in steps of 1" in (tmp_path / "worker.log").read_bytes()
    assert_same(got, want)


@pytest.mark.engine_crash
async def test_a_worker_joins_then_one_is_sigkilled(kafka_settings, tmp_path):
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings
    await setup_topics(s)
    first = WorkerProcess(s, tmp_path / "first.log").start()
    second = WorkerProcess(s, tmp_path / "second.log")

    async def join_then_kill() -> None:
        await asyncio.sleep(4)
        second.start()
        await asyncio.sleep(5)
        assert first.proc is not None
        first.proc.kill()
        first.proc.wait()

    try:
        await while_producing(s, rate=len(HISTORY) / 20, action=join_then_kill)
        got = await outcome(s)
    finally:
        first.stop()
        second.stop()
    assert_same(got, want)


@pytest.mark.engine_crash
async def test_fetcher_crash_through_fausts_own_crash_path(kafka_settings, tmp_path):
    """The worker dies through Faust's crash path three times (the fetcher raises, as aiokafka's
    KeyError made it: tests/faults/crashing_worker.py) and is started again each time. Unlike a
    SIGKILL this path runs the shutdown: the consumer commits, the agent is cancelled wherever it is
    and ``on_before_shutdown`` runs; nothing it writes may get ahead of what was published. Steps of
    one evaluation each, so the crashes also land half-way through slot closes and midnights.

    Each stop lasts 6 s more than it would (one took 40 s in the wild), longer than a topic may
    starve before it stops holding time back (``max_block_s``, 4 s here): until issue 22 the worker
    went on making drivers and stepping after its consumer had left the group (seen in the log);
    it now takes no step once the app stops."""
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings.model_copy(update={"step_budget": 1, "max_block_s": 4.0})
    await setup_topics(s)
    await produce(s, records(s, HISTORY))
    await send_markers(s)
    log = tmp_path / "worker.log"
    points = [
        ("HM_CRASH_FETCH_AFTER", "3000"),
        ("HM_CRASH_FETCH_AFTER_S", "4"),
        ("HM_CRASH_FETCH_AFTER_S", "7"),
    ]
    for var, after in points:  # while the first batches are made durable, and mid-way
        env = {var: after, "HM_SLOW_STOP_S": "6"}
        w = WorkerProcess(s, log, module="tests.faults.crashing_worker", env=env)
        w.start()
        assert w.proc is not None
        rc = await asyncio.to_thread(w.proc.wait, TIMEOUT)  # it exits by itself: the positive signal
        w.stop()
        assert rc != 0
    text = log.read_bytes()
    assert text.count(b"We experienced a crash!") == len(points) and b"InjectedFetcherCrash" in text
    w = WorkerProcess(s, log).start()
    try:
        got = await outcome(s)
    finally:
        w.stop()
    assert_same(got, want)


#: The other ways a worker dies (tests/faults/crashing_worker.py), each at two points of the run:
#: a driver step raises (the shell stops writing, Faust's crash path stops the worker); the ingest
#: agent raises on a batch (Faust's agent crash); a SIGTERM while a midnight is being frozen.
#: Each: the variable, its values (one per life), what the log says, and the settings changed.
DEATHS: dict[str, tuple[str, list[str], bytes, dict]] = {
    "step-raises": ("HM_CRASH_STEP_AFTER", ["300", "600"], b"crashing worker: driver step", {}),
    # The agent is restarted in the same process (Faust's supervisor): both crashes in one life.
    # Batches of at most 100 events, so the history makes more than 60 whatever the machine's load
    # (of 500, a backlog made 19: the 30th batch never came, seen in CI).
    "agent-raises": ("HM_CRASH_AGENT_AFTER", ["15,60"], b"crashing worker: ingest batch", {"batch_max": 100}),
    "sigterm-at-midnight": ("HM_SIGTERM_AT_MIDNIGHT", ["1", "5"], b"crashing worker: SIGTERM during", {}),
}


@pytest.mark.engine_crash
@pytest.mark.parametrize("death", list(DEATHS))
async def test_the_other_ways_a_worker_dies(kafka_settings, tmp_path, death):
    """Each death twice, the worker started again after each (or, if it lives on, left to finish):
    the uninterrupted run's outcome. Steps of two evaluations, so a midnight is frozen over steps."""
    want = await reference(kafka_settings, tmp_path)
    var, points, sign, changed = DEATHS[death]
    s = kafka_settings.model_copy(update={"step_budget": 2, **changed})
    await setup_topics(s)
    await produce(s, records(s, HISTORY))
    await send_markers(s)
    log = tmp_path / "worker.log"

    for point in points:
        w = WorkerProcess(s, log, module="tests.faults.crashing_worker", env={var: point})
        w.start()
        assert w.proc is not None
        proc = w.proc
        # The positive signal: the process exits by itself, or the run reaches its markers.
        ended = asyncio.create_task(asyncio.to_thread(proc.wait, TIMEOUT))
        finished = asyncio.create_task(outcome(s))
        await asyncio.wait({ended, finished}, return_when=asyncio.FIRST_COMPLETED)
        finished.cancel()
        w.stop()
        ended.cancel()
    assert log.read_bytes().count(sign) == 2, f"each {death} must have happened"
    w = WorkerProcess(s, log).start()
    try:
        got = await outcome(s)
    finally:
        w.stop()
    assert_same(got, want)


async def test_paced_and_topic_by_topic_equal_the_backlog(kafka_settings, tmp_path):
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings
    await setup_topics(s)
    w = WorkerProcess(s, tmp_path / "paced.log").start()
    try:
        await while_producing(s, rate=len(HISTORY) / 10, action=lambda: asyncio.sleep(0))
        assert_same(await outcome(s), want)
    finally:
        w.stop()

    tag = "tbt" + s.app_id
    t = s.model_copy(update={"app_id": tag, "topic_prefix": f"{tag}.", "data_dir": str(tmp_path / "tbt")})
    await setup_topics(t)
    for kind in ("surveys", "billing", "tickets", "usage", "accounts"):  # worst order first
        await produce(t, [r for r in records(t, HISTORY) if r[0] == t.topic(kind)])
    await send_markers(t)
    w = WorkerProcess(t, tmp_path / "tbt.log").start()
    try:
        assert_same(await outcome(t), want)
    finally:
        w.stop()


async def end_offset(s: Settings, topic: str, partition: int) -> int:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await consumer.stop()


async def test_records_the_client_loses_are_read_again(kafka_settings, tmp_path):
    """The Kafka client loses fetched records once (tests/faults/lossy_worker.py): a range in the
    middle of a usage partition, and the tail of a tickets partition (nothing after it reveals
    it). The worker reads both again: the result is the uninterrupted run's."""
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings
    await setup_topics(s)
    await produce(s, records(s, HISTORY))
    tail = await end_offset(s, s.topic("tickets"), 1)
    assert tail > 10
    lose = f"{s.topic('usage')}:0:100:200;{s.topic('tickets')}:1:{tail - 5}:{tail}"
    await send_markers(s)
    w = WorkerProcess(s, tmp_path / "lossy.log", module="tests.faults.lossy_worker", env={"HM_LOSE": lose})
    w.start()
    try:
        got = await outcome(s)
    finally:
        w.stop()
    log = w.log().decode(errors="replace")
    assert log.count("lossy client: lost") == 105, "the fault must have happened"
    assert f"{s.topic('usage')}[0]: records from 100 were not delivered (200 came next)" in log
    assert f"{s.topic('tickets')}[1]: records from {tail - 5} were not delivered (none came)" in log
    assert_same(got, want)


def distinct_dead(records) -> dict[tuple[bytes, bytes, bytes], list]:
    """Dead letters by the source record they carry (topic, partition, offset headers)."""
    out: dict[tuple[bytes, bytes, bytes], list] = {}
    for r in records:
        h = dict(r.headers)
        out.setdefault((h["healthmon.topic"], h["healthmon.partition"], h["healthmon.offset"]), []).append(r)
    return out


async def test_hostile_but_valid_events(kafka_settings, tmp_path):
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings
    await setup_topics(s)
    victim = HISTORY[0]["account_id"]
    base = {"account_id": victim, "type": "login", "user_id": "h"}
    hostile = [
        {**base, "event_id": "h-1970", "occurred_at": "1970-01-01T00:00:00Z"},
        {**base, "event_id": "h-0001", "occurred_at": "0001-01-01T00:00:00Z"},
        {**base, "event_id": "h-future", "occurred_at": "2999-01-01T00:00:00Z"},
        {**base, "event_id": "h-big", "occurred_at": END.isoformat(), "blob": "x" * 1_030_000},
        {**base, "event_id": "h-field", "occurred_at": END.isoformat(), "note": "y" * 999_000},
    ]
    mixed = list(HISTORY)
    for i, ev in enumerate(hostile):  # spread through the history
        mixed.insert((i + 1) * len(mixed) // (len(hostile) + 1), ev)
    await produce(s, records(s, mixed))
    await send_markers(s)
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        got = await outcome(s)
        dead = await collect(s, "deadletter", lambda rs: len(distinct_dead(rs)) >= len(hostile))
        assert w.alive(), w.log_tail()
    finally:
        w.stop()
    assert_same(got, want)

    # At least once: a dead letter whose acknowledgement timed out is sent again (1 MB ones on a loaded
    # machine), so a copy may come twice; each names its source record, and the copies agree (but for
    # when they were written).
    def body(r):
        return r.value, [h for h in r.headers if h[0] != "healthmon.failed_at"]

    copies = distinct_dead(dead)
    for same in copies.values():
        assert all(body(r) == body(same[0]) for r in same)
    dead = [same[0] for same in copies.values()]
    reasons = sorted(dict(r.headers)["healthmon.reason"].decode() for r in dead)
    assert len(reasons) == len(hostile), reasons
    assert sum("older than the accepted range" in r for r in reasons) == 2
    assert sum("in the future" in r for r in reasons) == 1
    assert sum("record too large" in r for r in reasons) == 2
    # every dead letter is its original record whole, replayable after a fix (1 MB ones too)
    by_id = {orjson.loads(r.value)["event_id"]: r.value for r in dead}
    assert sorted(by_id) == sorted(e["event_id"] for e in hostile)
    assert {i: orjson.loads(v) for i, v in by_id.items()} == {e["event_id"]: e for e in hostile}
    assert len(by_id["h-big"]) > 1_030_000


class Broker:
    """The test stack's Kafka process, stopped and started again as an operator would."""

    def __init__(self) -> None:
        stack = os.environ.get("HEALTHMON_STACK_DIR")
        if not stack:
            pytest.fail("HEALTHMON_STACK_DIR is not set: run the suite with `make test`")
        self.pid_file = Path(stack) / "kafka" / "pid"
        pid = int(self.pid_file.read_text())
        self.cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        self.cwd = os.readlink(f"/proc/{pid}/cwd")
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        self.env = dict(e.decode().split("=", 1) for e in env if b"=" in e)
        self.pid = pid

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and Path(f"/proc/{self.pid}").exists():
            if Path(f"/proc/{self.pid}/stat").read_text().split(") ")[1].startswith("Z"):
                break
            time.sleep(0.1)

    def start(self, port: int) -> None:
        log = (self.pid_file.parent / "restart.log").open("ab")
        proc = subprocess.Popen(
            self.cmdline,
            cwd=self.cwd,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.pid = proc.pid
        self.pid_file.write_text(str(proc.pid))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with socket.socket() as sock:
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    return
            time.sleep(0.2)
        raise RuntimeError("the broker did not come back")


async def test_broker_stop_and_start_mid_replay(kafka_settings, tmp_path):
    want = await reference(kafka_settings, tmp_path)
    s = kafka_settings
    await setup_topics(s)
    port = int(s.kafka_bootstrap.rsplit(":", 1)[1])
    # The whole history first, as the reference has it: the broker goes away while the worker replays
    # it. (Producing half of it while the worker ran made the test depend on the producer's pace: on a
    # loaded machine a sparse topic could sit idle past the watermark hold while the others were still
    # being written, and its next records came late: 1,309 on one partition in a full-suite run.)
    await produce(s, records(s, HISTORY))
    await send_markers(s)
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    broker = Broker()
    try:
        await collect(s, "health", lambda rs: len(rs) > 50, timeout=60)  # the worker is busy
        await asyncio.to_thread(broker.stop)
        down_log = len(w.log())
        await asyncio.sleep(5)  # an outage of a few seconds, not a wait for a condition
        await asyncio.to_thread(broker.start, port)
        got = await outcome(s)
        assert w.alive(), w.log_tail()
    finally:
        w.stop()
    assert_same(got, want)
    # Quiet outage: the worker logged a handful of lines per second, not thousands.
    outage = w.log()[down_log:].count(b"\n")
    assert outage < 2000, outage


#: Issue 22's operator run: 150 accounts x 40 days (about 160,000 events) on 8 partitions, five
#: SIGKILLs at falling points of the committed lag, no marker (HEALTHMON_SCALE_ACCOUNTS, _DAYS,
#: _PARTITIONS change it). About 5 minutes: run by `make test-faults` (HEALTHMON_SCALE_TEST=1), not
#: by `make test`, which stays within its time budget.
SCALE = (
    int(os.environ.get("HEALTHMON_SCALE_ACCOUNTS", "150")),
    int(os.environ.get("HEALTHMON_SCALE_DAYS", "40")),
    int(os.environ.get("HEALTHMON_SCALE_PARTITIONS", "8")),
)
#: The kills: when the lag still to commit falls to these shares of the whole history.
KILL_AT_LAG = (0.80, 0.62, 0.45, 0.28, 0.10)


async def input_ends(s: Settings) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=s.kafka_bootstrap)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in s.input_topics for p in range(s.partitions)]
        return {(tp.topic, tp.partition): o for tp, o in (await consumer.end_offsets(tps)).items()}
    finally:
        await consumer.stop()


async def idle_outcome(s: Settings, ends: dict[tuple[str, int], int], timeout: float) -> dict:
    """What a consumer reads once the worker is idle, with no marker: the group has committed every
    input record (a record is committed after the states it changed are written, and they after
    every output the step made), then every output read to its end. The last snapshot per account
    is compared whole (its ``as_of`` and every metric), with every alert record."""
    from streams.broker.admin import poll_committed

    await poll_committed(s, lambda got: all(got.get(tp, 0) >= o for tp, o in ends.items()), timeout)
    return await read_outputs(s)


@pytest.mark.engine_crash
@pytest.mark.skipif(
    os.environ.get("HEALTHMON_SCALE_TEST") != "1", reason="HEALTHMON_SCALE_TEST=1 (make test-faults)"
)
async def test_five_sigkills_at_falling_lag_without_markers(settings, tmp_path):
    """Issue 22's operator run: the history in the input topics first; one worker on the memory store
    SIGKILLed when the committed lag falls to 80, 62, 45, 28 and 10 % of the history and started
    again each time; read once it is idle. The same final snapshots (every field, ``as_of``
    included), alert records and counts as an uninterrupted run of the same input.

    It failed 1 of its first 2 runs, not on the engine: after a restart Faust had not delivered a
    few usage records, the worker sought back to them, and under the backlog the seek kept losing a
    race with Faust's fetch loop (a batch fetched before it moved the read offset past the hole
    again, and the re-fetched records were dropped as read) until ``max_block_s`` let the other
    topics go on and their records came late. Fixed by ``compat.ReadOffsets`` (docs/processing.md)."""

    accounts, days, partitions = SCALE
    history = list(Simulator(accounts=accounts, days=days, seed=23, end=END).events())
    base = settings.model_copy(update={"watermark_hold_s": 8.0, "partitions": partitions})
    timeout = max(TIMEOUT, len(history) / 200)

    async def loaded(tag: str) -> tuple[Settings, dict[tuple[str, int], int]]:
        s = base.model_copy(
            update={
                "app_id": base.app_id + tag,
                "topic_prefix": f"{base.app_id}{tag}.",
                "data_dir": str(tmp_path / tag),
            }
        )
        await setup_topics(s)
        await produce(s, records(s, history))
        return s, await input_ends(s)

    ref, ref_ends = await loaded("ref")
    w = WorkerProcess(ref, tmp_path / "reference.log").start()
    try:
        want = await idle_outcome(ref, ref_ends, timeout)
    finally:
        w.stop()
    assert want["episodes"], "the history must fire alerts for the comparison to mean something"

    s, ends = await loaded("kill")
    total = sum(ends.values())
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    from streams.broker.admin import poll_committed

    try:
        for share in KILL_AT_LAG:  # a positive signal each: the committed lag reached the point
            await poll_committed(
                s,
                lambda got, share=share: total - sum(got.get(tp, 0) for tp in ends) <= share * total,
                timeout,
                every=0.1,
            )
            assert w.proc is not None
            w.proc.kill()
            w.proc.wait()
            w.stop()
            w = WorkerProcess(s, tmp_path / "worker.log").start()
        got = await idle_outcome(s, ends, timeout)
    finally:
        w.stop()
    assert len(got["finals"]) == len(want["finals"]) >= accounts * 0.9
    assert_same(got, want)
