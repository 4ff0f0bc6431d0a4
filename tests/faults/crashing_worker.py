"""``healthmon worker`` that dies through Faust's own crash path, as the fetcher's KeyError made it.

``HM_CRASH_FETCH_AFTER_S=T``: the first fetch T seconds after the first record was fetched raises,
whether or not records are still coming (the backlog left after an earlier crash may all be fetched
within T seconds; Faust's fetcher calls ``getmany`` again every poll) (``HM_CRASH_FETCH_AFTER=N``: the
fetch after N records)
(Faust logs "Drain messages raised", then "We experienced a crash!", stops the app and exits), as
aiokafka's ``fetched_records`` did when a seek from the event loop's thread raced it. Unlike a SIGKILL,
this path runs Faust's shutdown: the fetcher stops and the consumer leaves the group first, while the
agents and timers go on until the app's ``on_before_shutdown`` handlers have run; then they are cancelled.

``HM_SLOW_STOP_S=T``: that stretch lasts T seconds more (seen in the wild: 40 s, a driver being made
while the broker no longer answered the worker's offset requests). Input starves meanwhile.

The other ways a worker dies (issue 22), once per process:
``HM_CRASH_STEP_AFTER=N``: the N-th driver step raises (a bug in a step: the shell stops writing and
calls Faust's crash path). ``HM_CRASH_AGENT_AFTER=N[,M...]``: the ingest agent's N-th (M-th...)
batch raises before anything of it is offered (Faust's supervisor restarts the agent in the same
process). ``HM_SIGTERM_AT_MIDNIGHT=K``: the process sends
itself SIGTERM at the K-th step that stops at its budget while a UTC midnight's portfolio freeze is
under way (an operator's stop during a midnight; run with a small ``HEALTHMON_STEP_BUDGET``).
"""

from __future__ import annotations

import asyncio
import os
import runpy
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

from faust.app.base import App
from faust.transport import consumer as faust_consumer

CRASH_AFTER_S = float(os.environ.get("HM_CRASH_FETCH_AFTER_S", "0") or 0)
CRASH_AFTER_N = int(os.environ.get("HM_CRASH_FETCH_AFTER", "0") or 0)
original = faust_consumer.Consumer.getmany
fetched = 0
first_at: float | None = None


class InjectedFetcherCrash(RuntimeError):
    pass


def _crash_due() -> bool:
    late = CRASH_AFTER_S and first_at is not None and time.monotonic() - first_at >= CRASH_AFTER_S
    return bool(late or (CRASH_AFTER_N and fetched >= CRASH_AFTER_N))


def _crash() -> None:
    print(f"crashing worker: the fetcher raises after {fetched} records", flush=True)
    raise InjectedFetcherCrash(f"injected after {fetched} records")


async def getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
    global fetched, first_at
    if _crash_due():  # also when nothing is left to fetch: every poll calls this
        _crash()
    async for tp, message in original(self, timeout):
        first_at = first_at or time.monotonic()
        if _crash_due():
            _crash()
        fetched += 1
        yield tp, message


faust_consumer.Consumer.getmany = getmany  # type: ignore[method-assign]

SLOW_STOP_S = float(os.environ.get("HM_SLOW_STOP_S", "0") or 0)
stop_consumer = App._stop_consumer


async def _stop_consumer(self: Any) -> None:
    await stop_consumer(self)
    if SLOW_STOP_S:
        print(f"crashing worker: the stop takes {SLOW_STOP_S} s more", flush=True)
        await asyncio.sleep(SLOW_STOP_S)


App._stop_consumer = _stop_consumer  # type: ignore[method-assign]

CRASH_STEP_AFTER = int(os.environ.get("HM_CRASH_STEP_AFTER", "0") or 0)
CRASH_AGENT_AT = {int(n) for n in os.environ.get("HM_CRASH_AGENT_AFTER", "").split(",") if n}
SIGTERM_AT_MIDNIGHT = int(os.environ.get("HM_SIGTERM_AT_MIDNIGHT", "0") or 0)
calls = {"step": 0, "offer": 0, "midnight": 0}


class InjectedStepCrash(RuntimeError):
    pass


class InjectedAgentCrash(RuntimeError):
    pass


if CRASH_STEP_AFTER or SIGTERM_AT_MIDNIGHT:
    from streams.engine.driver import PartitionDriver

    driver_step = PartitionDriver.step
    driver_pause = PartitionDriver._pause

    def step(self: Any, highwaters: Any, now: float) -> Any:
        calls["step"] += 1
        if calls["step"] == CRASH_STEP_AFTER:
            print(f"crashing worker: driver step {calls['step']} raises", flush=True)
            raise InjectedStepCrash(f"injected at step {calls['step']}")
        return driver_step(self, highwaters, now)

    def pause(self: Any, until_ms: int) -> bool:
        if self._freezing is not None:
            calls["midnight"] += 1
            if calls["midnight"] == SIGTERM_AT_MIDNIGHT:
                print(f"crashing worker: SIGTERM during the freeze of {self._freezing[0]}", flush=True)
                os.kill(os.getpid(), signal.SIGTERM)
        return bool(driver_pause(self, until_ms))

    PartitionDriver.step = step  # type: ignore[method-assign]
    PartitionDriver._pause = pause  # type: ignore[method-assign]

if CRASH_AGENT_AT:
    from streams.worker.shell import Shell

    shell_offer = Shell.offer

    async def offer(self: Any, records: Any, now: float) -> Any:
        calls["offer"] += 1
        if calls["offer"] in CRASH_AGENT_AT:
            print(f"crashing worker: ingest batch {calls['offer']} raises", flush=True)
            raise InjectedAgentCrash(f"injected at batch {calls['offer']}")
        return await shell_offer(self, records, now)

    Shell.offer = offer  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["healthmon", *sys.argv[1:]]
    runpy.run_module("streams", run_name="__main__")
