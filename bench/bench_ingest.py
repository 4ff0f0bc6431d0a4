"""The ingest service under load: events/s per process with Segment batches of 100, then the request
latency (p50/p99) at half of that rate (issue 25: aim >= 5,000 events/s, p99 < 100 ms at half).

One `healthmon ingest` process (as operators run it) against the broker of HEALTHMON_BROKER, on topics
of its own (a unique prefix); the load comes from this process over real HTTP: `--connections` clients
sending batches back to back for `--seconds` (throughput), then an open loop at half the measured rate
(latency: every request is sent on schedule, whether or not the previous ones were answered). Every
accepted event is checked to be on the topic at the end.

python bench/bench_ingest.py [--seconds 20] [--connections 8] [--batch 100] [--json bench/results/ingest.json]
python bench/bench_ingest.py --smoke      # tiny sizes: the tests run it so it never rots
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import aiohttp
import orjson
from aiokafka import TopicPartition

from streams.broker import clients as kafka_clients
from streams.broker.admin import create_topics
from streams.settings import Settings

WRITE_KEY = "wk_bench_" + uuid.uuid4().hex


def batch_body(n: int, seq: int, run: str) -> bytes:
    """A Segment batch of ``n`` track calls (logins and feature uses of 200 accounts), unique messageIds."""
    msgs = []
    for i in range(n):
        k = seq * n + i
        login = k % 3 == 0
        msgs.append(
            {
                "type": "track",
                "messageId": f"{run}-{k}",
                "userId": f"u{k % 5000}",
                "event": "Signed In" if login else "Feature Used",
                "properties": {} if login else {"feature": f"f{k % 12}"},
                "context": {
                    "groupId": f"acc-{k % 200}",
                    "library": {"name": "analytics-python", "version": "2.3"},
                },
                "timestamp": "2026-12-07T10:00:00.000Z",
            }
        )
    return orjson.dumps({"batch": msgs, "sentAt": "2026-12-07T10:00:00.100Z"})


def start_ingest(s: Settings, tmp: Path) -> tuple[subprocess.Popen[bytes], str, Path]:
    log = tmp / "ingest.log"
    env = {
        **s.process_env(os.environ),
        "HEALTHMON_INGEST_PORT": "0",
        "HEALTHMON_INGEST_SEGMENT_WRITE_KEYS": WRITE_KEY,
        "HEALTHMON_INGEST_RATE_PER_S": "1000000",  # the benchmark measures the service, not the limiter
        "HEALTHMON_INGEST_CONFIG": str(tmp / "ingest.yaml"),
    }
    (tmp / "ingest.yaml").write_text(
        "segment:\n  account_from: [context.groupId]\n  track:\n"
        "    Signed In: {type: login}\n    Feature Used: {type: feature_used, feature_from: properties.feature}\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "streams", "ingest", "-l", "info"],  # info: only the start and refusals
        cwd=ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        m = re.search(rb"listening on (http://[\d.]+:\d+)", log.read_bytes())
        if m:
            return proc, m.group(1).decode(), log
        if proc.poll() is not None:
            raise SystemExit(f"ingest exited:\n{log.read_text()}")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit(f"ingest did not listen within 60 s:\n{log.read_text()}")


async def throughput(url: str, seconds: float, connections: int, batch: int, run: str) -> dict:
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    bodies = [batch_body(batch, i, f"{run}-warm") for i in range(4)]
    accepted = 0
    seq = 0
    errors: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=connections)) as http:
        for body in bodies:  # warm-up: connections, producer metadata
            async with http.post(f"{url}/v1/batch", data=body, headers=headers) as r:
                assert r.status == 200, await r.text()
        # Prepared bodies, so the client's JSON encoding does not compete with the server for the CPU.
        pool = [batch_body(batch, i, run) for i in range(max(64, connections * 4))]
        stop = time.monotonic() + seconds
        started = time.monotonic()

        async def client() -> None:
            nonlocal accepted, seq
            while time.monotonic() < stop:
                body = pool[seq % len(pool)]
                seq += 1
                async with http.post(f"{url}/v1/batch", data=body, headers=headers) as r:
                    if r.status == 200:
                        accepted += (await r.json())["accepted"]
                    else:
                        errors[r.status] = errors.get(r.status, 0) + 1

        await asyncio.gather(*(client() for _ in range(connections)))
        elapsed = time.monotonic() - started
    return {
        "events_per_s": accepted / elapsed,
        "requests": seq,
        "accepted_events": accepted,
        "seconds": elapsed,
        "errors": errors,
    }


async def latency(url: str, events_per_s: float, seconds: float, batch: int, run: str) -> dict:
    headers = {
        "Authorization": "Basic " + base64.b64encode(f"{WRITE_KEY}:".encode()).decode(),
        "Content-Type": "application/json",
    }
    rate = events_per_s / batch  # requests per second
    n = max(5, int(rate * seconds))
    pool = [batch_body(batch, i, f"{run}-lat") for i in range(n)]
    lat: list[float] = []
    errors: dict[int, int] = {}
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:

        async def one(body: bytes) -> None:
            t0 = time.perf_counter()
            async with http.post(f"{url}/v1/batch", data=body, headers=headers) as r:
                await r.read()
                if r.status != 200:
                    errors[r.status] = errors.get(r.status, 0) + 1
            lat.append(time.perf_counter() - t0)

        start = time.monotonic()
        tasks = []
        for i, body in enumerate(pool):  # open loop: on schedule, answered or not
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(body)))
        await asyncio.gather(*tasks)
    lat.sort()

    def q(p: float) -> float:
        return round(lat[min(len(lat) - 1, int(p * len(lat)))] * 1000, 2)

    return {
        "events_per_s_offered": events_per_s,
        "requests": len(lat),
        "p50_ms": q(0.50),
        "p99_ms": q(0.99),
        "max_ms": round(lat[-1] * 1000, 2),
        "errors": errors,
    }


async def on_topic(s: Settings) -> int:
    consumer = kafka_clients.consumer(s, enable_auto_commit=False, group_id=None)
    await kafka_clients.started(consumer)
    try:
        topic = s.topic("usage")
        tps = [TopicPartition(topic, p) for p in range(s.partitions)]
        ends = await consumer.end_offsets(tps)
        return sum(ends.values())
    finally:
        await consumer.stop()


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--latency-seconds", type=float, default=20)
    ap.add_argument("--connections", type=int, default=8)
    ap.add_argument("--batch", type=int, default=100)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (the test suite runs it)")
    args = ap.parse_args()
    if args.smoke:
        args.seconds, args.latency_seconds, args.connections = 1.0, 1.0, 2
    tag = uuid.uuid4().hex[:8]
    s = Settings(app_id=f"bench-ingest-{tag}", topic_prefix=f"bench-ingest-{tag}.")
    await create_topics(s)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url, log = start_ingest(s, Path(tmp))
        try:
            thr = await throughput(url, args.seconds, args.connections, args.batch, tag)
            lat = await latency(url, thr["events_per_s"] / 2, args.latency_seconds, args.batch, tag)
        finally:
            proc.terminate()
            proc.wait(30)
            ingest_log = log.read_text(errors="replace")
    lat_ok = lat["requests"] - sum(lat["errors"].values())
    expected = thr["accepted_events"] + 4 * args.batch + lat_ok * args.batch  # + the warm-up batches
    stored = await on_topic(s)
    result = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "batch": args.batch,
        "connections": args.connections,
        "throughput": thr,
        "latency_at_half": lat,
        "events_on_topic": stored,
        "events_acknowledged": expected,
    }
    print(json.dumps(result, indent=2))
    if stored < expected:
        raise SystemExit(
            f"only {stored} of {expected} acknowledged events are on the topic\n{ingest_log[-3000:]}"
        )
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
