"""Scale points on the local Kafka: big account counts on one worker, and 1/2/4 workers in one group.

    make bench                                                  # runs this after bench_pipeline.py
    python bench/bench_scale.py --json bench/results/scale.json
    python bench/bench_scale.py --smoke                         # tiny sizes, to check it still runs

A. Accounts on ONE worker (``--accounts 100000,1000000``), RocksDB store (``HEALTHMON_STORE=rocksdb://``):
   fresh topics get one ``account`` event per account (contract v1: profile, segment, CSM) plus a few
   ``login`` events for a sample of them; a real ``healthmon worker`` runs until its group has committed
   every input; then the worker's RSS, the state on disk (the RocksDB folders under its data dir), the
   changelog's bytes on the broker's disk and the load's events/s (first to last cs.health record). The
   worker is then SIGKILLed and restarted on the same data dir: time from the start to "Worker ready",
   to Faust's "Recovery complete", and to the first cs.health record of an event produced at "Worker
   ready"; then the snapshot latency of fresh events (the input record's timestamp to its cs.health
   record's timestamp, both set by the producers). The memory store runs the same load at
   ``--memory-accounts`` for its RSS, for comparison. The worker's "event loop was blocked" warnings
   (>= 1 s) are counted over the load (``--step-budget`` sets HEALTHMON_STEP_BUDGET, for an A/B).
C. A UTC midnight on that worker, before the SIGKILL (``--no-midnight`` skips it): the load is dated
   the two hours before today's UTC midnight, and one login per partition 30 s after it makes every
   partition freeze its portfolio from every state and evaluate every account; the time from the
   sends to every partition's marker snapshot, the worker's CPU, its longest loop block and peak RSS.
B. Scale-out (``--workers 1,2,4``): one pre-loaded topic set (simulated base, ``--events`` events of
   ``--scale-accounts`` accounts, ``--partitions`` partitions); for each N, N ``healthmon worker``
   processes (memory store) in a fresh group start together; events/s from their first output to
   their last once the group has committed every input, per worker (total / N), the workers' CPU and
   the broker's CPU time over the same span (``/proc/<broker pid>/stat``, pid from the stack dir).

Everything started here inherits this process's niceness (``nice -n 19 python bench/bench_scale.py``
on a shared machine). Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from bench_pipeline import (
    committed_inputs,
    drop_topics,
    load_topics,
    log,
    machine,
    quiesce,
    replay_end,
    rss_kb,
    simulated_events,
    worker_env,
    write_result,
)

from streams.broker.admin import poll_committed
from streams.broker.tail import read_to_end
from streams.settings import Settings

SEGMENTS = ("smb", "mid_market", "enterprise")


def iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def account_events(n: int, usage_every: int, now: datetime) -> Iterator[dict]:
    """One valid contract-v1 ``account`` event per account, then 5 logins for every
    ``usage_every``-th account (a sample with activity; 0: none).

    The times are whole hours back from ``now``, so every run does the same work whatever the minute:
    the profiles fall in one evaluation slot (the hour two hours back) and the logins in the next
    one, so taking the first login closes the profiles' slot and each account is evaluated once
    during the load. (With "an hour ago" and "30 minutes ago" both fell in one slot for the first
    half of each hour: nothing was evaluated during the load, only previewed, and every account was
    still owed an evaluation after the restart.)"""
    hour = now.replace(minute=0, second=0, microsecond=0)
    at, signed = iso(hour - timedelta(hours=2) + timedelta(minutes=1)), iso(now - timedelta(days=400))
    for i in range(n):
        aid = f"sc-{i:07d}"
        yield {"event_id": f"{aid}-a", "account_id": aid, "type": "account", "occurred_at": at,
               "name": f"Scale Account {i}", "segment": SEGMENTS[i % 3], "csm_name": f"CSM {i % 50}",
               "csm_email": f"csm{i % 50}@example.com", "signed_up_at": signed}  # fmt: skip
    if usage_every:
        used = iso(hour - timedelta(hours=1) + timedelta(minutes=1))
        for i in range(0, n, usage_every):
            aid = f"sc-{i:07d}"
            for u in range(5):
                yield {"event_id": f"{aid}-l{u}", "account_id": aid, "type": "login",
                       "occurred_at": used, "user_id": f"{aid}-u{u}"}  # fmt: skip


class Proc:
    """A ``healthmon worker`` (info logs: Faust's recovery lines are timed from them)."""

    def __init__(self, s: Settings, log_path: Path, profile: Path | None = None) -> None:
        self.log_path = log_path
        self.started = time.monotonic()
        self.started_wall = time.time()
        self.log_from = log_path.stat().st_size if log_path.exists() else 0
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker", "-l", "info"],
            cwd=ROOT,
            env={**worker_env(s, {"PYTHONPATH": str(ROOT)}), "HEALTHMON_LOG_LEVEL": "info"},
            stdout=log_path.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.spy: subprocess.Popen | None = None
        if profile is not None:  # py-spy attached (not a parent: the SIGKILL must hit the worker)
            spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
            cmd = [spy, "record", "-r", "100", "-f", "raw", "-o", str(profile), "-p", str(self.proc.pid)]
            with (profile.parent / f"{profile.name}.log").open("wb") as err:
                self.spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)

    def wait_for(self, marker: bytes, timeout: float, after: int = 0) -> float:
        """Seconds from the start until ``marker`` is in the log (past byte ``after``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in self.log_path.read_bytes()[after:]:
                return time.monotonic() - self.started
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({self.proc.returncode}): see {self.log_path}")
            time.sleep(0.05)
        raise RuntimeError(f"{marker!r} not in the worker log within {timeout}s: see {self.log_path}")

    def logged_at(self, marker: str) -> float | None:
        """Seconds from the start to the first log line of this run with ``marker`` (the log's own
        millisecond timestamps), None if there is none."""
        for line in self.log_path.read_bytes()[self.log_from :].decode(errors="replace").splitlines():
            if marker in line and line.startswith("[20"):
                when = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").astimezone()
                return when.timestamp() - self.started_wall
        return None

    def loop_blocked(self, after: int | None = None) -> dict:
        """The worker's "event loop was blocked for X s" warnings in this run's log (>= 1 s each; a
        repeat within seconds is folded into the line before it by the log's rate limit), or past
        byte ``after`` of the log."""
        text = self.log_path.read_bytes()[self.log_from if after is None else after :].decode(
            errors="replace"
        )
        lags = [float(m) for m in re.findall(r"event loop was blocked for ([0-9.]+) s", text)]
        return {"max_s": max(lags, default=0.0), "times_over_1s": len(lags), "total_s": round(sum(lags), 1)}

    def rss_mb(self) -> float:
        return rss_kb(str(self.proc.pid)) / 1024

    def hwm_mb(self) -> float:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def cpu_s(self) -> float:
        return cpu_seconds(self.proc.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.profiled()

    def profiled(self) -> None:
        """py-spy writes its profile once the worker is gone."""
        if self.spy is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.spy.wait(60)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.profiled()


def cpu_seconds(pid: int | str) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def du_bytes(paths: list[Path], pattern: str = "*") -> int:
    """Bytes of the files under ``paths`` (blocks in use: Kafka's preallocated indexes are sparse)."""
    return sum(f.stat().st_blocks * 512 for p in paths for f in p.rglob(pattern) if f.is_file())


def settings(
    tag: str,
    workdir: Path,
    partitions: int,
    store: str,
    session_timeout: float | None,
    step_budget: int | None = None,
) -> Settings:
    extra: dict = {} if session_timeout is None else {"session_timeout_s": session_timeout}
    if step_budget is not None:
        extra["step_budget"] = step_budget
    return Settings(
        **extra,
        app_id=f"scale-{tag}",
        topic_prefix=f"scale-{tag}.",
        redis_prefix=f"scale-{tag}:",
        partitions=partitions,
        store=store,
        data_dir=str(workdir / "faust"),
    )


async def output_span(s: Settings, since_ms: int = 0) -> dict:
    """First and last cs.health / changes / alerts record (timestamps at or after ``since_ms``)."""
    first = last = None
    snapshots = 0
    async for r in read_to_end(s, s.topic("health"), s.topic("health_changes"), s.topic("alerts")):
        if r.timestamp < since_ms:
            continue
        first = r.timestamp if first is None else min(first, r.timestamp)
        last = r.timestamp if last is None else max(last, r.timestamp)
        snapshots += r.topic == s.topic("health")
    return {"first_ms": first, "last_ms": last, "snapshots": snapshots,
            "seconds": max(1e-3, ((last or 0) - (first or 0)) / 1000)}  # fmt: skip


async def changelog_bytes(s: Settings, stack_dir: Path) -> dict:
    """The changelog topics' log segments on the broker's disk (lz4 batches as produced; the indexes,
    preallocated, are left out)."""
    data = stack_dir / "kafka" / "data"
    dirs = [d for d in data.glob(f"{s.app_id}-*changelog-*") if d.is_dir()] if data.is_dir() else []
    return {"bytes": du_bytes(dirs, "*.log"), "partitions": len(dirs), "where": str(data)}


def login(aid: str, k: str) -> dict:
    return {"event_id": f"{aid}-{k}", "account_id": aid, "type": "login",
            "occurred_at": iso(datetime.now(UTC)), "user_id": f"{aid}-probe"}  # fmt: skip


async def probe(s: Settings, accounts: list[str], rate: float, timeout: float) -> dict:
    """One fresh login per account at ``rate``/s; per account the span from the input record's
    timestamp to the first cs.health record of that account at or after it."""
    consumer = AIOKafkaConsumer(
        s.topic("health"), bootstrap_servers=s.kafka_bootstrap, group_id=None,
        auto_offset_reset="latest", fetch_max_wait_ms=5,
    )  # fmt: skip
    await consumer.start()
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, linger_ms=0, acks=1)
    await producer.start()
    sent: dict[str, int] = {}
    got: dict[str, int] = {}
    try:
        await consumer.getmany(timeout_ms=500)  # joined, positioned at the end
        for aid in accounts:
            md = await (
                await producer.send(s.topic("usage"), key=aid.encode(), value=orjson.dumps(login(aid, "p")))
            )
            sent[aid] = md.timestamp
            await asyncio.sleep(1 / rate)
            got.update(await _answers(consumer, sent, got, 0))
        deadline = time.monotonic() + timeout
        while len(got) < len(sent) and time.monotonic() < deadline:
            got.update(await _answers(consumer, sent, got, 200))
    finally:
        await producer.stop()
        await consumer.stop()
    lat = sorted(got[a] - sent[a] for a in got)
    if not lat:
        return {"n": 0, "sent": len(sent)}
    return {"n": len(lat), "sent": len(sent), "p50_ms": lat[len(lat) // 2],
            "p95_ms": lat[min(len(lat) - 1, int(len(lat) * 0.95))], "max_ms": lat[-1]}  # fmt: skip


async def _answers(consumer: AIOKafkaConsumer, sent: dict, got: dict, wait_ms: int) -> dict[str, int]:
    out: dict[str, int] = {}
    for records in (await consumer.getmany(timeout_ms=wait_ms)).values():
        for r in records:
            key = r.key.decode() if r.key else ""
            if key in sent and key not in got and key not in out and r.timestamp >= sent[key]:
                out[key] = r.timestamp
    return out


# --- A. accounts on one worker ---------------------------------------------------------------------


async def accounts_run(args: argparse.Namespace, n: int, store: str) -> dict:
    tag = uuid.uuid4().hex[:6]
    workdir = ROOT / ".local" / "bench" / f"scale-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    s = settings(tag, workdir, args.partitions, store, args.session_timeout, args.step_budget)
    usage_every = max(1, n // args.usage_sample)
    log(f"A. {n:,} accounts, {store}: loading fresh topics")
    # The load is dated the two hours before today's UTC midnight, so that a marker just after it
    # runs a midnight (C): every account due, the portfolio frozen from every state.
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    events = list(account_events(n, usage_every, midnight))
    produce_rate = await load_topics(s, events)
    total = len(events)
    del events
    out: dict = {"store": store, "accounts": n, "events": total, "partitions": args.partitions,
                 "produce_events_per_s": produce_rate}  # fmt: skip
    w = Proc(s, workdir / "worker.log", args.profile and args.profile / f"{n}-{store[:-3]}-load.txt")
    try:
        out["ready_s"] = w.wait_for(b"Worker ready", 180)
        log(f"A. worker ready after {out['ready_s']:.1f} s; waiting for {total:,} commits")
        cpu0, wall0 = w.cpu_s(), time.monotonic()

        def guard() -> None:  # a shared machine: give up before the worker takes all its memory
            if w.proc.poll() is not None:
                raise RuntimeError(f"worker exited ({w.proc.returncode}) before committing all input")
            if w.rss_mb() > args.rss_cap_mb:
                w.kill()
                raise RuntimeError(f"worker RSS over --rss-cap-mb {args.rss_cap_mb:.0f} MB: killed")

        samples = await track_committed(s, total, args.timeout, guard)
        out["load_wall_s"] = time.monotonic() - w.started
        out["steady_events_per_s"] = steady(samples, total)
        out["committed_at_s"] = curve(samples, total, w.started)
        out["worker_cpu_share"] = (w.cpu_s() - cpu0) / (time.monotonic() - wall0)
        await quiesce(w)  # type: ignore[arg-type]  # duck-typed: cpu_s()
        span = await output_span(s)
        out["events_per_s"] = total / span["seconds"]
        out["output"] = span
        out["rss_mb"], out["peak_rss_mb"] = w.rss_mb(), w.hwm_mb()
        out["loop_blocked"] = w.loop_blocked()
        out["step_budget"] = s.step_budget
        out["rss_bytes_per_account"] = out["rss_mb"] * 1024 * 1024 / n
        if store.startswith("rocksdb"):
            dbs = rocksdb_dirs(s.data_dir)
            out["disk"] = {"bytes": du_bytes(dbs), "databases": len(dbs)}
            out["disk"]["bytes_per_account"] = out["disk"]["bytes"] / n
            out["changelog"] = await changelog_bytes(s, args.stack_dir)
            out["changelog"]["bytes_per_account"] = out["changelog"]["bytes"] / n
            log(f"A. {n:,}: {out['events_per_s']:,.0f} ev/s, RSS {out['rss_mb']:.0f} MB, "
                f"disk {out['disk']['bytes'] / 1e6:.1f} MB, changelog {out['changelog']['bytes'] / 1e6:.1f} MB")  # fmt: skip
            if args.midnight:
                out["midnight"] = await run_midnight(args, s, w, midnight)
            log("A. SIGKILL")
            w.kill()
            out["recovery"] = await recover(args, s, workdir, n, usage_every, time.monotonic())
        else:
            log(f"A. {n:,} memory store: {out['events_per_s']:,.0f} ev/s, RSS {out['rss_mb']:.0f} MB")
    finally:
        w.stop()
        await drop_topics(s)
        if not args.keep:
            shutil.rmtree(workdir / "faust", ignore_errors=True)
    return out


@contextlib.asynccontextmanager
async def health_from_now(
    s: Settings, acks: int | str
) -> AsyncIterator[tuple[AIOKafkaConsumer, AIOKafkaProducer]]:
    """A consumer of cs.health placed at its end (it sees what comes after), and a producer."""
    consumer = AIOKafkaConsumer(
        s.topic("health"), bootstrap_servers=s.kafka_bootstrap, group_id=None, auto_offset_reset="latest"
    )
    await consumer.start()
    await consumer.getmany(timeout_ms=200)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks=acks)
    await producer.start()
    try:
        yield consumer, producer
    finally:
        await producer.stop()
        await consumer.stop()


async def run_midnight(args: argparse.Namespace, s: Settings, w: Proc, midnight: datetime) -> dict:
    """C. One login per partition 30 s after the UTC midnight the load ends at: before folding it, each
    partition freezes its portfolio from every state and evaluates every account due at midnight (all
    of them). Timed from the sends to every marker's snapshot (the partition's work is done before its
    marker is folded), with the event loop's longest block and the peak RSS over it."""
    log(f"C. midnight: one marker per partition at {iso(midnight + timedelta(seconds=30))}")
    after = w.log_path.stat().st_size
    cpu0 = w.cpu_s()
    waiting = {f"midnight-{p}".encode() for p in range(s.partitions)}
    async with health_from_now(s, acks="all") as (consumer, producer):
        t0 = time.monotonic()
        for p in range(s.partitions):
            aid = f"midnight-{p}"
            ev = {"event_id": aid, "account_id": aid, "type": "login", "user_id": "m",
                  "occurred_at": iso(midnight + timedelta(seconds=30))}  # fmt: skip
            await producer.send_and_wait(s.topic("usage"), orjson.dumps(ev), key=aid.encode(), partition=p)
        done_at: list[float] = []
        deadline = t0 + args.timeout
        while waiting and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                for r in records:
                    if r.key in waiting:
                        waiting.discard(r.key)
                        done_at.append(time.monotonic() - t0)
    out = {
        "seconds": max(done_at) if not waiting else None,
        "first_partition_s": min(done_at, default=None),
        "partitions_not_done": len(waiting),
        "worker_cpu_s": w.cpu_s() - cpu0,
        "loop_blocked": w.loop_blocked(after),
        "peak_rss_mb": w.hwm_mb(),
    }
    log(f"C. midnight done in {out['seconds'] or float('nan'):.1f} s; longest loop block "
        f"{out['loop_blocked']['max_s']:.1f} s; peak RSS {out['peak_rss_mb']:.0f} MB")  # fmt: skip
    return out


async def recover(
    args: argparse.Namespace, s: Settings, workdir: Path, n: int, usage_every: int, killed: float
) -> dict:
    """Restart on the same data dir after the SIGKILL: start -> ready -> recovered -> first output."""
    log_path = workdir / "worker.log"
    after = log_path.stat().st_size
    # Accounts without the sample's logins (their snapshot answers a new event at once).
    quiet = [f"sc-{i:07d}" for i in range(1, n, max(2, n // (args.probe_events + 1))) if i % usage_every]
    first, rest = quiet[0], quiet[1 : args.probe_events + 1]
    w = Proc(s, log_path, args.profile and args.profile / f"{n}-restart.txt")
    try:
        out: dict = {
            "ready_s": w.wait_for(b"Worker ready", 300, after),
            "killed_before_s": time.monotonic() - killed,
        }
        # The new event is sent at "Worker ready"; its snapshot comes once the partitions are back.
        t_send = time.monotonic()
        async with health_from_now(s, acks=1) as (consumer, producer):
            await producer.send_and_wait(
                s.topic("usage"), key=first.encode(), value=orjson.dumps(login(first, "r"))
            )
            deadline = time.monotonic() + args.timeout
            while "first_output_s" not in out and time.monotonic() < deadline:
                for records in (await consumer.getmany(timeout_ms=100)).values():
                    if any(r.key == first.encode() for r in records):
                        out["first_output_s"] = time.monotonic() - w.started
                        out["send_to_output_s"] = time.monotonic() - t_send
        # The timeline from the worker's log: joined the group, got its partitions (a SIGKILLed
        # member holds them until the group's session timeout), read the changelog's tail.
        for key, marker in (
            ("joined_s", "Revoking previously assigned partitions"),
            ("assigned_s", "Setting newly assigned partitions"),
            ("recovery_complete_s", "Recovery complete"),
            ("ready_logged_s", "Worker ready"),
        ):
            out[key] = w.logged_at(marker)
        out["session_timeout_s"] = s.session_timeout_s
        out["rss_mb_after_recovery"] = w.rss_mb()
        # RocksDB replays its write-ahead log into tables when it opens: the states at rest, each
        # once (the load's figure also holds the log, where each state was written twice).
        out["disk_bytes_after_restart"] = du_bytes(rocksdb_dirs(s.data_dir))
        await quiesce(w)  # type: ignore[arg-type]
        log(
            f"A. recovery: ready {out['ready_s']:.1f} s, first output {out.get('first_output_s', -1):.1f} s; probing"
        )
        out["snapshot_latency"] = await probe(s, rest, args.probe_rate, 30)
        out["rss_mb_after_probe"] = w.rss_mb()
        out["loop_blocked"] = w.loop_blocked()
    finally:
        w.stop()
    return out


# --- B. 1, 2, 4 workers ----------------------------------------------------------------------------


async def track_committed(
    s: Settings, n: int, timeout: float, guard: Callable[[], None] | None = None
) -> list[tuple[float, int]]:
    """(monotonic time, offsets committed on the inputs) every 0.5 s until the group has all ``n``;
    ``guard`` is called at each sample (it raises to give up)."""
    samples: list[tuple[float, int]] = []

    def sample(got: dict[tuple[str, int], int]) -> bool:
        samples.append((time.monotonic(), committed_inputs(s, got)))
        if guard is not None:
            guard()
        return samples[-1][1] >= n

    await poll_committed(s, sample, timeout)
    return samples


def steady(samples: list[tuple[float, int]], n: int) -> float | None:
    """Events/s between the first commit past 10 % of the input and the first past 90 %: the group's
    rate once it has settled (joins and rebalances at the start, the last partitions' tail left out)."""
    lo = next((s for s in samples if s[1] >= n * 0.1), None)
    hi = next((s for s in samples if s[1] >= n * 0.9), None)
    if lo is None or hi is None or hi[0] <= lo[0]:
        return None
    return (hi[1] - lo[1]) / (hi[0] - lo[0])


def curve(samples: list[tuple[float, int]], n: int, t0: float) -> dict[str, float | None]:
    """Seconds from ``t0`` (the worker's start) until 10, 25, 50, 75, 90 and 100 % of the input was
    committed: where the load spends its time (folding profiles, then one slot's evaluations)."""
    return {
        f"{pct}%": next((round(t - t0, 1) for t, done in samples if done >= n * pct / 100), None)
        for pct in (10, 25, 50, 75, 90, 100)
    }


async def scale_out(args: argparse.Namespace) -> dict:
    tag = uuid.uuid4().hex[:6]
    workdir = ROOT / ".local" / "bench" / f"scale-{tag}"
    workdir.mkdir(parents=True, exist_ok=True)
    base = settings(tag, workdir, args.partitions, "memory://", args.session_timeout)
    log(f"B. simulating {args.events:,} events of {args.scale_accounts:,} accounts")
    events = simulated_events(args.events, args.scale_accounts, replay_end())
    accounts = len({e["account_id"] for e in events})
    produce_rate = await load_topics(base, events)
    total = len(events)
    del events
    pid_file = args.stack_dir / "kafka" / "pid"
    broker_pid = pid_file.read_text().strip() if pid_file.exists() else "-"  # another broker: no CPU
    runs = []
    try:
        for n in args.workers:
            # A fresh group on the same input topics; outputs are told apart by time.
            s = base.model_copy(update={"app_id": f"scale-{tag}-{n}w"})
            log(f"B. {n} worker(s) over {total:,} events")
            since_ms = int(time.time() * 1000)
            b0, t0 = cpu_seconds(broker_pid), time.monotonic()
            ws = [
                Proc(
                    s.model_copy(update={"data_dir": str(workdir / f"faust-{n}w-{i}")}),
                    workdir / f"w{n}-{i}.log",
                )
                for i in range(n)
            ]
            try:
                for w in ws:
                    w.wait_for(b"Worker ready", 180)
                samples = await track_committed(s, total, args.timeout)
                wall = time.monotonic() - t0
                broker_cpu = cpu_seconds(broker_pid) - b0
                cpu = [w.cpu_s() for w in ws]
                rss = [w.rss_mb() for w in ws]
                for w in ws:
                    await quiesce(w)  # type: ignore[arg-type]
            finally:
                for w in ws:
                    w.stop()
            span = await output_span(s, since_ms)
            rate = total / span["seconds"]
            runs.append({
                "steady_events_per_s": steady(samples, total),
                "workers": n, "events_per_s": rate, "events_per_s_per_worker": rate / n,
                "output": span, "wall_s_start_to_committed": wall, "worker_cpu_s": cpu,
                "worker_rss_mb": rss, "broker_cpu_s": broker_cpu,
                "broker_cpu_share": broker_cpu / wall,
                "broker_cpu_s_per_1k_events": broker_cpu / total * 1000,
            })  # fmt: skip
            log(
                f"B. {n} worker(s): {rate:,.0f} events/s ({rate / n:,.0f} per worker), broker CPU {broker_cpu:.1f} s"
            )
    finally:
        await drop_topics(base)  # the groups' changelogs too: their app ids start with base's
        if not args.keep:
            for d in workdir.glob("faust-*"):
                shutil.rmtree(d, ignore_errors=True)
    return {"events": total, "accounts": accounts, "partitions": args.partitions,
            "produce_events_per_s": produce_rate, "runs": runs}  # fmt: skip


# --- the run ---------------------------------------------------------------------------------------


def table(r: dict) -> str:
    m = r["machine"]
    rows = [("machine", f"{m['cores']} cores, {m['cpu'] or '?'}, Python {m['python']}, Kafka {m['kafka']}"
             f"{', shared (niceness ' + str(r['niceness']) + ')' if r['niceness'] else ''}")]  # fmt: skip
    for a in r["accounts"]:
        head = f"A. {a['accounts']:,} accounts, {a['store']}"
        if "error" in a:
            rows.append((head, f"not measured: {a['error']}"))
            continue
        rows.append((head, f"{a['events']:,} events at {a['events_per_s']:,.0f} events/s, "
                     f"RSS {a['rss_mb']:,.0f} MB ({a['rss_bytes_per_account']:,.0f} B/account)"))  # fmt: skip
        if lb := a.get("loop_blocked"):
            rows.append(("   event loop blocked >= 1 s (load)",
                         f"{lb['times_over_1s']} times, longest {lb['max_s']:.1f} s "
                         f"(step budget {a.get('step_budget')})"))  # fmt: skip
        if d := a.get("disk"):
            c = a["changelog"]
            rows.append(("   state on disk / changelog",
                         f"{d['bytes'] / 1e6:,.1f} MB ({d['bytes_per_account']:,.0f} B/account) / "
                         f"{c['bytes'] / 1e6:,.1f} MB ({c['bytes_per_account']:,.0f} B/account)"))  # fmt: skip
            if m := a.get("midnight"):
                rows.append(("   a UTC midnight (every account due)",
                             f"{m['seconds'] or float('nan'):.1f} s, {m['worker_cpu_s']:.0f} s of worker CPU; "
                             f"loop blocked >= 1 s {m['loop_blocked']['times_over_1s']} times, "
                             f"longest {m['loop_blocked']['max_s']:.1f} s; peak RSS {m['peak_rss_mb']:,.0f} MB"))  # fmt: skip
            rc = a["recovery"]
            if (rest := rc.get("disk_bytes_after_restart")) is not None:
                rows.append(("   state on disk after the restart (tables, no log)",
                             f"{rest / 1e6:,.1f} MB ({rest / a['accounts']:,.0f} B/account)"))  # fmt: skip
            rows.append(("   after SIGKILL: ready / recovered / 1st output",
                         f"{rc['ready_s']:.1f} s / {rc.get('recovery_complete_s', float('nan')):.1f} s / "
                         f"{rc.get('first_output_s', float('nan')):.1f} s from the restart"))  # fmt: skip
            sl = rc["snapshot_latency"]
            if sl.get("n"):
                rows.append(("   produce -> cs.health after recovery",
                             f"p50 {sl['p50_ms']} ms, p95 {sl['p95_ms']} ms, max {sl['max_ms']} ms (n={sl['n']})"))  # fmt: skip
    if so := r.get("scale_out"):
        for run in so["runs"]:
            rows.append((f"B. {run['workers']} worker(s), {so['events']:,} events, {so['partitions']} partitions",
                         f"{run['events_per_s']:,.0f} events/s ({run['events_per_s_per_worker']:,.0f} per worker); "
                         f"broker CPU {run['broker_cpu_s']:.1f} s ({run['broker_cpu_share']:.0%} of a core)"))  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def broker_info(stack_dir: Path) -> dict:
    """The broker that runs (its classpath: not a guess from the jar cache) and its niceness."""
    with contextlib.suppress(OSError, IndexError, ValueError):
        pid = (stack_dir / "kafka" / "pid").read_text().strip()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return {
            "kafka": cmdline.split("/kafka-", 1)[1].split("/libs", 1)[0],
            "broker_niceness": int(stat[16]),
        }
    return {}


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return Path("/proc/loadavg").read_text().strip()
    return ""


def rocksdb_dirs(data_dir: str) -> list[Path]:
    return [d for d in Path(data_dir).rglob("*.db") if d.is_dir()]


async def run(args: argparse.Namespace) -> dict:
    result: dict = {"machine": machine(), "niceness": os.nice(0), "accounts": [], "scale_out": None}
    result["machine"].update(broker_info(args.stack_dir))
    result["loadavg_at_start"] = loadavg()

    async def accounts(store: str, counts: list[int]) -> None:
        for n in counts:
            try:
                result["accounts"].append(await accounts_run(args, n, store))
            except Exception as exc:  # one size that cannot run must not lose the others
                log(f"A. {n:,} accounts, {store}: FAILED: {exc}")
                result["accounts"].append({"store": store, "accounts": n, "error": str(exc)})

    # The longest part (the larger RocksDB sizes) runs last: on a shared machine, the rest is in by then.
    await accounts("rocksdb://", args.accounts[:1])
    await accounts("memory://", args.memory_accounts)
    if args.workers:
        result["scale_out"] = await scale_out(args)
    await accounts("rocksdb://", args.accounts[1:])
    result["loadavg_at_end"] = loadavg()
    result["command"] = " ".join(["python", "bench/bench_scale.py", *sys.argv[1:]])
    return result


def ints(v: str) -> list[int]:
    return [int(x) for x in v.split(",") if x]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=ints, default=[100_000, 1_000_000], help="RocksDB runs (A).")
    ap.add_argument("--memory-accounts", type=ints, default=[100_000], help="Memory-store runs (A).")
    ap.add_argument("--usage-sample", type=int, default=1_000, help="Accounts given 5 logins each (A).")
    ap.add_argument("--probe-events", type=int, default=50)
    ap.add_argument("--probe-rate", type=float, default=10.0)
    ap.add_argument("--workers", type=ints, default=[1, 2, 4], help="Scale-out runs (B).")
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--scale-accounts", type=int, default=1_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--stack-dir", type=Path, default=None, help="Default: $HEALTHMON_STACK_DIR or .ci's.")
    ap.add_argument("--keep", action="store_true", help="Keep the workers' data dirs.")
    ap.add_argument("--rss-cap-mb", type=float, default=8_000, help="Kill a worker (A) past this RSS.")
    ap.add_argument(
        "--session-timeout", type=float, default=None, help="HEALTHMON_SESSION_TIMEOUT_S for the workers."
    )
    ap.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="py-spy each worker of (A) into this folder (collapsed stacks).",
    )
    ap.add_argument(
        "--no-midnight",
        dest="midnight",
        action="store_false",
        help="Skip (C), the midnight after each RocksDB load.",
    )
    ap.add_argument(
        "--step-budget", type=int, default=None, help="HEALTHMON_STEP_BUDGET for the workers of (A)."
    )
    ap.add_argument("--smoke", action="store_true", help="Tiny sizes, to check the benchmark still runs.")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.stack_dir is None:
        port = os.environ.get("HEALTHMON_KAFKA_PORT", "9092")
        args.stack_dir = Path(os.environ.get("HEALTHMON_STACK_DIR") or ROOT / ".local" / f"stack-{port}")
    if args.smoke:
        args.accounts, args.usage_sample = [2_000], 20
        args.memory_accounts = [2_000] if args.memory_accounts else []  # --memory-accounts "": none
        args.probe_events, args.probe_rate = 5, 20.0
        args.workers, args.events, args.scale_accounts = [1, 2], 5_000, 50
        args.session_timeout = args.session_timeout or 6.0  # the SIGKILLed member goes sooner
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    result = asyncio.run(run(args))
    print(table(result))
    if args.json:
        write_result(args.json, result)


if __name__ == "__main__":
    main()
