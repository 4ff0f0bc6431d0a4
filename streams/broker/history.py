"""The input topics' history, read from Kafka to their ends, for offline re-scoring and calibration.

``healthmon shadow`` and ``healthmon calibrate --from-kafka`` both need "everything the stream holds"
as contract-v1 events in one event-time order: this reads the five input topics from the beginning to
their end offsets as of now (:func:`streams.tail.read_to_end`) and validates each record as the worker
does (:func:`streams.events.parse_event`, key = account id, type on its own topic). A record the worker
would dead-letter is counted and left out, as it scores nothing there either.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass, field

from streams.broker.tail import read_to_end
from streams.core.events import BaseEvent, InvalidEvent, parse_event
from streams.core.state import INPUT_KINDS
from streams.settings import Settings


@dataclass
class InputHistory:
    """Valid events in (event time, topic, partition, offset) order, and what was left out."""

    events: list[BaseEvent] = field(default_factory=list)
    read: int = 0
    invalid: Counter[str] = field(default_factory=Counter)  # per topic

    @property
    def invalid_total(self) -> int:
        return sum(self.invalid.values())


async def read_input_history(s: Settings) -> InputHistory:
    """Read every input topic to its end as of now; the events sorted as the partition driver merges
    them (event time first; a topic's own order kept among equal times)."""
    kind_of = {s.topic(k): k for k in INPUT_KINDS}
    order = {k: i for i, k in enumerate(INPUT_KINDS)}
    out = InputHistory()
    keyed: list[tuple[float, int, int, int, BaseEvent]] = []
    async with contextlib.aclosing(read_to_end(s, *kind_of)) as records:
        async for msg in records:
            out.read += 1
            kind = kind_of[msg.topic]
            try:
                event = parse_event(msg.value, msg.key, kind)
            except InvalidEvent:
                out.invalid[msg.topic] += 1
                continue
            keyed.append((event.occurred_at.timestamp(), order[kind], msg.partition, msg.offset, event))
    keyed.sort(key=lambda r: r[:4])
    out.events = [r[4] for r in keyed]
    return out
