"""A Faust agent that does nothing, on the worker's input topics: the ceiling Faust's per-message
machinery leaves to the ingest agent (bench_pipeline.py runs it beside raw consume and the worker).

    HEALTHMON_... NOOP_EVENTS=N NOOP_OUT=result.json python bench/noop_agent.py worker -l warn

Consumes like ``ingest`` (``take_events`` batches of ``HEALTHMON_BATCH_MAX`` within
``HEALTHMON_BATCH_WAIT_S``, each event acked), touches nothing, and writes events/s from its first
event to its N-th to ``NOOP_OUT``.

``NOOP_FORWARD=topic`` sends each event on to that (existing) topic, one output per input, on the
input's partition; ``NOOP_GUARANTEE`` is Faust's ``processing_guarantee`` (``at_least_once`` or
``exactly_once``, which makes those sends transactional with the input offsets): the price of
Faust's transactions on the same work (docs/processing.md, "Why not Faust's exactly_once"). The
rate then runs to the N-th event *sent*. ``NOOP_SUBSCRIBE=1`` also consumes the output topic
(doing nothing): Faust's exactly_once only puts a send in a transaction when the app consumes
the topic it sends to.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import faust

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from streams.core.state import INPUT_KINDS
from streams.settings import get_settings

s = get_settings()
want = int(os.environ["NOOP_EVENTS"])
out = Path(os.environ["NOOP_OUT"])
forward = os.environ.get("NOOP_FORWARD")
app = faust.App(
    f"{s.app_id}-noop",
    broker=s.broker,
    store="memory://",
    datadir=s.data_dir,
    topic_partitions=s.partitions,
    consumer_auto_offset_reset="earliest",
    key_serializer="raw",
    value_serializer="raw",
    web_enabled=False,
    stream_wait_empty=False,
    broker_max_poll_interval=300.0,
    processing_guarantee=os.environ.get("NOOP_GUARANTEE", "at_least_once"),
)
inputs = app.topic(*(s.topic(k) for k in INPUT_KINDS), key_type=bytes, value_type=bytes, allow_empty=True)
output = app.topic(forward, key_type=bytes, value_type=bytes) if forward else None
if output is not None and os.environ.get("NOOP_SUBSCRIBE"):

    @app.agent(output)
    async def outputs(stream: Any) -> None:
        async for _ in stream.take_events(s.batch_max, within=s.batch_wait_s):
            pass


seen = 0
first: float | None = None


def report(span: float) -> None:
    out.write_text(json.dumps({"events": seen, "seconds": span, "events_per_s": seen / span}))
    os._exit(0)  # measured: nothing to shut down cleanly for


@app.agent(inputs)
async def noop(stream: Any) -> None:
    global seen, first
    async for batch in stream.take_events(s.batch_max, within=s.batch_wait_s):
        if first is None:
            first = time.perf_counter()
        if output is not None:
            sent = [await output.send(key=e.key, value=e.value, partition=e.message.partition) for e in batch]
            await app.producer.flush()
            for fut in sent:
                await fut  # acknowledged (exactly_once: written in the open transaction)
        seen += len(batch)
        if seen >= want:
            report(time.perf_counter() - first)


if __name__ == "__main__":
    app.main()
