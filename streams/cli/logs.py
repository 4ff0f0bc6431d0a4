"""Quiet outages: while Kafka or Redis is down, clients log the same error thousands of times a
second. A handler filter lets each (logger, message template, level) through at most once per
interval and says how many were held back, so an outage costs a few lines, not gigabytes."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable


class RateLimit(logging.Filter):
    def __init__(self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.interval_s = interval_s
        self.clock = clock
        self._last: dict[tuple[str, object, int], float] = {}
        self._held: dict[tuple[str, object, int], int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True  # only the repeated warnings and errors of an outage are limited
        key = (record.name, record.msg, record.levelno)
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval_s:
            self._held[key] = self._held.get(key, 0) + 1
            return False
        self._last[key] = now
        held = self._held.pop(key, 0)
        if held:
            record.msg = f"{record.msg} ({held} more like this in the last {now - last:.0f} s)"  # type: ignore[operator]
        if len(self._last) > 10_000:  # many distinct messages: forget the oldest half
            for k in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                self._last.pop(k, None)
        return True


def rate_limit_handlers(logger: logging.Logger, interval_s: float = 10.0) -> None:
    """Put one shared limit on every handler of ``logger`` (the root logger, once configured)."""
    limit = RateLimit(interval_s)
    for handler in logger.handlers:
        if not any(isinstance(f, RateLimit) for f in handler.filters):
            handler.addFilter(limit)
