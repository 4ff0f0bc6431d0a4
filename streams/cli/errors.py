"""One-line errors with a hint for what an operator can fix: Kafka or Redis unreachable, bad settings,
bad configuration files. Anything else is a bug and keeps its traceback (as does everything with
``HEALTHMON_DEBUG=1``)."""

from __future__ import annotations

import logging
import os
import re
from typing import Any

import click
from pydantic import ValidationError

from streams.config import ConfigError
from streams.settings import ENV_PREFIX


def _redact(url: str) -> str:
    """A URL without its password (``redis://:secret@host`` -> ``redis://:***@host``)."""
    return re.sub(r"(://[^:/@]*:)[^@/]+@", r"\1***@", url)


def _settings_problem(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors(include_url=False):
        field = "__".join(str(p) for p in err["loc"]).upper()
        name = f"{ENV_PREFIX}{field}" if field else "settings"
        lines.append(f"{name}: {err['msg']}")
    return "bad setting: " + "; ".join(lines)


def compact(exc: ValidationError) -> str:
    """A validation error on one line: ``field: problem; ...`` (the first five)."""
    errs = exc.errors(include_url=False)
    parts = [f"{'.'.join(str(p) for p in e['loc']) or '(top level)'}: {e['msg']}" for e in errs[:5]]
    return "; ".join(parts) + (f"; ... and {len(errs) - 5} more" if len(errs) > 5 else "")


def _kafka_where() -> str:
    try:
        from streams.settings import get_settings

        s = get_settings()
        return f"{s.kafka_bootstrap} ({s.kafka_security_protocol})"
    except Exception:
        return "the broker"


def _redis_where() -> str:
    try:
        from streams.settings import get_settings

        return _redact(get_settings().redis_url)
    except Exception:
        return "Redis"


class _LastKafkaError(logging.Handler):
    """Keeps aiokafka's last error line: "Unable to bootstrap" alone does not say that the broker
    answered and refused the credentials."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.message: str | None = None

    def emit(self, record: logging.LogRecord) -> None:
        self.message = record.getMessage()


_last_kafka_error = _LastKafkaError()


def explain(exc: BaseException) -> str | None:
    """The one-line message (with a hint) for an error an operator can fix, else None."""
    from aiokafka import errors as kafka_errors
    from redis import exceptions as redis_errors

    from streams.broker.admin import TopicMismatch, TopicsMissing

    if isinstance(exc, ConfigError):
        return f"invalid configuration:\n{exc}"
    if isinstance(exc, TopicsMissing | TopicMismatch):
        return str(exc)
    if isinstance(exc, ValidationError) and exc.title == "Settings":
        return _settings_problem(exc)
    if isinstance(exc, ValidationError):  # an input file (events, truth) that breaks its contract
        return f"invalid input: {compact(exc)}"
    from streams.broker.producer import ReplayError

    if isinstance(exc, ReplayError):
        return str(exc)
    if isinstance(exc, redis_errors.AuthenticationError | redis_errors.AuthenticationWrongNumberOfArgsError):
        return (
            f"Redis at {_redis_where()} refused the credentials: {exc}\n"
            "hint: put the password in HEALTHMON_REDIS_URL (redis://:PASSWORD@host:6379/0)"
        )
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError):
        return (
            f"cannot reach Redis at {_redis_where()}: {exc}\n"
            "hint: is redis-server running (make stack)? set HEALTHMON_REDIS_URL "
            "(rediss:// for TLS, redis://:PASSWORD@host for a password)"
        )
    if isinstance(exc, redis_errors.ResponseError) and "NOAUTH" in str(exc):
        return f"Redis at {_redis_where()} needs a password: {exc}\nhint: redis://:PASSWORD@host:6379/0"
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        return (
            f"a topic does not exist on {_kafka_where()}: {exc}\n"
            "hint: `healthmon topics create` creates them; `healthmon topics list` shows the configured names"
        )
    if isinstance(exc, kafka_errors.KafkaError | ConnectionError):
        kind = type(exc).__name__
        text = str(exc) or kind
        if _last_kafka_error.message and isinstance(exc, kafka_errors.KafkaConnectionError):
            text += f" (last error: {_last_kafka_error.message})"
        if "auth" in text.lower() or "sasl" in text.lower() or "Authentication" in kind:
            hint = "check HEALTHMON_KAFKA_SASL_USERNAME / _PASSWORD / _MECHANISM"
        elif "SSL" in text or "certificate" in text.lower():
            hint = "check HEALTHMON_KAFKA_SSL_CAFILE (the CA that signed the brokers' certificates)"
        elif _kafka_where().endswith("SSL)"):
            hint = (
                "is the broker up? a broker that requires a client certificate closes the connection "
                "without one: check HEALTHMON_KAFKA_SSL_CERTFILE / _KEYFILE"
            )
        else:
            hint = (
                "is the broker up (make stack)? check HEALTHMON_BROKER and, for a secured cluster, "
                "HEALTHMON_KAFKA_SECURITY_PROTOCOL"
            )
        if not text.startswith(kind):
            text = f"{kind}: {text}"
        return f"cannot use Kafka at {_kafka_where()}: {text}\nhint: {hint}"
    return None


class HealthmonGroup(click.Group):
    """The top-level group: turns operator-fixable errors from any subcommand into one line."""

    def invoke(self, ctx: click.Context) -> Any:
        # aiokafka logs each refused connection at ERROR; with no logging configured (every command
        # but the workers, which configure it) Python would print those lines before ours.
        logging.getLogger("aiokafka").addHandler(_last_kafka_error)
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if os.environ.get("HEALTHMON_DEBUG"):
                raise
            message = explain(exc)
            if message is None:
                raise
            raise click.ClickException(message) from None
