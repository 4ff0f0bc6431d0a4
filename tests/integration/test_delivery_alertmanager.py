"""Interop: deliver to a real Prometheus Alertmanager (Debian's prometheus-alertmanager, v2 API)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import pytest

from alerts.config import RoutingConfig
from alerts.worker import DeliveryWorker
from tests.alert_fixtures import make_alert
from tests.helpers import setup_topics
from tests.integration.test_delivery_faults import until_caught_up
from tests.integration.test_delivery_kafka import Running, free_port, produce_alerts

pytestmark = [pytest.mark.kafka, pytest.mark.redis]
CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


def alertmanager_binary() -> str:
    """Debian's package, installed if missing (CI machines start clean)."""
    exe = shutil.which("prometheus-alertmanager")
    if exe is None:
        env = {"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
        install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus-alertmanager"]
        if subprocess.run(install, env=env, capture_output=True).returncode != 0:
            subprocess.run(["apt-get", "update", "-qq"], env=env, capture_output=True)
            subprocess.run(install, env=env, capture_output=True, check=True)
        exe = shutil.which("prometheus-alertmanager")
    assert exe, "prometheus-alertmanager could not be installed"
    return exe


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    exe = alertmanager_binary()
    port = free_port()
    cfg = tmp_path / "alertmanager.yml"
    cfg.write_text(CONFIG)
    log = (tmp_path / "alertmanager.log").open("wb")
    proc = subprocess.Popen(
        [
            exe,
            f"--config.file={cfg}",
            f"--storage.path={tmp_path / 'am-data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--cluster.listen-address=",  # a single instance: no gossip port
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as resp:
                if resp.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            log.close()
            raise AssertionError((tmp_path / "alertmanager.log").read_text()[-2000:])
        time.sleep(0.2)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


async def active_alerts(url: str) -> list[dict]:
    async with aiohttp.ClientSession() as http, http.get(f"{url}/api/v2/alerts") as resp:
        assert resp.status == 200
        return await resp.json()


async def test_alerts_reach_a_real_alertmanager_and_resolve_there(kafka_settings, alertmanager: str):
    s = kafka_settings.model_copy(update={"retry_max_delay_s": 2.0})
    await setup_topics(s)
    routing = RoutingConfig.model_validate(
        {
            "receivers": [{"name": "am", "alertmanager": {"url": alertmanager}}],
            "route": {"receiver": "am", "group_by": ["account"], "group_wait": 1, "group_interval": 1},
            "link_base_url": "https://cs.example.com",
        }
    )
    async with Running(DeliveryWorker(s, routing)):
        await produce_alerts(s, [make_alert(account="acme"), make_alert(account="bolt", rule="band_red")])
        await until_caught_up(s)
        got = {a["labels"]["account"]: a for a in await active_alerts(alertmanager)}
        assert set(got) == {"acme", "bolt"}
        acme = got["acme"]
        assert acme["labels"]["alertname"] == "no_login_14d" and acme["labels"]["csm"] == "ana@example.com"
        assert acme["annotations"]["action"].startswith("Send the re-engagement email")
        assert acme["generatorURL"] == "https://cs.example.com/accounts/acme"
        assert acme["status"]["state"] == "active"
        await produce_alerts(s, [make_alert(account="acme", status="resolved")])
        await until_caught_up(s)
        for _ in range(50):  # the API drops resolved alerts from its list
            left = {a["labels"]["account"] for a in await active_alerts(alertmanager)}
            if left == {"bolt"}:
                break
            await asyncio.sleep(0.1)
        assert left == {"bolt"}
