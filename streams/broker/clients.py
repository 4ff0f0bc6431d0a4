"""Every Kafka client healthmon creates, configured from one place (bootstrap servers, SASL, TLS).

A client built without these kwargs silently talks PLAINTEXT to a secured cluster and hangs or is
refused, so no module constructs ``AIOKafka*`` itself: it calls :func:`consumer`, :func:`producer`
or :func:`admin` (or passes :func:`client_kwargs` on), and Faust gets the same through
:func:`faust_credentials`.
"""

from __future__ import annotations

import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.helpers import create_ssl_context

from streams.settings import Settings


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for SSL / SASL_SSL (None for the plaintext protocols)."""
    if not s.kafka_security_protocol.endswith("SSL"):
        return None
    ctx = create_ssl_context(
        cafile=str(s.kafka_ssl_cafile) if s.kafka_ssl_cafile else None,
        certfile=str(s.kafka_ssl_certfile) if s.kafka_ssl_certfile else None,
        keyfile=str(s.kafka_ssl_keyfile) if s.kafka_ssl_keyfile else None,
        password=s.kafka_ssl_key_password.get_secret_value() if s.kafka_ssl_key_password else None,
    )
    ctx.check_hostname = s.kafka_ssl_check_hostname
    return ctx


def security_kwargs(s: Settings) -> dict[str, Any]:
    """aiokafka's security arguments for these settings."""
    kw: dict[str, Any] = {"security_protocol": s.kafka_security_protocol}
    ctx = ssl_context(s)
    if ctx is not None:
        kw["ssl_context"] = ctx
    if s.kafka_security_protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None  # checked by Settings
        kw.update(
            sasl_mechanism=s.kafka_sasl_mechanism,
            sasl_plain_username=s.kafka_sasl_username,
            sasl_plain_password=s.kafka_sasl_password.get_secret_value(),
        )
    return kw


def client_kwargs(s: Settings, **extra: Any) -> dict[str, Any]:
    """Bootstrap servers + security for any aiokafka client; ``extra`` adds or overrides."""
    return {"bootstrap_servers": s.kafka_bootstrap, **security_kwargs(s), **extra}


def consumer(s: Settings, *topics: str, **extra: Any) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(*topics, **client_kwargs(s, **extra))


def producer(s: Settings, **extra: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(**client_kwargs(s, **extra))


def bulk_producer(s: Settings, client_id: str) -> AIOKafkaProducer:
    """A producer for many records in order (replay, shadow): idempotent, acks from all replicas,
    large batches, the project's compression."""
    return producer(
        s,
        client_id=client_id,
        linger_ms=5,
        max_batch_size=256 * 1024,
        acks="all",
        enable_idempotence=True,
        compression_type=s.compression_type,
    )


def admin(s: Settings, **extra: Any) -> AIOKafkaAdminClient:
    return AIOKafkaAdminClient(**client_kwargs(s, **extra))


def faust_credentials(s: Settings) -> Any:
    """Faust's ``broker_credentials`` for these settings (None: plaintext)."""
    from faust.auth import SASLCredentials, SSLCredentials

    ctx = ssl_context(s)
    if s.kafka_security_protocol.startswith("SASL_"):
        assert s.kafka_sasl_password is not None
        return SASLCredentials(
            username=s.kafka_sasl_username,
            password=s.kafka_sasl_password.get_secret_value(),
            mechanism=s.kafka_sasl_mechanism,
            ssl_context=ctx,
        )
    if ctx is not None:
        return SSLCredentials(ctx)
    return None


def faust_app_kwargs(s: Settings) -> dict[str, Any]:
    """Security-related ``faust.App`` arguments: credentials and the web server's bind address."""
    return {"broker_credentials": faust_credentials(s), "web_bind": s.web_bind}


async def started(client: Any) -> Any:
    """``await client.start()``, stopping it again if that fails (else aiokafka warns of an unclosed
    client under the one-line error)."""
    try:
        await client.start()
    except BaseException:
        await (client.close() if isinstance(client, AIOKafkaAdminClient) else client.stop())
        raise
    return client
