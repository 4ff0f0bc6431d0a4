"""Signed one-click task links (itsdangerous) and the Slack buttons' block: pure parts of streams/web/tasks_api."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import urlsplit

import pytest
from itsdangerous import BadSignature, URLSafeTimedSerializer
from pydantic import SecretStr

from alerts.links import LINK_SALT
from rules.model import Action
from streams.settings import Settings
from streams.tasks.machine import AlertSeen, apply
from streams.web.tasks_api import SLACK_ACTIONS, sign_link, slack_buttons
from tests.alert_fixtures import make_alert

T0 = datetime(2026, 12, 7, 10, tzinfo=UTC)


def a_task():
    alert = make_alert(episode=int(T0.timestamp())).model_copy(
        update={"playbook": Action.model_validate({"step": "Call", "respond_within": "48h"})}
    )
    task, _ = apply(None, AlertSeen(alert), T0)
    assert task is not None
    return task


def test_a_link_carries_task_verb_and_addressee_and_only_its_secret_reads_it():
    s = Settings(task_link_secret=SecretStr("k"), public_url="https://hm.example.com/")
    task = a_task()
    url = sign_link(s, task, "complete", by="ana@example.com", outcome="reached")
    assert url.startswith("https://hm.example.com/t/")
    token = urlsplit(url).path.removeprefix("/t/")
    payload = URLSafeTimedSerializer("k", salt=LINK_SALT).loads(token, max_age=60)
    assert payload == {
        "t": task.task_id,
        "a": "acme",
        "v": "complete",
        "by": "ana@example.com",
        "o": "reached",
    }
    with pytest.raises(BadSignature):
        URLSafeTimedSerializer("other", salt=LINK_SALT).loads(token)
    with pytest.raises(BadSignature):
        URLSafeTimedSerializer("k", salt=LINK_SALT).loads(
            token[:-2] + ("xy" if not token.endswith("xy") else "zz")
        )


def test_links_need_a_secret_and_a_completion_an_outcome():
    task = a_task()
    with pytest.raises(ValueError, match="HEALTHMON_TASK_LINK_SECRET"):
        sign_link(Settings(), task, "acknowledge", by="ana")
    with pytest.raises(ValueError, match="needs an outcome"):
        sign_link(Settings(task_link_secret=SecretStr("k")), task, "complete", by="ana")


def test_slack_buttons_name_the_task_and_known_actions():
    task = a_task()
    block = slack_buttons(task)
    assert block["type"] == "actions" and block["block_id"] == f"task:{task.task_id}"
    assert [e["action_id"] for e in block["elements"]] == list(SLACK_ACTIONS)
    assert {e["value"] for e in block["elements"]} == {task.task_id}
