"""Micro-benchmark of the rule condition language (issue: >= 1M simple evaluations per second).

python bench/bench_rules.py [--n 2000000] [--json bench/results/rules.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from rules.context import FIELDS
from rules.engine import load_rules
from rules.expr import compile_condition

CASES = {
    "simple: score < 60": "score < 60",
    "and/not: days_since_last_login >= 14 and not canceled": "days_since_last_login >= 14 and not canceled",
    "null-safe chain: days_to_renewal is not None and 0 <= days_to_renewal <= 90 and adoption_rate < 0.5": (
        "days_to_renewal is not None and 0 <= days_to_renewal <= 90 and adoption_rate < 0.5"
    ),
    "membership: band in ['red', 'yellow']": 'band in ["red", "yellow"]',
    "arithmetic: mrr_change_30d / mrr < -0.1": "mrr_change_30d / mrr < -0.1",
}


def rate(fn, ctx, n: int) -> float:
    start = time.perf_counter()
    for _ in range(n):
        fn(ctx)
    return n / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=2_000_000)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    ctx = dict.fromkeys(FIELDS)
    ctx.update(
        score=55.0,
        band="yellow",
        days_since_last_login=15,
        canceled=False,
        days_to_renewal=60,
        adoption_rate=0.4,
        mrr_change_30d=-20.0,
        mrr=100.0,
    )
    results = {}
    for name, src in CASES.items():
        fn = compile_condition(src, FIELDS).fn
        results[name] = rate(fn, ctx, args.n)
    pack = [r.condition.fn for r in load_rules().rules]
    n_pack = args.n // len(pack)
    start = time.perf_counter()
    for _ in range(n_pack):
        for fn in pack:
            fn(ctx)
    results[f"default pack ({len(pack)} rules), conditions/s"] = (
        n_pack * len(pack) / (time.perf_counter() - start)
    )
    width = max(map(len, results))
    print(f"{'condition':<{width}}  evaluations/s")
    for name, r in results.items():
        print(f"{name:<{width}}  {r:>13,.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "python": platform.python_version(),
                    "machine": platform.machine(),
                    "n": args.n,
                    "evaluations_per_second": results,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
