"""One-click task links and Slack task buttons, for the messages delivery sends.

Here rather than in ``streams.web`` because both sides need them: delivery (below the web layer) signs
the links it puts in mail and adds the buttons to Slack messages; ``healthmon serve`` checks the links
and answers the buttons (streams/web/tasks_api.py). A link is an itsdangerous ``URLSafeTimedSerializer``
token (HMAC with ``HEALTHMON_TASK_LINK_SECRET``, expiring after ``HEALTHMON_TASK_LINK_MAX_AGE_S``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from itsdangerous import URLSafeTimedSerializer

from streams.settings import Settings
from streams.tasks.model import Outcome

LINK_SALT = "healthmon.task-link"
LinkVerb = Literal["acknowledge", "complete"]
#: The links each task gets in a digest: (label, verb, outcome).
DIGEST_LINKS: tuple[tuple[str, LinkVerb, Outcome | None], ...] = (
    ("Acknowledge", "acknowledge", None),
    ("Done: reached", "complete", "reached"),
)
#: Slack button action ids and their labels (``streams.web.tasks_api.SLACK_ACTIONS`` says what each does).
SLACK_BUTTONS = {
    "task_acknowledge": "Acknowledge",
    "task_done_reached": "Done: reached",
    "task_done_no_answer": "Done: no answer",
}


def serializer(s: Settings) -> URLSafeTimedSerializer | None:
    if s.task_link_secret is None:
        return None
    return URLSafeTimedSerializer(s.task_link_secret.get_secret_value(), salt=LINK_SALT)


@dataclass(frozen=True)
class TaskLinks:
    """Signs links for one healthmon: where people reach ``serve`` and the secret."""

    public_url: str
    ser: URLSafeTimedSerializer

    @classmethod
    def from_settings(cls, s: Settings) -> TaskLinks | None:
        """None (no links in messages) unless both a public URL and a link secret are configured."""
        ser = serializer(s)
        if ser is None or not s.public_url:
            return None
        return cls(s.public_url.rstrip("/"), ser)

    def sign(
        self, task_id: str, account_id: str, verb: LinkVerb, by: str, outcome: Outcome | None = None
    ) -> str:
        """The URL for ``by`` (the addressee) to acknowledge or complete the task."""
        if verb == "complete" and outcome is None:
            raise ValueError("a completion link needs an outcome")
        payload = {"t": task_id, "a": account_id, "v": verb, "by": by, "o": outcome}
        token = self.ser.dumps(payload)
        assert isinstance(token, str)
        return f"{self.public_url}/t/{token}"

    def digest_links(self, task_id: str, account_id: str, by: str) -> list[tuple[str, str]]:
        return [(label, self.sign(task_id, account_id, v, by, o)) for label, v, o in DIGEST_LINKS]


def slack_buttons(task_id: str) -> dict:
    """The Block Kit ``actions`` block for a task (each button's value is the task id)."""
    return {
        "type": "actions",
        "block_id": f"task:{task_id}",
        "elements": [
            {
                "type": "button",
                "action_id": aid,
                "text": {"type": "plain_text", "text": text},
                "value": task_id,
            }
            for aid, text in SLACK_BUTTONS.items()
        ],
    }
