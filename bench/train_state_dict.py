"""Train the zstd dictionary of account-state layout v3 (streams/core/data/state_dict_v3.zdict), or with
``--v4 --out streams/core/data/state_dict_v4.zdict`` layout v4's (v3's list, trained on the simulator
with the relationship events of contract 1.1).

    python bench/train_state_dict.py            # writes the dictionary (do not, once v3 records exist)

The dictionary is frozen with the format byte (streams/core/state.py, FORMAT_V3_ZSTD): records written with
it can only be read with it, so this script is here to show how it was made, not to be run again for
the same format byte; a new dictionary needs a new format byte. It is trained on the v3 bodies (msgpack,
before zstd) of simulated books with other seeds than the benchmark's (bench_state.py uses seed 42):
seed 7, 600 accounts evaluated once at the end, and seed 11, 200 accounts evaluated at every midnight
(score history and rule states as a running worker has them).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import zstandard

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_state import build

from streams.core import state as S

DICT_BYTES = 16_384


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=S._DICT_V3_PATH)
    ap.add_argument("--v4", action="store_true", help="the v4 book (smaller, for the v4 dictionary)")
    args = ap.parse_args()
    # v3: 600 + 200 daily. v4 (contract 1.1's relationship events in the simulator): 300 + 40 daily,
    # written to streams/core/data/state_dict_v4.zdict (--out), same seeds.
    states = (
        build(300, False, seed=7) + build(40, True, seed=11)
        if args.v4
        else build(600, False, seed=7) + build(200, True, seed=11)
    )
    samples = [S._ENCODER.encode(S.values_v2(s, v3=True)) for s in states]
    zdict = zstandard.train_dictionary(DICT_BYTES, samples, level=S.ZSTD_LEVEL_V3, threads=1)
    args.out.write_bytes(zdict.as_bytes())
    print(f"{args.out}: {len(zdict.as_bytes())} bytes from {len(samples)} states")


if __name__ == "__main__":
    main()
