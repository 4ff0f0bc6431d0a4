"""A Faust agent that does nothing, on the worker's input topics: the ceiling Faust's per-message
machinery leaves to the ingest agent (bench_pipeline.py runs it beside raw consume and the worker).

    HEALTHMON_... NOOP_EVENTS=N NOOP_OUT=result.json python bench/noop_agent.py worker -l warn

Consumes like ``ingest`` (``take_events`` batches of ``HEALTHMON_BATCH_MAX`` within
``HEALTHMON_BATCH_WAIT_S``, each event acked), touches nothing, and writes events/s from its first
event to its N-th to ``NOOP_OUT``.
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

from streams.settings import get_settings  # noqa: E402
from streams.state import INPUT_KINDS  # noqa: E402

s = get_settings()
want = int(os.environ["NOOP_EVENTS"])
out = Path(os.environ["NOOP_OUT"])
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
)
inputs = app.topic(*(s.topic(k) for k in INPUT_KINDS), key_type=bytes, value_type=bytes, allow_empty=True)
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
        seen += len(batch)
        if seen >= want:
            report(time.perf_counter() - first)


if __name__ == "__main__":
    app.main()
