"""`healthmon serve` as a process, over a read model built from real topics: auth, filters, paging,
one account, portfolio, silences, JSON errors, health and OpenAPI."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from streams.settings import Settings
from tests.conftest import ROOT, settings_env
from tests.helpers import produce, setup_topics
from tests.integration.test_portfolio_readmodel_kafka import alert, doc_snapshots, run_until_built

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
TOKEN = "s3cret-token"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Server:
    def __init__(self, s: Settings, log: Path) -> None:
        self.settings = s
        self.base = f"http://127.0.0.1:{s.serve_port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streams", "serve"],
            cwd=ROOT,
            env=settings_env(s),
            stdout=log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        self.log = log
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"serve exited: {log.read_text()}")
            if b"dashboard: http://" in log.read_bytes():
                return
            time.sleep(0.1)
        raise RuntimeError(f"serve not up: {log.read_text()}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def serve_settings(s: Settings, token: str | None = TOKEN) -> Settings:
    return s.model_copy(update={"serve_port": free_port(), "api_token": token, "portfolio_interval_s": 0.05})


@pytest.fixture
def server(kafka_settings, tmp_path) -> Iterator[Server]:
    srv = Server(serve_settings(kafka_settings), tmp_path / "serve.log")
    yield srv
    srv.stop()


async def seed(s: Settings) -> None:
    """The worked example of docs/portfolio.md through the read model, plus one alert on e3."""
    await setup_topics(s)
    snaps = doc_snapshots()
    await produce(s, ((s.topic("health"), x["account_id"].encode(), orjson.dumps(x)) for x in snaps))
    fired = {**alert("e3"), "severity": "high", "summary": "no login in 14 days"}
    await produce(s, [(s.topic("alerts"), b"e3", orjson.dumps(fired))])
    redis = Redis.from_url(s.redis_url)
    try:
        await run_until_built(s, redis)
    finally:
        await redis.aclose()


async def test_api(server: Server) -> None:
    await seed(server.settings)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    jar = aiohttp.CookieJar(unsafe=True)  # the server is an IP address
    async with aiohttp.ClientSession(base_url=server.base, cookie_jar=jar) as http:
        # health needs no token; everything else does, and says so in JSON
        async with http.get("/healthz") as r:
            assert r.status == 200
        async with http.get("/readyz") as r:
            assert r.status == 200 and (await r.json())["status"] == "ready"
        for path in ("/api/accounts", "/api/portfolio", "/", "/api/openapi.json", "/api/silences"):
            async with http.get(path) as r:
                assert r.status == 401, path
                assert (await r.json())["error"]["status"] == 401
        async with http.get("/api/accounts", headers={"Authorization": "Bearer wrong"}) as r:
            assert r.status == 401

        async def get(path: str, status: int = 200) -> dict:
            async with http.get(path, headers=auth) as r:
                assert r.status == status, (path, await r.text())
                assert r.content_type == "application/json"
                return await r.json()

        # canceled accounts are out unless asked for; default sort is by score, worst first
        page = await get("/api/accounts")
        assert page["total"] == 6
        assert [a["account_id"] for a in page["items"]][:2] == ["a3", "e3"]
        assert (await get("/api/accounts?include_canceled=true"))["total"] == 7
        red = await get("/api/accounts?band=red")
        assert sorted(a["account_id"] for a in red["items"]) == ["a3", "e3"]
        bo_ent = await get("/api/accounts?csm=bo@example.com&segment=enterprise&sort=-mrr")
        assert [a["account_id"] for a in bo_ent["items"]] == ["e1", "e2", "e3"]
        renewing = await get("/api/accounts?renewal_within_days=90&sort=renewal")
        assert [a["account_id"] for a in renewing["items"]] == ["e3", "e1"]
        p1 = await get("/api/accounts?sort=name&limit=4")
        p2 = await get("/api/accounts?sort=name&limit=4&offset=4")
        assert [a["account_id"] for a in p1["items"] + p2["items"]] == ["a1", "a3", "e1", "e2", "e3", "n1"]
        assert (p1["total"], len(p2["items"])) == (6, 2)

        # one account: snapshot, history, its alerts and the silences that cover it
        async with http.post(
            "/api/silences", headers=auth, json={"account": "e3", "duration": "2d", "created_by": "t"}
        ) as r:
            assert r.status == 201
            sid = (await r.json())["id"]
        e3 = await get("/api/accounts/e3")
        assert e3["snapshot"]["band"] == "red"
        assert [h["day"] for h in e3["history"]] == ["2026-10-31", "2026-11-30"]
        assert [a["alert_id"] for a in e3["alerts"]] == ["al-e3"] and e3["firing"]
        assert [x["id"] for x in e3["silences"]] == [sid]
        assert (await get("/api/accounts/a1"))["silences"] == []
        assert [x["id"] for x in (await get("/api/silences"))["items"]] == [sid]
        async with http.delete(f"/api/silences/{sid}", headers=auth) as r:
            assert r.status == 204
        assert (await get("/api/silences"))["items"] == []

        # portfolio: the latest month by default, by group and period
        book = await get("/api/portfolio")
        assert (book["period"], book["nrr"], book["grr"]) == ("2026-11", 95.93, 90.24)
        smb = await get("/api/portfolio?period=2026-11&group=segment:smb")
        assert smb["nrr"] == 78.26
        assert (await get("/api/portfolio?group=csm:ana@example.com"))["churned_mrr"] == 500
        periods = await get("/api/portfolio/periods")
        assert periods["latest_month"] == "2026-11" and "segment:smb" in periods["groups"]
        trend = await get("/api/portfolio/trend?group=all")
        assert [t["period"] for t in trend] == ["2026-10", "2026-11"]
        feed = await get("/api/alerts?status=firing")
        assert [a["account_id"] for a in feed["items"]] == ["e3"]

        # errors are JSON with a status and a message
        assert (await get("/api/accounts/nope", 404))["error"]["status"] == 404
        bad = await get("/api/accounts?band=purple&limit=0", 400)
        assert {i["field"] for i in bad["error"]["issues"]} == {"band", "limit"}
        assert "not a period" in (await get("/api/portfolio?period=2026-13", 400))["error"]["message"]
        assert (await get("/api/portfolio?group=segment:nope", 404))["error"]["status"] == 404
        assert (await get("/api/no-such-route", 404))["error"]["status"] == 404
        for body in (b"not json", b'{"duration": "2d"}', b'{"account": "x", "duration": "soon"}'):
            async with http.post("/api/silences", headers=auth, data=body) as r:
                assert r.status == 400, body
                assert (await r.json())["error"]["message"]
        async with http.delete("/api/silences/nope", headers=auth) as r:
            assert r.status == 404

        doc = await get("/api/openapi.json")
        assert doc["openapi"].startswith("3.1") and "/api/accounts" in doc["paths"]
        assert "PortfolioMetrics" in doc["components"]["schemas"]

        # the page: the token once in the URL sets a cookie; the page and its assets load with it
        async with http.get(f"/?token={TOKEN}") as r:
            assert r.status == 200 and "healthmon" in await r.text()
        async with http.get("/static/app.js") as r:
            assert r.status == 200 and r.content_type == "text/javascript"


def test_refuses_a_public_bind_without_a_token(kafka_settings, tmp_path) -> None:
    s = kafka_settings.model_copy(update={"serve_host": "0.0.0.0", "serve_port": free_port()})
    out = subprocess.run(
        [sys.executable, "-m", "streams", "serve"],
        cwd=ROOT,
        env=settings_env(s),
        capture_output=True,
        timeout=30,
    )
    assert out.returncode != 0 and b"HEALTHMON_API_TOKEN" in out.stderr
