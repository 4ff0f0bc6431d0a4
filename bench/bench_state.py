"""Size and speed of the account-state changelog record (streams/core/state.py), and a very large account.

    python bench/bench_state.py                      # 300 simulated accounts, as bench_pipeline's probe
    python bench/bench_state.py --accounts 1000      # a larger book
    python bench/bench_state.py --daily              # also evaluated at every UTC midnight
    python bench/bench_state.py --big-users 10000    # one account with 10,000 active users

The book is built as ``bench_pipeline.py``'s memory probe builds it: ``Simulator(N, 90, seed=42,
end=2026-11-01)``, every event folded with ``Engine.apply``, then ``Engine.evaluate`` at the end. With
``--daily`` every account is also evaluated at each UTC midnight, as the worker's due times do, so its
score history and rule states look like a running worker's (the probe evaluates once: one day of score
history, every rule inactive).

Prints the record size (p50 / p95 / max / mean) in the current layout (v3), in v2, in v1 and as JSON; the
bytes of each field, alone, before and after zstd (mean over the book and over its largest tenth); and
encode / decode microseconds per state (CPU time, best of ``--repeat`` passes: the machine is shared).
Sizes are deterministic; timings are measured here, never asserted in tests.

``--big-users N``: one account whose N users are each active on most of 90 days (every user on ~60 %
of the days, in a seeded random pattern), folded event by event: the serialized size, the Python heap
the state holds, the fold cost per event at the end (when the user cap is full), and one evaluation.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import statistics
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import cramjam
import msgspec

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rules.engine import DEFAULT_RULES, load_rules
from streams.core import state as S
from streams.core.events import EVENT_ADAPTER
from streams.core.scoring import load_scoring
from streams.core.state import (
    DAY_S,
    AccountState,
)
from streams.engine.engine import Engine
from streams.sim.simulate import Simulator

_ENC = msgspec.msgpack.Encoder()
#: How many integer columns each field writes in layout v2 (values_v2's order).
V2_COLUMNS = {
    "counts": 2, "days": 21, "users": 1, "features": 1, "open_tickets": 6, "closed_tickets": 7, "nps": 2,
    "score_history": 2, "rules": 8,
}  # fmt: skip
#: The same for layout v3 (ids are three columns: stem, number, digits).
V3_COLUMNS = {**V2_COLUMNS, "users": 4, "open_tickets": 9, "closed_tickets": 10}


def build(accounts: int, daily: bool, seed: int = 42) -> list[AccountState]:
    sim = Simulator(accounts, 90, seed=seed, end=datetime(2026, 11, 1, tzinfo=UTC))
    engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
    states: dict[str, AccountState] = {}
    today = None
    for e in sim.events():
        ev = EVENT_ADAPTER.validate_python(e)
        if daily:
            day = int(ev.occurred_at.timestamp()) // DAY_S
            if today is not None and day > today:
                for st in states.values():
                    engine.evaluate(st, day * DAY_S)
            today = day if today is None else max(today, day)
        st = states.get(ev.account_id) or states.setdefault(
            ev.account_id, AccountState(account_id=ev.account_id)
        )
        engine.apply(st, ev, 0)
    end = int(sim.end)
    for st in states.values():
        engine.evaluate(st, end)
    return list(states.values())


def pct(sizes: list[int]) -> dict:
    xs = sorted(sizes)
    return {
        "p50": xs[len(xs) // 2],
        "p95": xs[int(len(xs) * 0.95)],
        "max": xs[-1],
        "mean": round(statistics.mean(xs)),
    }


def _zstd(b: bytes) -> int:
    return min(len(b), len(cramjam.zstd.compress(b, level=S.ZSTD_LEVEL_V2)))


def _zstd_v3(b: bytes) -> int:
    """With the v3 dictionary (what a v3 record's frame uses)."""
    return min(len(b), len(S._zstd_v3()[0].compress(b)))


def fields_v1(s: AccountState) -> dict[str, bytes]:
    """Each field of a v1 record, alone (the values encode_state_v1 writes)."""
    p = s.profile
    values = {
        **{name: getattr(s, name) for name in S.LAYOUT_V1},
        "profile": None if p is None else [p.name, p.segment, p.csm_name, p.csm_email, p.slack_channel, p.signed_up_at, p.updated_at],
        "recent_ids": S._ids_bytes(s.recent_ids),
        "days": S._encode_days(s.days),
        "users": S._encode_users(s.users),
        "login_days": S._bitmap_bytes(s.login_days),
        "open_tickets": S._pack_map(s.open_tickets),
        "closed_tickets": S._pack_map(s.closed_tickets),
        "nps": S._pack_map(s.nps),
    }  # fmt: skip
    return {name: _ENC.encode(v) for name, v in values.items()}


def fields_v2(s: AccountState, v3: bool = False) -> dict[str, bytes]:
    """Each field of a v2 (or v3) record, alone: its own entry plus its integer columns, packed by
    themselves."""
    values = S.values_v2(s, v3)
    lens = values[0]
    columns = V3_COLUMNS if v3 else V2_COLUMNS
    assert len(lens) == sum(columns.values()), "V2_COLUMNS / V3_COLUMNS is out of date with values_v2"
    reader = S._ColumnReader(*values[:3])
    out = {}
    entries = values[3:] + [None] * (len(S.LAYOUT_V1) - len(values) + 3)  # the relationship tail is optional
    for name, entry in zip(S.LAYOUT_V1, entries, strict=True):
        cols = [reader.take() for _ in range(columns.get(name, 0))]
        packed = S._pack_columns(cols) if cols else []
        out[name] = _ENC.encode([entry, *packed])
    return out


def fields_v3(s: AccountState) -> dict[str, bytes]:
    return fields_v2(s, v3=True)


def breakdown(states: list[AccountState], fields, zstd=_zstd) -> list[tuple[str, float, float, float, float]]:
    sizes = [len(s.dumps()) for s in states]
    top = {i for i, _ in sorted(enumerate(sizes), key=lambda x: -x[1])[: max(1, len(states) // 10)]}
    raw: dict[str, list[int]] = {}
    packed: dict[str, list[int]] = {}
    for s in states:
        for name, b in fields(s).items():
            raw.setdefault(name, []).append(len(b))
            packed.setdefault(name, []).append(zstd(b))
    rows = []
    for name in raw:
        r, z = raw[name], packed[name]
        rt, zt = [r[i] for i in top], [z[i] for i in top]
        rows.append((name, statistics.mean(r), statistics.mean(z), statistics.mean(rt), statistics.mean(zt)))
    return sorted(rows, key=lambda row: -row[2])


def cpu_us(fn, items: list, repeat: int) -> float:
    """CPU microseconds per item, best of ``repeat`` passes, with the cyclic GC paused (its passes
    over whatever else the process holds are not the codec's cost)."""
    best = float("inf")
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeat):
            t = time.process_time()
            for x in items:
                fn(x)
            best = min(best, time.process_time() - t)
    finally:
        gc.enable()
    return best / len(items) * 1e6


def timings(states: list[AccountState], repeat: int) -> dict:
    """Encode the states as folded (their lists spread over the heap, as a memory-store worker holds
    them) and as just decoded (compact, as a RocksDB read gives them: much kinder to the CPU cache),
    and decode."""
    out = {}
    for name, encode in (("v1", S.encode_state_v1), ("v2", S.encode_state_v2), ("v3", S.encode_state)):
        blobs = [encode(s) for s in states]
        loaded = [AccountState.loads(b) for b in blobs]
        S._CODED_USERS.clear()
        out[name] = {
            "encode_us": round(cpu_us(encode, states, repeat), 1),
            "encode_decoded_us": round(cpu_us(encode, loaded, repeat), 1),
            "decode_us": round(cpu_us(AccountState.loads, blobs, repeat), 1),
        }
    return out


def big_account(n_users: int, days: int = 90, max_users: int = S.MAX_USERS, seed: int = 7) -> dict:
    """One account, ``n_users`` users each active on ~60 % of ``days`` days (logins), at most
    ``max_users`` remembered."""
    from streams.core import events as ev
    from streams.core.aggregate import apply_event

    rng = random.Random(seed)
    start = int(datetime(2026, 8, 1, tzinfo=UTC).timestamp())
    engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES), max_users=max_users)
    state = AccountState(account_id="big")
    users = [f"big-user-{i:05d}@example.com" for i in range(n_users)]
    last_day_times: list[float] = []
    n_events = 0
    t_fold = 0.0
    for d in range(days):
        active = [u for u in users if rng.random() < 0.6]
        rng.shuffle(active)
        evs = [
            ev.EVENT_ADAPTER.validate_python(
                {
                    "event_id": f"e-{d}-{i}",
                    "account_id": "big",
                    "type": "login",
                    "user_id": u,
                    "occurred_at": datetime.fromtimestamp(start + d * DAY_S + 60 + i, UTC).isoformat(),
                }
            )
            for i, u in enumerate(active)
        ]
        t = time.process_time()
        for e in evs:
            apply_event(state, e, key_features=engine.key_features, max_users=max_users)
        spent = time.process_time() - t
        t_fold += spent
        n_events += len(evs)
        if d == days - 1:
            last_day_times.append(spent / max(1, len(evs)))
    as_of = start + days * DAY_S - 1
    t = time.process_time()
    engine.evaluate(state, as_of)
    t_eval = time.process_time() - t
    gc.collect()
    tracemalloc.start()
    copy = AccountState.loads(state.dumps())
    heap, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    del copy
    record = state.dumps()
    return {
        "users_seen": n_users,
        "users_kept": len(state.users),
        "user_cap": max_users,
        "active_users_30d": engine.evaluate(state, as_of).snapshot.metrics.active_users_30d,
        "events": n_events,
        "record_bytes_v3": len(record),
        "record_bytes_v2": len(S.encode_state_v2(state)),
        "record_bytes_v1": len(S.encode_state_v1(state)),
        "record_bytes_json": len(state.dumps_json()),
        "heap_bytes_of_a_loaded_state": heap,
        "fold_us_per_event_mean": round(t_fold / n_events * 1e6, 1),
        "fold_us_per_event_last_day": round(last_day_times[-1] * 1e6, 1),
        "evaluate_ms": round(t_eval * 1000, 2),
        "encode_ms": round(cpu_us(S.encode_state, [state], 3) / 1000, 2),
        "decode_ms": round(cpu_us(AccountState.loads, [record], 3) / 1000, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=300)
    ap.add_argument("--daily", action="store_true", help="also evaluate every account at each UTC midnight")
    ap.add_argument("--repeat", type=int, default=5, help="timing passes (the best one counts)")
    ap.add_argument("--big-users", type=int, default=0, help="instead: one account with this many users")
    ap.add_argument("--big-days", type=int, default=90, help="days of activity of the large account")
    ap.add_argument("--max-users", type=int, default=S.MAX_USERS, help="the user cap for --big-users")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.big_users:
        result = big_account(args.big_users, args.big_days, args.max_users)
        print(json.dumps(result, indent=1))
    else:
        states = build(args.accounts, args.daily)
        result = {
            "accounts": len(states),
            "daily": args.daily,
            "bytes_v3": pct([len(s.dumps()) for s in states]),
            "bytes_v2": pct([len(S.encode_state_v2(s)) for s in states]),
            "bytes_v1": pct([len(S.encode_state_v1(s)) for s in states]),
            "bytes_json": pct([len(s.dumps_json()) for s in states]),
            "fields_v3": breakdown(states, fields_v3, _zstd_v3),
            "fields_v2": breakdown(states, fields_v2),
            "fields_v1": breakdown(states, fields_v1),
            "per_state": timings(states, args.repeat),
        }
        for fmt in ("v3", "v2", "v1", "json"):
            b = result[f"bytes_{fmt}"]
            print(
                f"{fmt:4s} p50 {b['p50']:6,} B  p95 {b['p95']:6,} B  max {b['max']:6,} B  mean {b['mean']:6,} B"
            )
        for fmt in ("v1", "v2", "v3"):
            print(f"\n{fmt}: bytes per field, alone (mean over {len(states)} / over the largest tenth)")
            print(f"{'field':20s} {'raw':>7s} {'zstd':>7s} | {'raw':>7s} {'zstd':>7s}")
            for name, r, z, rt, zt in result[f"fields_{fmt}"]:
                if rt >= 4:
                    print(f"{name:20s} {r:7.0f} {z:7.0f} | {rt:7.0f} {zt:7.0f}")
        for fmt, t in result["per_state"].items():
            print(
                f"\n{fmt}: encode {t['encode_us']} us (a just-decoded state: {t['encode_decoded_us']} us), "
                f"decode {t['decode_us']} us per state (CPU, best of {args.repeat})"
            )
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
