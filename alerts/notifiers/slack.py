"""Slack incoming webhooks with Block Kit."""

from __future__ import annotations

import aiohttp
import orjson

from alerts.config import SlackConfig
from alerts.model import Notification
from alerts.text import one_line, slack_escape
from rules.model import AlertEvent

from . import PermanentError, post_json

MAX_ALERTS = 15  # Slack allows 50 blocks a message; each alert is one or two


def _alert_block(a: AlertEvent) -> dict:
    name = slack_escape(one_line(a.account.name or a.account_id, 120))
    score = "n/a" if a.score is None else f"{a.score:.0f}"
    band = a.band or "unknown"
    icon = {"critical": ":red_circle:", "warning": ":large_orange_circle:"}.get(
        a.severity, ":information_source:"
    )
    if a.status == "resolved":
        icon = ":white_check_mark:"
    drivers = "; ".join(slack_escape(one_line(d.text, 160)) for d in a.drivers[:3])
    lines = [
        f"{icon} *{name}* · {slack_escape(one_line(a.description, 200))}",
        f"Health *{score}* ({band})" + (f" · why: {drivers}" if drivers else ""),
    ]
    if a.status == "firing":
        lines.append(f"*Next step:* {slack_escape(one_line(a.action, 300))}")
    csm = slack_escape(one_line(a.account.csm_name or a.account.csm_email, 120))
    if csm:
        lines.append(f"CSM: {csm}")
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)}}


def render(n: Notification) -> dict:
    title = f"healthmon: {len(n.firing)} firing" + (f", {len(n.resolved)} resolved" if n.resolved else "")
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    shown = n.alerts[:MAX_ALERTS]
    for a in shown:
        blocks.append(_alert_block(a))
    if len(n.alerts) > len(shown):
        rest = len(n.alerts) - len(shown)
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {rest} more alerts"}]}
        )
    fallback = "; ".join(slack_escape(one_line(a.summary, 120)) for a in shown[:5])
    return {"text": f"{title}: {fallback}"[:3000], "blocks": blocks}


class SlackNotifier:
    channel = "slack"

    def __init__(self, config: SlackConfig, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.session = session

    def _url(self, n: Notification) -> str:
        channels = {a.account.slack_channel for a in n.alerts if a.account.slack_channel}
        if len(channels) == 1:
            hook = self.config.channel_webhooks.get(channels.pop())
            if hook is not None:
                return hook.get_secret_value()
        if self.config.webhook_url is None:
            raise PermanentError("slack: no webhook for this account's channel and no default webhook")
        return self.config.webhook_url.get_secret_value()

    async def notify(self, n: Notification) -> None:
        await post_json(
            self.session, self._url(n), orjson.dumps(render(n)), {}, self.config.timeout_s, "slack"
        )
