"""A generic JSON webhook, signed with HMAC-SHA256, with an Idempotency-Key."""

from __future__ import annotations

import hashlib
import hmac

import aiohttp

from alerts.config import WebhookConfig
from alerts.model import Notification
from alerts.notifiers import post_json

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
            SIGNATURE_HEADER: sign(self.config.secret.get_secret_value().encode(), body),
            "Idempotency-Key": n.fingerprint,
        }
        await post_json(self.session, self.config.url, body, headers, self.config.timeout_s, "webhook")
