"""Making untrusted text (account names, NPS comments) safe for Slack and email."""

from __future__ import annotations

import re

_MENTION_WORDS = re.compile(r"@(here|channel|everyone)\b", re.IGNORECASE)


def slack_escape(text: str | None) -> str:
    """Slack's three control characters are escaped, so no text can form <!channel>, <@U123> or a
    link; and @here-style words get a zero-width space so they cannot read as a mention either."""
    if not text:
        return ""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MENTION_WORDS.sub(lambda m: "@\u200b" + m.group(1), text)


def one_line(text: str | None, limit: int = 300) -> str:
    """No control characters (CR/LF could break headers or layout) and a bounded length."""
    if not text:
        return ""
    clean = "".join(ch if ch.isprintable() else " " for ch in text)
    return clean if len(clean) <= limit else clean[: limit - 1] + "…"
