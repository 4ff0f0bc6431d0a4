"""Shared fixtures: a private settings object per test, and workers run as real processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.settings import Settings

ROOT = Path(__file__).resolve().parents[1]


def _require(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.fail(f"{var} is not set: run the suite with `make test`, which starts Kafka and Redis")
    return value


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with a unique app id and topic prefix, so tests never see each other's data."""
    tag = uuid.uuid4().hex[:8]
    return Settings(
        app_id=f"t{tag}",
        topic_prefix=f"t{tag}.",
        broker=os.environ.get("HEALTHMON_TEST_BROKER", "kafka://127.0.0.1:19092"),
        redis_url=os.environ.get("HEALTHMON_TEST_REDIS_URL", "redis://127.0.0.1:16379/0"),
        redis_prefix=f"t{tag}:",
        partitions=4,
        data_dir=str(tmp_path / "faust"),
        batch_wait_s=0.02,
        clock="event",  # test streams are historical: only event time may move the clock
        session_timeout_s=8.0,  # a SIGKILLed worker's partitions move on within seconds
    )


def settings_env(s: Settings) -> dict[str, str]:
    return {**s.process_env(os.environ), "PYTHONUNBUFFERED": "1"}


def run_cli(s: Settings, *args: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    """``healthmon ARGS`` in a subprocess with exactly these settings, without progress bars."""
    return subprocess.run(
        [sys.executable, "-m", "streams", *args],
        cwd=ROOT,
        env={**settings_env(s), "HEALTHMON_PROGRESS": "0", **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class WorkerProcess:
    """``healthmon worker`` in a subprocess, as an operator would run it."""

    def __init__(
        self,
        s: Settings,
        log_path: Path,
        module: str = "streams",
        env: dict[str, str] | None = None,
        command: str = "worker",
    ) -> None:
        self.settings = s
        self.command = command  # tasks-worker: the playbook-task worker
        self.log_path = log_path
        self.module = module  # tests.faults.lossy_worker: the same worker with a client that loses records
        self.env = env or {}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> WorkerProcess:
        self._log = self.log_path.open("ab")
        self._log_start = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            [sys.executable, "-m", self.module, self.command, "-l", "info"],
            cwd=ROOT,
            env={**settings_env(self.settings), **self.env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log_tail()}")
            if b"Worker ready" in self.log()[self._log_start :]:
                return self
            time.sleep(0.2)
        raise RuntimeError(f"worker not ready within {timeout}s:\n{self.log_tail()}")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        rc = self.proc.returncode
        self.proc = None
        return rc

    def log(self) -> bytes:
        return self.log_path.read_bytes()

    def log_tail(self, n: int = 60) -> str:
        return "\n".join(self.log().decode(errors="replace").splitlines()[-n:])


@pytest.fixture
def kafka_settings(settings: Settings) -> Settings:
    _require("HEALTHMON_TEST_BROKER")
    return settings


@pytest.fixture
def worker(kafka_settings: Settings, tmp_path: Path) -> Iterator[WorkerProcess]:
    """A not-yet-started worker for this test's settings; always stopped at the end."""
    w = WorkerProcess(kafka_settings, tmp_path / "worker.log")
    yield w
    w.stop()
