"""The worker's Prometheus metrics through a real broker: events by topic and type, dead letters by
reason, accounts per band, worker state."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.request

import pytest

from tests.conftest import WorkerProcess
from tests.helpers import account_event, at, collect, event, produce, produce_events, setup_topics

pytestmark = pytest.mark.kafka


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def scrape(port: int) -> dict[str, float]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    out = {}
    for line in body.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def test_worker_exports_its_metrics(kafka_settings, tmp_path):
    port = free_port()
    s = kafka_settings.model_copy(update={"metrics_port": port})
    await setup_topics(s)
    w = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        await produce_events(
            s, [account_event("m1"), *(event("login", "m1", at(0, h), user_id="u") for h in range(3))]
        )
        await produce(s, [(s.topic("usage"), b"m1", b"{not json")])
        await collect(s, "deadletter", lambda rs: len(rs) == 1)
        await collect(s, "health", lambda rs: any(r.key == b"m1" for r in rs))
        m = scrape(port)
        usage = s.topic("usage")
        assert m['healthmon_events_processed_total{topic="usage",type="login"}'] == 3, usage
        assert m['healthmon_events_processed_total{topic="accounts",type="account"}'] == 1
        assert any(k.startswith("healthmon_dead_letters_total") and v == 1 for k, v in m.items())
        assert m['healthmon_worker_state{healthmon_worker_state="running"}'] == 1
        assert m["healthmon_evaluation_seconds_count"] >= 1
        assert m.get('healthmon_engine_total{what="late"}', 0) == 0
        # Accounts per band (a 10 s gauge, kept from the states written): the one account, once.
        deadline = time.monotonic() + 40
        while sum(v for k, v in scrape(port).items() if k.startswith("healthmon_accounts{")) != 1:
            assert time.monotonic() < deadline, {k: v for k, v in scrape(port).items() if "accounts{" in k}
            await asyncio.sleep(0.5)
    finally:
        w.stop()
