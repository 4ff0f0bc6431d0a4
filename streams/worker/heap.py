"""The cyclic garbage collector's pauses, kept off the live path.

Python's full (generation 2) collection walks every container object the process holds. A worker
holds its accounts' states, so the walk grows with the book: 90-180 ms at 5,000 small accounts in
``bench/bench_pipeline.py``, every 10-20 s under live load, and each pause sat on the p99 of live
events (p99 397-521 ms at half the live capacity, against 187-206 ms with the heap frozen). Freezing
(``gc.freeze``: everything tracked moves to the permanent generation, a list splice) every few
seconds keeps the collections to what was made since. What freezing costs is cyclic garbage
made before a freeze, which no collection then sees; a full collection every ``full_s`` (unfreeze,
collect, freeze again) takes it back: one pause an hour instead of one every few seconds.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class HeapFreezer:
    def __init__(self, full_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.full_s = full_s
        self.clock = clock
        self.last_full = clock()

    def tick(self) -> float | None:
        """Called every ``HEALTHMON_GC_FREEZE_S``: freeze, or when a full collection is due, run it
        (returns its duration, s)."""
        if self.full_s and self.clock() - self.last_full >= self.full_s:
            return self.full()
        gc.freeze()
        return None

    def full(self) -> float:
        start = time.perf_counter()
        gc.unfreeze()
        found = gc.collect()
        gc.freeze()
        self.last_full = self.clock()
        took = time.perf_counter() - start
        log.info("full collection: %d unreachable objects, %.0f ms", found, took * 1000)
        return took
