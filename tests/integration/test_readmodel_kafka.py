"""`healthmon readmodel`: cs.health -> Redis in its own process, resuming from its committed offsets."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from tests.conftest import ROOT, settings_env
from tests.helpers import collect, latest_snapshots, produce_events, setup_topics, snapshot_total
from tests.integration.test_scoring_kafka import decline, healthy_month

pytestmark = [pytest.mark.kafka, pytest.mark.redis]


def start_readmodel(s, log: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "streams", "readmodel"],
        cwd=ROOT,
        env=settings_env(s),
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
    )


async def redis_score_becomes(
    redis: Redis, key: str, account: str, score: float, timeout: float = 30
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await redis.zscore(key, account) == pytest.approx(score):
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{account} never reached {score} in {key}: {await redis.zscore(key, account)}")


async def test_readmodel_process_writes_redis_and_resumes(kafka_settings, worker, tmp_path: Path) -> None:
    s = kafka_settings.model_copy(update={"readmodel_enabled": False})
    worker.settings = s
    await setup_topics(s)
    worker.start()
    month = healthy_month("acc-r")
    await produce_events(s, month)
    records = await collect(s, "health", lambda rs: snapshot_total(rs, "acc-r") == len(month))
    healthy = latest_snapshots(records)["acc-r"]
    redis = Redis.from_url(s.redis_url)
    p = s.redis_prefix
    # with its agent off the worker writes nothing to Redis: all that follows is the process's
    assert not await redis.exists(f"{p}account:acc-r")
    proc = start_readmodel(s, tmp_path / "readmodel.log")
    try:
        await redis_score_becomes(redis, f"{p}scores", "acc-r", healthy["score"])
        assert await redis.sismember(f"{p}csm:lee@example.com", "acc-r")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0, (tmp_path / "readmodel.log").read_text()

        # While it is down the account declines; started again, it catches up from its offsets.
        worse = decline("acc-r")
        await produce_events(s, worse)
        total = len(month) + len(worse)
        records = await collect(s, "health", lambda rs: snapshot_total(rs, "acc-r") == total, timeout=60)
        red = latest_snapshots(records)["acc-r"]
        assert red["band"] == "red"
        assert await redis.zscore(f"{p}scores", "acc-r") == pytest.approx(healthy["score"])
        proc = start_readmodel(s, tmp_path / "readmodel.log")
        await redis_score_becomes(redis, f"{p}scores", "acc-r", red["score"])
        assert await redis.sismember(f"{p}band:red", "acc-r")
        row = await redis.hgetall(f"{p}account:acc-r")
        assert orjson.loads(row[b"snapshot"])["as_of"] == red["as_of"]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
        await redis.aclose()
