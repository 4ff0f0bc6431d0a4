"""A per-receiver rate limit shared by every ``deliver`` process: GCRA in Redis.

The limit is a receiver's (an SMTP relay, a Slack webhook), not a process's: two ``deliver`` processes
with a bucket each send twice the rate. So the bucket lives in Redis, as one key per receiver holding the
theoretical arrival time (TAT) of the next send, advanced by one small Lua script (atomic, one round
trip). Each call *reserves* the next free slot and returns how long to wait for it, so waiters need no
polling and are served in the order they asked. Time is Redis's own clock (``TIME``): one clock for all
processes, whatever their hosts' clocks say. Slots are ``1/rate`` apart (no burst): in any window of
``w`` seconds at most ``floor(w * rate) + 1`` sends start, across all processes.

A caller cancelled while it waits leaves its slot unused: the limit errs on the slow side, never over.
So does a caller that wakes up late (its event loop was busy): more than half an interval past its slot,
it takes a new one rather than send at once, since sends from every slot the loop slept through would
otherwise reach the receiver together (a busy loop would turn the limit into bursts).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from redis.asyncio import Redis

US = 1_000_000

# KEYS[1]: the receiver's key; ARGV[1]: the interval in microseconds; ARGV[2]: "now" in microseconds,
# or "" for Redis's clock (tests pass it to compare the script with ``reserve``).
RESERVE = """
local interval = tonumber(ARGV[1])
local now
if ARGV[2] ~= '' then
  now = tonumber(ARGV[2])
else
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
local start = math.max(tat, now)
local nxt = start + interval
redis.call('SET', KEYS[1], string.format('%d', nxt), 'PX', math.floor((nxt - now) / 1000) + 1000)
return start - now
"""


def reserve(tat: int, now: int, interval: int) -> tuple[int, int]:
    """GCRA without burst, as the script computes it (microseconds): (wait, new TAT)."""
    start = max(tat, now)
    return start - now, start + interval


#: How often a caller woken up late takes a new slot before it sends anyway (never starve).
MAX_RESLOTS = 3


class Clock(Protocol):
    def time(self) -> float: ...

    async def sleep(self, seconds: float) -> None: ...


@dataclass
class RedisRateLimiter:
    """``await acquire()`` returns when this receiver may send, counting every process's sends."""

    redis: Redis
    key: str
    rate_per_s: float
    clock: Clock

    def __post_init__(self) -> None:
        self.interval_us = max(1, round(US / self.rate_per_s))
        self._script = self.redis.register_script(RESERVE)

    async def reserve(self, now_us: int | None = None) -> float:
        """Reserve the next slot; seconds to wait for it."""
        wait = await self._script(keys=[self.key], args=[self.interval_us, "" if now_us is None else now_us])
        return int(wait) / US

    async def acquire(self) -> None:
        for _ in range(MAX_RESLOTS + 1):
            wait = await self.reserve()
            due = self.clock.time() + wait
            await self.clock.sleep(wait)
            if self.clock.time() - due <= self.interval_us / US / 2:
                return
