"""A secured broker (started by .ci/stack.sh with HEALTHMON_KAFKA_SASL=1: SASL_PLAINTEXT, and SASL_SSL
with a private CA and required client certificates): the project's clients and a Faust worker get
through with the right credentials, and are refused with a wrong password, without the CA or without a
client certificate."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import orjson
import pytest
from aiokafka.errors import KafkaError
from pydantic import SecretStr

from streams.broker import clients as kafka_clients
from streams.broker.admin import create_topics
from streams.broker.producer import produce_events
from streams.broker.tail import read_to_end
from streams.settings import Settings
from tests.conftest import ROOT, WorkerProcess, settings_env
from tests.helpers import account_event, at, event, topic_for

pytestmark = pytest.mark.kafka


@pytest.fixture
def sasl_settings(settings: Settings) -> Settings:
    broker = os.environ.get("HEALTHMON_TEST_SASL_BROKER")
    password = os.environ.get("HEALTHMON_TEST_SASL_PASSWORD")
    if not broker or not password:
        pytest.fail("HEALTHMON_TEST_SASL_BROKER is not set: run the suite with .ci/test.sh (SASL broker)")
    return settings.model_copy(
        update={
            "broker": broker,
            "kafka_security_protocol": "SASL_PLAINTEXT",
            "kafka_sasl_username": "healthmon",
            "kafka_sasl_password": SecretStr(password),
        }
    )


def _records(s: Settings, events: list[dict]) -> list[tuple[str, bytes, bytes]]:
    return [(topic_for(s, e), e["account_id"].encode(), orjson.dumps(e)) for e in events]


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
async def test_clients_produce_and_consume_over_sasl(sasl_settings: Settings, mechanism: str) -> None:
    s = sasl_settings.model_copy(update={"kafka_sasl_mechanism": mechanism})
    created = await create_topics(s)  # the admin client
    assert {name for name, _ in created} >= set(s.input_topics)
    sent = [event("login", f"acc-{i}", user_id="u1") for i in range(20)]
    assert await produce_events(s, _records(s, sent)) == 20  # the producer of `healthmon replay`
    got = [orjson.loads(m.value) async for m in read_to_end(s, s.topic("usage"))]  # tail / evaluate
    assert sorted(e["event_id"] for e in got) == sorted(e["event_id"] for e in sent)


async def test_wrong_password_is_refused(sasl_settings: Settings) -> None:
    wrong = sasl_settings.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    producer = kafka_clients.producer(wrong)
    with pytest.raises(KafkaError):
        await producer.start()
    await producer.stop()
    # a plaintext client is not let in either
    plain = sasl_settings.model_copy(update={"kafka_security_protocol": "PLAINTEXT"})
    admin = kafka_clients.admin(plain, request_timeout_ms=3000)
    with pytest.raises(KafkaError):
        await admin.start()
    await admin.close()


def test_cli_says_the_credentials_are_wrong_in_one_line(sasl_settings: Settings) -> None:
    wrong = sasl_settings.model_copy(update={"kafka_sasl_password": SecretStr("not-the-password")})
    done = subprocess.run(
        [sys.executable, "-m", "streams", "topics", "create"],
        cwd=ROOT,
        env=settings_env(wrong),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "cannot use Kafka" in done.stderr and "HEALTHMON_KAFKA_SASL_USERNAME" in done.stderr
    assert "not-the-password" not in done.stderr + done.stdout


async def test_worker_scores_over_scram(sasl_settings: Settings, tmp_path: Path) -> None:
    s = sasl_settings.model_copy(update={"kafka_sasl_mechanism": "SCRAM-SHA-512"})
    await create_topics(s)
    worker = WorkerProcess(s, tmp_path / "worker.log").start()
    try:
        sent = [account_event("acc-1"), event("login", "acc-1", at(0, 1), user_id="u1")]
        await produce_events(s, _records(s, sent))
        for _ in range(100):
            snaps = [orjson.loads(m.value) async for m in read_to_end(s, s.topic("health"))]
            if any(sum(x["event_counts"].values()) >= 2 for x in snaps):
                break
            await asyncio.sleep(0.2)
        else:
            raise AssertionError(f"no snapshot over SASL; worker log:\n{worker.log_tail()}")
        assert snaps[-1]["account_id"] == "acc-1"
    finally:
        worker.stop()


@pytest.fixture
def tls_settings(sasl_settings: Settings) -> Settings:
    broker = os.environ.get("HEALTHMON_TEST_SASL_SSL_BROKER")
    tls = os.environ.get("HEALTHMON_TEST_TLS_DIR")
    if not broker or not tls:
        pytest.fail("HEALTHMON_TEST_SASL_SSL_BROKER is not set: run the suite with .ci/test.sh")
    return sasl_settings.model_copy(
        update={
            "broker": broker,
            "kafka_security_protocol": "SASL_SSL",
            "kafka_sasl_mechanism": "SCRAM-SHA-256",
            "kafka_ssl_cafile": Path(tls) / "ca.pem",
            "kafka_ssl_certfile": Path(tls) / "client.pem",
            "kafka_ssl_keyfile": Path(tls) / "client.key",
        }
    )


async def test_clients_over_sasl_ssl_with_a_private_ca_and_client_certificate(tls_settings: Settings) -> None:
    s = tls_settings
    await create_topics(s)
    sent = [event("login", f"acc-{i}", user_id="u1") for i in range(5)]
    assert await produce_events(s, _records(s, sent)) == 5
    got = [orjson.loads(m.value) async for m in read_to_end(s, s.topic("usage"))]
    assert sorted(e["event_id"] for e in got) == sorted(e["event_id"] for e in sent)


@pytest.mark.parametrize("without", ["ca", "client certificate"])
async def test_tls_is_refused_without_the_ca_or_the_client_certificate(
    tls_settings: Settings, without: str
) -> None:
    if without == "ca":  # the system's CAs do not know the broker's
        s = tls_settings.model_copy(update={"kafka_ssl_cafile": None})
    else:
        s = tls_settings.model_copy(update={"kafka_ssl_certfile": None, "kafka_ssl_keyfile": None})
    admin = kafka_clients.admin(s, request_timeout_ms=5000)
    with pytest.raises(KafkaError):
        await admin.start()
    await admin.close()
