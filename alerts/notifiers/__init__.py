"""One small interface per delivery channel (like Alertmanager's notify.Notifier)."""

from __future__ import annotations

from typing import Protocol

import aiohttp

from alerts.model import Notification


class DeliveryError(Exception):
    """A notification was not delivered. The message must never contain a secret."""


class RetryableError(DeliveryError):
    """Try again later. ``maybe_delivered``: the receiver may have got it all the same (a timeout or a
    lost connection after the message went out); False only when it certainly did not (no connection,
    or the receiver answered with an error), which lets delivery forget the attempt."""

    def __init__(self, reason: str, retry_after: float | None = None, maybe_delivered: bool = True) -> None:
        super().__init__(reason)
        self.retry_after = retry_after
        self.maybe_delivered = maybe_delivered


class PermanentError(DeliveryError):
    """Retrying cannot help (bad request, gone, forbidden): dead-letter at once."""


class Notifier(Protocol):
    channel: str

    async def notify(self, notification: Notification) -> None:
        """Deliver, or raise RetryableError / PermanentError."""
        ...


def classify_http(status: int, retry_after: str | None, what: str) -> None:
    """Raise the error an HTTP status means for a webhook-style API; return on success."""
    if 200 <= status < 300:
        return
    if status == 429:
        delay = None
        if retry_after:
            try:
                delay = max(0.0, float(retry_after))
            except ValueError:
                delay = None
        raise RetryableError(f"{what}: rate limited (429)", retry_after=delay, maybe_delivered=False)
    if status >= 500 or status in (408, 425):
        raise RetryableError(f"{what}: server error {status}", maybe_delivered=False)
    raise PermanentError(f"{what}: rejected with {status}")


async def post_json(
    session: aiohttp.ClientSession,
    url: str,
    body: bytes,
    headers: dict[str, str],
    timeout_s: float,
    what: str,
) -> None:
    """POST and classify the answer. The URL may be a secret: errors say only what kind of failure."""
    try:
        async with session.post(
            url,
            data=body,
            headers={"Content-Type": "application/json", **headers},
            timeout=aiohttp.ClientTimeout(total=timeout_s),
        ) as resp:
            await resp.read()
            classify_http(resp.status, resp.headers.get("Retry-After"), what)
    except aiohttp.ClientConnectorError as exc:  # no connection: nothing went out
        raise RetryableError(f"{what}: {type(exc).__name__}", maybe_delivered=False) from None
    except (TimeoutError, aiohttp.ClientError) as exc:
        raise RetryableError(f"{what}: {type(exc).__name__}") from None
