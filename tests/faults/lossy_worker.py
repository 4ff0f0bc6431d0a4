"""``healthmon worker`` whose Kafka client loses fetched records once, as faust-streaming 0.15 was seen
to do after a restart (records fetched, never handed to the agent, the read offset moved past them).

``HM_LOSE="topic:partition:from:to;..."`` names the offset ranges lost the first time they are
fetched. Faust notes a jump after such a range as a gap it counts as acked, exactly as in the real
case; a range at the end of a partition has nothing after it to reveal it.
"""

from __future__ import annotations

import os
import runpy
import sys
from collections.abc import AsyncIterator
from typing import Any

from faust.transport import consumer as faust_consumer

LOSE = [
    (topic, int(p), int(lo), int(hi))
    for topic, p, lo, hi in (spec.split(":") for spec in os.environ.get("HM_LOSE", "").split(";") if spec)
]
lost: set[tuple[str, int, int]] = set()
original = faust_consumer.Consumer.getmany


async def getmany(self: Any, timeout: float) -> AsyncIterator[Any]:
    async for tp, message in original(self, timeout):
        key = (tp.topic, tp.partition, message.offset)
        if key not in lost and any(
            tp.topic == t and tp.partition == p and lo <= message.offset < hi for t, p, lo, hi in LOSE
        ):
            lost.add(key)
            print(f"lossy client: lost {tp.topic}[{tp.partition}]@{message.offset}", flush=True)
            continue
        yield tp, message


faust_consumer.Consumer.getmany = getmany  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.argv = ["healthmon", *sys.argv[1:]]
    runpy.run_module("streams", run_name="__main__")
