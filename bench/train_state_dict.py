"""Train the zstd dictionary of account-state layout v3 (streams/data/state_dict_v3.zdict).

    python bench/train_state_dict.py            # writes the dictionary (do not, once v3 records exist)

The dictionary is frozen with the format byte (streams/state.py, FORMAT_V3_ZSTD): records written with
it can only be read with it, so this script is here to show how it was made, not to be run again for
the same format byte; a new dictionary needs a new format byte. It is trained on the v3 bodies (msgpack,
before zstd) of simulated books with other seeds than the benchmark's (bench_state.py uses seed 42):
seed 7, 600 accounts evaluated once at the end, and seed 11, 200 accounts evaluated at every midnight
(score history and rule states as a running worker has them).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rules.engine import DEFAULT_RULES, load_rules  # noqa: E402
from streams import state as S  # noqa: E402
from streams.engine import Engine  # noqa: E402
from streams.events import EVENT_ADAPTER  # noqa: E402
from streams.scoring import load_scoring  # noqa: E402
from streams.simulate import Simulator  # noqa: E402
from streams.state import DAY_S, AccountState  # noqa: E402

DICT_BYTES = 16_384


def book(accounts: int, seed: int, daily: bool) -> list[AccountState]:
    sim = Simulator(accounts, 90, seed=seed, end=datetime(2026, 11, 1, tzinfo=UTC))
    engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
    states: dict[str, AccountState] = {}
    today = None
    for e in sim.events():
        ev = EVENT_ADAPTER.validate_python(e)
        day = int(ev.occurred_at.timestamp()) // DAY_S
        if daily and today is not None and day > today:
            for st in states.values():
                engine.evaluate(st, day * DAY_S)
        today = day if today is None else max(today, day)
        st = states.setdefault(ev.account_id, AccountState(account_id=ev.account_id))
        engine.apply(st, ev, 0)
    for st in states.values():
        engine.evaluate(st, int(sim.end))
    return list(states.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=S._DICT_V3_PATH)
    args = ap.parse_args()
    states = book(600, 7, False) + book(200, 11, True)
    samples = [S._ENCODER.encode(S.values_v2(s, v3=True)) for s in states]
    zdict = zstandard.train_dictionary(DICT_BYTES, samples, level=S.ZSTD_LEVEL_V3, threads=1)
    args.out.write_bytes(zdict.as_bytes())
    print(f"{args.out}: {len(zdict.as_bytes())} bytes from {len(samples)} states")


if __name__ == "__main__":
    main()
