"""Offline throughput of the worker's hot path: the partition driver, without Kafka.

    python bench/bench_driver.py [--accounts 1000 --days 60 --events 300000] [--profile] [--json FILE]

Why: the worker's rate (bench_pipeline.py) mixes Faust, the broker and our code; this isolates ours.
Simulated events are serialized as the worker sees them (a ``Record`` with the raw JSON bytes, per
topic and partition, keyed by account, partitioned like Kafka's default partitioner) and fed to one
``PartitionDriver`` per partition the way the ``ingest`` agent does: fetches of up to ``--fetch``
records per topic-partition, round robin (so topics run apart in event time, as in a replay), cut
into batches of ``--batch`` records; after each batch every touched partition steps, and the
changed states are serialized once per step (``make_durable``'s ``st.dumps()``). The wall clock is
real (the watermark hold waits on it, as in the worker); event-time runs on the worker's defaults.

Two key distributions: ``uniform`` (the simulator's base) and ``skewed`` (nine in ten accounts are
folded onto a hundredth of them, so those few carry most events, as big customers do).

The digest covers what must not change with an optimization (final states, changes, alerts, dead
letters, counters); snapshots are left out because previews depend on batch timing.
"""

from __future__ import annotations

import argparse
import cProfile
import hashlib
import io
import json
import platform
import pstats
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import orjson
from aiokafka.partitioner import murmur2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rules.engine import load_rules
from streams.core.events import TYPE_TOPIC
from streams.core.scoring import load_scoring
from streams.core.state import INPUT_KINDS
from streams.engine.driver import (
    RESERVED_PREFIX,
    Output,
    PartitionDriver,
    Record,
    StateStore,
)
from streams.engine.engine import Engine
from streams.settings import Settings
from streams.sim.simulate import Simulator
from streams.worker.app import driver_config

END = datetime(2026, 11, 1, tzinfo=UTC)  # fixed: the same events every run


def simulated(accounts: int, days: int, limit: int, skewed: bool) -> Iterator[dict]:
    """The first ``limit`` events in event-time order; ``skewed`` folds accounts onto a few hot ones."""
    hot = max(1, accounts // 100)
    for n, e in enumerate(Simulator(accounts, days, seed=42, end=END).events()):
        if n >= limit:
            return
        if skewed:
            i = int(e["account_id"].rsplit("-", 1)[1])
            if i % 10:  # nine in ten accounts become part of a hot one (their ids stay distinct)
                e["account_id"] = f"acct-{i % hot:05d}"
        yield e


def partitioned(events: Iterator[dict], partitions: int) -> list[list[list[Record]]]:
    """[partition][topic] -> records in offset order, as the producer would have written them."""
    tps: list[list[list[Record]]] = [[[] for _ in INPUT_KINDS] for _ in range(partitions)]
    for e in events:
        key = e["account_id"].encode()
        p = (murmur2(key) & 0x7FFFFFFF) % partitions
        k = INPUT_KINDS.index(TYPE_TOPIC[e["type"]])
        q = tps[p][k]
        q.append(Record(k, len(q), key, orjson.dumps(e)))
    return tps


def deliveries(tps: list[list[list[Record]]], fetch: int, batch: int) -> list[list[tuple[int, Record]]]:
    """Batches of (partition, record): fetches of ``fetch`` records per topic-partition, round robin."""
    cursors = {(p, k): 0 for p in range(len(tps)) for k in range(len(INPUT_KINDS))}
    stream: list[tuple[int, Record]] = []
    while cursors:
        for (p, k), c in list(cursors.items()):
            chunk = tps[p][k][c : c + fetch]
            stream.extend((p, r) for r in chunk)
            if c + fetch >= len(tps[p][k]):
                del cursors[(p, k)]
            else:
                cursors[(p, k)] = c + fetch
    return [stream[i : i + batch] for i in range(0, len(stream), batch)]


class Sink:
    """What make_durable would send, reduced to a digest (and the state bytes it would write)."""

    def __init__(self) -> None:
        self.digest = hashlib.sha256()
        self.counts: dict[str, int] = {}
        self.state_bytes = 0

    def take(self, out: Output) -> None:
        for name, key, value, ts_ms in out.records:
            self.counts[name] = self.counts.get(name, 0) + 1
            if name != "health":  # previews depend on batch timing; the rest must not
                self.digest.update(b"%s\0%s\0%s\0%d\n" % (name.encode(), key, value, ts_ms))
        for dl in out.dead_letters:
            self.digest.update(b"dead\0%d\0%d\0%s\n" % (dl.record.kind, dl.record.offset, dl.reason.encode()))
        # The worker writes every changed state to the changelog once per step.
        self.state_bytes += sum(len(st.dumps()) for st in out.states.values())


def run(batches: list[list[tuple[int, Record]]], tps: list[list[list[Record]]], cfg_live: bool) -> dict:
    settings = Settings(clock="live" if cfg_live else "event")
    config = driver_config(settings)
    engine = Engine(load_scoring(None), load_rules(None))
    store = StateStore()
    partitions = len(tps)
    ends: list[list[int | None]] = [
        [len(tps[p][k]) for k in range(len(INPUT_KINDS))] for p in range(partitions)
    ]
    # As a consumer starting from the beginning: position 0 on every topic.
    drivers = [PartitionDriver(p, engine, store, config, [0] * len(INPUT_KINDS)) for p in range(partitions)]
    sink = Sink()
    n = sum(len(b) for b in batches)
    # The simulated history ends a minute before "now"; the offset keeps event-age checks fixed.
    offset = END.timestamp() + 60 - time.time()
    started, cpu0 = time.perf_counter(), time.process_time()
    for batch in batches:
        now = time.time() + offset
        touched: set[int] = set()
        for p, rec in batch:
            drivers[p].offer(rec, now)
            touched.add(p)
        for p in sorted(touched):
            sink.take(drivers[p].step(ends[p], now))
            while drivers[p].paused:  # the worker's ingest agent steps again before reading more
                sink.take(drivers[p].step(ends[p], now))
    # Everything is read: once the hold has passed, the rest goes through (no sleeping for it).
    now = time.time() + offset + config.hold_s + 1
    for d in drivers:
        sink.take(d.step(ends[d.partition], now))
        while d.paused:
            sink.take(d.step(ends[d.partition], now))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu0
    buffered = sum(d.buffered for d in drivers)
    for d in drivers:  # the open slots, to compare final states (not timed: the worker waits for them)
        sink.take(d.flush())
    for account_id in sorted(store.data):
        sink.digest.update(account_id.encode() + b"\0" + store.data[account_id].dumps() + b"\n")
    stats: dict[str, int] = {}
    for d in drivers:
        for name in ("processed", "redelivered", "duplicates", "late", "dead_letters", "evaluations"):
            stats[name] = stats.get(name, 0) + getattr(d.stats, name)
    sink.digest.update(orjson.dumps(stats, option=orjson.OPT_SORT_KEYS))
    return {
        "events": n,
        "seconds": elapsed,
        "events_per_s": n / elapsed,
        # On a shared machine wall time counts other processes' turns too: CPU time does not.
        "cpu_seconds": cpu,
        "events_per_cpu_s": n / cpu,
        "accounts": sum(1 for key in store.data if not key.startswith(RESERVED_PREFIX)),
        "left_buffered": buffered,
        "outputs": sink.counts,
        "state_bytes_written": sink.state_bytes,
        "stats": stats,
        "digest": sink.digest.hexdigest()[:16],
    }


def top_entries(profile: cProfile.Profile, n: int) -> list[str]:
    buf = io.StringIO()
    pstats.Stats(profile, stream=buf).sort_stats("tottime").print_stats(n)
    lines = buf.getvalue().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.lstrip().startswith("ncalls"))
    return [ln.rstrip() for ln in lines[start : start + n + 1] if ln.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1_000)
    ap.add_argument("--days", type=int, default=60)
    ap.add_argument("--events", type=int, default=300_000, help="the first N events of the history")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--fetch", type=int, default=1_000, help="records per topic-partition fetch")
    ap.add_argument("--batch", type=int, default=500, help="records per step (HEALTHMON_BATCH_MAX)")
    ap.add_argument("--live", action="store_true", help="HEALTHMON_CLOCK=live (default: event)")
    ap.add_argument("--only", choices=["uniform", "skewed"], default=None)
    ap.add_argument("--profile", action="store_true", help="cProfile each run; print the top entries")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()

    results: dict = {
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
        "command": " ".join(["python", "bench/bench_driver.py", *sys.argv[1:]]),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "runs": {},
    }
    for name in ("uniform", "skewed"):
        if args.only and args.only != name:
            continue
        tps = partitioned(simulated(args.accounts, args.days, args.events, name == "skewed"), args.partitions)
        batches = deliveries(tps, args.fetch, args.batch)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        res = run(batches, tps, args.live)
        if prof:
            prof.disable()
            res["profile_top"] = top_entries(prof, args.top)
        per_account: dict[bytes, int] = {}
        for topics in tps:
            for records in topics:
                for r in records:
                    per_account[r.key or b""] = per_account.get(r.key or b"", 0) + 1
        top = sorted(per_account.values(), reverse=True)[: max(1, args.accounts // 100)]
        res["top_1pct_accounts_share"] = sum(top) / res["events"]
        results["runs"][name] = res
        note = " (under cProfile: slower)" if prof else ""
        print(
            f"{name:8s} {res['events']:,} events, {res['accounts']:,} accounts: "
            f"{res['events_per_s']:,.0f} events/s, {res['events_per_cpu_s']:,.0f} per CPU-second{note}  "
            f"digest {res['digest']}",
            flush=True,
        )
        if prof:
            print("\n".join(res["profile_top"]), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
