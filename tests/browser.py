"""Headless Debian ``chromium`` driven over the Chrome DevTools protocol (aiohttp's websocket client).

The binary is installed with apt-get when missing (CI machines are clean); nothing is downloaded
from anywhere else.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import os
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest


def chromium_binary() -> str:
    """The Debian chromium, installed if missing (as root, or fail with the command to run)."""
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    if os.geteuid() != 0:
        pytest.fail("Debian `chromium` is missing: run `apt-get install -y chromium` (as root)")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env, timeout=600)
    subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=True, env=env, timeout=1200)
    found = shutil.which("chromium")
    if not found:
        pytest.fail("apt-get install chromium did not provide a `chromium` binary")
    return found


def launch(profile: Path, url: str, width: int, height: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            chromium_binary(),
            "--headless=new",
            "--no-sandbox",  # tests run as root in containers
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--metrics-recording-only",
            "--remote-debugging-port=0",
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            url,
        ],
        stdout=(profile.parent / "chromium.log").open("wb"),
        stderr=subprocess.STDOUT,
    )


def save(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


class Browser:
    """One headless chromium with one page; ``evaluate`` JS in it, ``wait_for`` a JS condition."""

    def __init__(self, profile: Path) -> None:
        self.profile = profile
        self.proc: subprocess.Popen[bytes] | None = None
        self.http: aiohttp.ClientSession | None = None
        self.ws: aiohttp.ClientWebSocketResponse | None = None
        self.ids = itertools.count(1)

    async def start(self, url: str, width: int = 1280, height: int = 1400) -> Browser:
        self.proc = launch(self.profile, url, width, height)
        port_file = self.profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().strip()):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"chromium did not start: {(self.profile.parent / 'chromium.log').read_text()}"
                )
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        self.http = aiohttp.ClientSession()
        page = None
        while page is None:
            async with self.http.get(f"http://127.0.0.1:{port}/json/list") as r:
                page = next((t for t in await r.json() if t["type"] == "page"), None)
            if page is None:
                await asyncio.sleep(0.1)
        self.ws = await self.http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0)
        return self

    async def send(self, method: str, **params: Any) -> dict:
        assert self.ws is not None
        msg_id = next(self.ids)
        await self.ws.send_str(orjson.dumps({"id": msg_id, "method": method, "params": params}).decode())
        while True:
            msg = orjson.loads((await self.ws.receive()).data)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    async def evaluate(self, expression: str) -> Any:
        result = await self.send(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                body = await self.evaluate("document.body ? document.body.innerText.slice(0, 3000) : ''")
                raise AssertionError(f"not true within {timeout}s: {expression}\npage text:\n{body}")
            await asyncio.sleep(0.2)

    async def text(self, selector: str) -> str:
        return await self.evaluate(
            f"document.querySelector({orjson.dumps(selector).decode()})?.innerText ?? ''"
        )

    async def click(self, selector: str) -> None:
        """A real left click (mouse pressed and released over the element's centre), so the page gets
        the trusted events a person's click gives, not a synthetic ``element.click()``."""
        sel = orjson.dumps(selector).decode()
        box = await self.evaluate(
            f"(() => {{ const el = document.querySelector({sel}); if (!el) return null;"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return {x: r.left + r.width / 2, y: r.top + r.height / 2}; })()"
        )
        if box is None:
            raise AssertionError(f"nothing to click: {selector}")
        for kind in ("mousePressed", "mouseReleased"):
            await self.send(
                "Input.dispatchMouseEvent", type=kind, x=box["x"], y=box["y"], button="left", clickCount=1
            )

    async def goto(self, url: str) -> None:
        await self.send("Page.navigate", url=url)

    async def screenshot(self, path: Path) -> Path:
        shot = await self.send("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        return save(path, base64.b64decode(shot["data"]))

    async def stop(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.http is not None:
            await self.http.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()
