"""A generic JSON webhook, signed with HMAC-SHA256, with an Idempotency-Key."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from alerts.config import WebhookConfig
from alerts.model import Notification

from . import RetryableError, classify_http

SIGNATURE_HEADER = "X-Healthmon-Signature"


def sign(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookNotifier:
    channel = "webhook"

    def __init__(self, config: WebhookConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session

    async def notify(self, n: Notification) -> None:
        body = n.model_dump_json().encode()
        assert self.config.secret is not None
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self.config.secret.get_secret_value().encode(), body),
            "Idempotency-Key": n.fingerprint,
        }
        try:
            async with self.session.post(
                self.config.url,
                data=body,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s),
            ) as resp:
                await resp.read()
                classify_http(resp.status, resp.headers.get("Retry-After"), "webhook")
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise RetryableError(f"webhook: {type(exc).__name__}") from None
