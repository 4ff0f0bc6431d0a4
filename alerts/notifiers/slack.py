"""Slack incoming webhooks with Block Kit."""

from __future__ import annotations

import aiohttp
import orjson

from alerts.config import SlackConfig
from alerts.digest import ENDED_HEADINGS, Row, ended_sections, rows
from alerts.links import slack_buttons
from alerts.model import Notification
from alerts.notifiers import PermanentError, post_json
from alerts.text import one_line, slack_escape
from rules.model import AlertEvent

MAX_ACCOUNTS = 15  # Slack allows 50 blocks a message: one per account, plus header and footers
MAX_BLOCKS = 50


def _account_block(r: Row, alerts: list[AlertEvent]) -> dict:
    """One block per account: its latest figures once, then each alert with its next step."""
    latest = max(alerts, key=lambda a: a.starts_at)
    icon = ":red_circle:" if any(a.severity == "critical" for a in alerts) else ":large_orange_circle:"
    new = "*NEW* " if r.new else ""
    name = slack_escape(r.name)
    head = f"{icon} {new}*{name}* · Health *{r.score}* ({r.band}) · MRR {r.mrr}"
    if r.renewal:
        head += f" · {r.renewal}"
    if r.canceled:
        head += " · cancelled"
    lines = [head]
    if r.why:
        lines.append(f"why: {slack_escape(r.why)}")
    for item in r.items:
        mark = "*NEW* " if item.new and not r.new else ""
        then = f"; {item.at_firing}" if item.at_firing else ""
        lines.append(f"• {mark}{slack_escape(item.description)} (since {item.since}{then})")
        lines.append(f"   *Next step:* {slack_escape(item.action)}")
    csm = slack_escape(one_line(latest.account.csm_name or latest.account.csm_email, 120))
    if csm:
        lines.append(f"CSM: {csm}")
    if r.link:
        lines.append(r.link)
    return {"type": "section", "text": {"type": "mrkdwn", "text": "\n".join(lines)[:2900]}}


def render(n: Notification, link_base_url: str = "", buttons: bool = False) -> dict:
    """The Block Kit message; ``buttons``: each open task's buttons under its account (only when
    ``serve`` answers Slack's interactions, i.e. a signing secret is configured)."""
    title = f"healthmon: {len(n.firing)} firing" + (f", {len(n.resolved)} resolved" if n.resolved else "")
    blocks: list[dict] = [{"type": "header", "text": {"type": "plain_text", "text": title[:150]}}]
    by_account: dict[str, list[AlertEvent]] = {}
    for a in n.firing:
        by_account.setdefault(a.account_id, []).append(a)
    accounts = rows(n, n.firing, link_base_url)
    for r in accounts[:MAX_ACCOUNTS]:
        blocks.append(_account_block(r, by_account[r.account_id]))
        # the buttons of the account's open tasks (Slack: at most 50 blocks, room kept for the footers)
        tasks = dict.fromkeys(t for a in by_account[r.account_id] if (t := n.tasks.get(a.alert_id)))
        for task_id in tasks if buttons else ():
            if len(blocks) < MAX_BLOCKS - 1 - len(ENDED_HEADINGS):
                blocks.append(slack_buttons(task_id))
    rest = len(accounts) - MAX_ACCOUNTS
    if rest > 0:
        blocks.append(
            {"type": "context", "elements": [{"type": "mrkdwn", "text": f"…and {rest} more accounts"}]}
        )
    for heading, ended in ended_sections(n):
        icon = ":white_check_mark:" if heading == "Recovered" else ":heavy_multiplication_x:"
        done = "; ".join(
            f"{slack_escape(r.name)}: " + ", ".join(slack_escape(i.description) for i in r.items)
            for r in ended[:MAX_ACCOUNTS]
        )
        text = f"{icon} *{heading}:* {done}"
        blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": text[:2900]}]})
    fallback = "; ".join(slack_escape(one_line(a.summary, 120)) for a in n.alerts[:5])
    return {"text": f"{title}: {fallback}"[:3000], "blocks": blocks}


class SlackNotifier:
    channel = "slack"

    def __init__(
        self,
        config: SlackConfig,
        session: aiohttp.ClientSession,
        link_base_url: str = "",
        buttons: bool = False,
    ) -> None:
        self.config = config
        self.session = session
        self.link_base_url = link_base_url
        self.buttons = buttons

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
            self.session,
            self._url(n),
            orjson.dumps(render(n, self.link_base_url, self.buttons)),
            {},
            self.config.timeout_s,
            "slack",
        )
