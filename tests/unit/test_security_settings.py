"""Kafka security settings reach Faust and aiokafka alike; binds are loopback unless told otherwise."""

from __future__ import annotations

import ssl
import subprocess
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from pydantic import SecretStr, ValidationError

from streams.broker import clients as kafka_clients
from streams.cli.errors import _redact
from streams.settings import Settings


def test_defaults_are_plaintext_on_loopback() -> None:
    s = Settings()
    assert s.web_bind == "127.0.0.1" and s.metrics_bind == "127.0.0.1"
    assert kafka_clients.client_kwargs(s) == {
        "bootstrap_servers": "127.0.0.1:9092",
        "security_protocol": "PLAINTEXT",
    }
    assert kafka_clients.faust_credentials(s) is None
    assert kafka_clients.faust_app_kwargs(s)["web_bind"] == "127.0.0.1"


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_settings_give_faust_and_aiokafka_the_same_auth(monkeypatch, mechanism: str) -> None:
    monkeypatch.setenv("HEALTHMON_KAFKA_SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("HEALTHMON_KAFKA_SASL_MECHANISM", mechanism)
    monkeypatch.setenv("HEALTHMON_KAFKA_SASL_USERNAME", "svc")
    monkeypatch.setenv("HEALTHMON_KAFKA_SASL_PASSWORD", "pw")
    s = Settings()
    ours = kafka_clients.security_kwargs(s)
    assert ours == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": "pw",
    }
    faust_side = credentials_to_aiokafka_auth(kafka_clients.faust_credentials(s))
    assert {k: v for k, v in faust_side.items() if v is not None} == ours
    assert "pw" not in repr(s)  # the password is a secret in logs and reprs


def test_sasl_without_credentials_fails_at_start_naming_the_variables() -> None:
    with pytest.raises(ValidationError, match="HEALTHMON_KAFKA_SASL_USERNAME"):
        Settings(kafka_security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="kafka_ssl_keyfile"):
        Settings(kafka_ssl_certfile=Path("client.pem"))


def test_tls_with_a_private_ca_and_client_certificate(tmp_path: Path) -> None:
    """A real CA and client certificate (openssl), loaded the way a SASL_SSL deployment loads them."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "c.key", "c.csr", "c.pem"))

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca),
        "-days", "1", "-subj", "/CN=healthmon-test-ca")  # fmt: skip
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
        "-subj", "/CN=healthmon-client")  # fmt: skip
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial",
        "-out", str(cert), "-days", "1")  # fmt: skip
    s = Settings(
        kafka_security_protocol="SASL_SSL",
        kafka_sasl_username="svc",
        kafka_sasl_password=SecretStr("pw"),
        kafka_ssl_cafile=ca,
        kafka_ssl_certfile=cert,
        kafka_ssl_keyfile=key,
    )
    kw = kafka_clients.client_kwargs(s)
    ctx = kw["ssl_context"]
    assert isinstance(ctx, ssl.SSLContext) and ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "healthmon-test-ca"),),)]
    assert kw["security_protocol"] == "SASL_SSL"
    creds = kafka_clients.faust_credentials(s)
    assert credentials_to_aiokafka_auth(creds)["security_protocol"] == "SASL_SSL"


def test_redis_password_is_redacted_in_messages() -> None:
    assert _redact("redis://:s3cret@redis:6379/0") == "redis://:***@redis:6379/0"
    assert _redact("rediss://user:s3cret@host:6380/0?ssl_ca_certs=/ca.pem").startswith(
        "rediss://user:***@host"
    )
    assert _redact("redis://127.0.0.1:6379/0") == "redis://127.0.0.1:6379/0"
