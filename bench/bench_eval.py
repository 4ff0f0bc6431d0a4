"""CPU cost of one live evaluation, in process: no Kafka, no Faust, little sensitivity to machine load.

    python bench/bench_eval.py [--accounts 300 --days 90 --repeat 3] [--profile] [--json FILE]

Why: a live event is its own evaluation (a live slot is 50 ms), so the worker's live capacity is
bounded by what one evaluation costs: metrics, score, rules, the state's bookkeeping and the encoded
snapshot, change and alerts. ``bench_pipeline.py`` measures that through Kafka on a shared machine;
this isolates it.

The book: ``Simulator(N, days, seed=42, end=2026-11-01)`` run through ``run_offline`` (the worker's
driver: evaluated per slot and at every midnight, the portfolio frozen daily), so states carry a
running worker's score history and rule states. The live events: the simulator's next day, for
each account its events in order, taken in rounds (round r is every account's r-th event of that day,
so every event of a round is of a distinct account). Each event is folded (``Engine.apply``) and its
account evaluated at the event's time through the driver's own ``_evaluate`` (the same call a closed
live slot makes, encoding included). CPU time is ``time.process_time`` over the evaluations only
(the fold is reported apart); the best of ``--repeat`` passes, each on a fresh copy of the book.

The digest covers every output record (snapshots, changes, alerts, byte for byte) and the states after
the run: an optimisation must leave it unchanged.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import gc
import hashlib
import io
import json
import pickle
import platform
import pstats
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rules.engine import DEFAULT_RULES, load_rules
from streams.core.events import EVENT_ADAPTER, BaseEvent
from streams.core.scoring import load_scoring
from streams.engine.driver import DriverConfig, PartitionDriver, StateStore, run_offline
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator

END = datetime(2026, 11, 1, tzinfo=UTC)  # fixed: the same book every run


def build(accounts: int, days: int) -> tuple[Engine, StateStore, list[list[BaseEvent]]]:
    """The book up to END, and the next day's events in rounds of distinct accounts."""
    engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
    sim = Simulator(accounts, days, seed=42, end=END)
    end = int(sim.end)
    history: list[BaseEvent] = []
    live: dict[str, list[BaseEvent]] = {}
    for raw in sim.events(days_after=1):
        ev = EVENT_ADAPTER.validate_python(raw)
        if int(ev.occurred_at.timestamp()) < end:
            history.append(ev)
        else:
            live.setdefault(ev.account_id, []).append(ev)
    store = run_offline(history, engine, until_ms=end * 1000)
    longest = max((len(v) for v in live.values()), default=0)
    rounds = [[evs[r] for evs in live.values() if len(evs) > r] for r in range(longest)]
    return engine, store, rounds


def run(engine: Engine, store: StateStore, rounds: list[list[BaseEvent]], limit: int) -> dict:
    """Fold and evaluate the live events (at most ``limit``); CPU seconds and a digest of all outputs."""
    driver = PartitionDriver(0, engine, store, DriverConfig(live=True))
    fold_s = eval_s = 0.0
    n = 0
    digest = hashlib.sha256()
    clock = time.process_time
    for events in rounds:
        if n >= limit:
            break
        for ev in events[: limit - n]:
            state = store.get(ev.account_id)
            assert state is not None
            t0 = clock()
            engine.apply(state, ev, 0)
            t1 = clock()
            driver._evaluate(state, int(ev.occurred_at.timestamp()))
            eval_s += clock() - t1
            fold_s += t1 - t0
            n += 1
        out = driver._output()
        for name, key, value, when in out.records:
            digest.update(f"{name}|{key!r}|{when}|".encode())
            digest.update(value)
    for account_id in sorted(a for a in store.data if not a.startswith("\x00")):
        digest.update(store.data[account_id].dumps())
    return {
        "evaluations": n,
        "eval_cpu_s": eval_s,
        "fold_cpu_s": fold_s,
        "digest": digest.hexdigest()[:16],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--days", type=int, default=90)
    ap.add_argument("--limit", type=int, default=20_000, help="live evaluations per pass, at most")
    ap.add_argument("--repeat", type=int, default=3, help="passes; the best is reported")
    ap.add_argument("--profile", action="store_true", help="cProfile one more pass, print the top entries")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--json", type=Path, help="write the result here")
    ap.add_argument(
        "--gc",
        choices=["on", "freeze", "off"],
        default="on",
        help="the cyclic GC during the passes: as the worker runs it (on), with the book frozen out of "
        "its collections (gc.freeze), or off: how much of an evaluation the collector costs",
    )
    ap.add_argument(
        "--cache",
        type=Path,
        help="pickle the built book here and reuse it (building takes minutes; rebuild after a change "
        "that may change results, or the digest compares against the old code's book)",
    )
    args = ap.parse_args()

    t0 = time.perf_counter()
    cached = args.cache and args.cache / f"book-{args.accounts}-{args.days}.pickle"
    if cached and cached.exists():
        store, rounds = pickle.loads(cached.read_bytes())
        engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
    else:
        engine, store, rounds = build(args.accounts, args.days)
        if cached:
            cached.parent.mkdir(parents=True, exist_ok=True)
            cached.write_bytes(pickle.dumps((store, rounds)))
    print(
        f"book: {args.accounts} accounts, {args.days} days, built in {time.perf_counter() - t0:.1f} s; "
        f"{sum(map(len, rounds))} live events in {len(rounds)} rounds"
    )
    passes = []
    for _ in range(args.repeat):
        book = copy.deepcopy(store)
        if args.gc == "freeze":
            gc.collect()
            gc.freeze()
        elif args.gc == "off":
            gc.disable()
        passes.append(run(engine, book, rounds, args.limit))
        gc.enable()
        gc.unfreeze()
    digests = {p["digest"] for p in passes}
    assert len(digests) == 1, f"passes disagree: {digests}"
    best = min(passes, key=lambda p: p["eval_cpu_s"])
    n = best["evaluations"]
    result = {
        "evaluations": n,
        "eval_us": round(best["eval_cpu_s"] / n * 1e6, 1),
        "eval_us_passes": [round(p["eval_cpu_s"] / n * 1e6, 1) for p in passes],
        "fold_us": round(best["fold_cpu_s"] / n * 1e6, 1),
        "evaluations_per_cpu_s": round(n / best["eval_cpu_s"]),
        "digest": best["digest"],
        "accounts": args.accounts,
        "days": args.days,
        "gc": args.gc,
        "python": platform.python_version(),
    }
    print(
        f"{n} live evaluations: {result['eval_us']} us CPU each (passes {result['eval_us_passes']}), "
        f"fold {result['fold_us']} us; {result['evaluations_per_cpu_s']}/CPU-s; digest {best['digest']}"
    )
    if args.profile:
        prof = cProfile.Profile()
        prof.enable()
        run(engine, copy.deepcopy(store), rounds, args.limit)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(args.top)
        print(buf.getvalue())
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(args.top)
        print(buf.getvalue())
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
