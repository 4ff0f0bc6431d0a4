"""The account page's pure parts: one row per alert episode, and which survey events are comments."""

from __future__ import annotations

import orjson

from streams.readmodel.projector import comment_entry
from streams.web.queries import alert_episodes


def ev(alert_id: str, status: str, starts: str, **extra) -> dict:
    return {
        "alert_id": alert_id,
        "rule_id": "r",
        "status": status,
        "starts_at": starts,
        "summary": "s",
        **extra,
    }


def test_one_row_per_episode_with_its_end() -> None:
    newest_first = [
        ev("b", "resolved", "2026-11-05T00:00:00Z", ends_at="2026-11-06T00:00:00Z", ended_by="cancelled"),
        ev("c", "firing", "2026-11-07T00:00:00Z"),
        ev("a", "resolved", "2026-11-01T00:00:00Z", ends_at="2026-11-03T00:00:00Z"),  # old: no ended_by
        ev("b", "firing", "2026-11-05T00:00:00Z"),
        ev("a", "firing", "2026-11-01T00:00:00Z"),
    ]
    rows = alert_episodes(newest_first)
    assert [(r["alert_id"], r["status"], r["ended_by"], r["resolved_at"]) for r in rows] == [
        ("c", "firing", None, None),
        ("b", "resolved", "cancelled", "2026-11-06T00:00:00Z"),
        ("a", "resolved", "recovered", "2026-11-03T00:00:00Z"),
    ]
    assert rows[1]["fired_at"] == "2026-11-05T00:00:00Z"


def test_only_nps_and_csat_answers_with_a_comment_are_kept() -> None:
    base = {"event_id": "e", "account_id": "acc", "occurred_at": "2026-11-28T10:00:00Z", "user_id": "u"}
    found = comment_entry(orjson.dumps({**base, "type": "nps", "score": 3, "comment": "<b>slow</b>"}))
    assert found is not None
    aid, at, entry = found
    assert (aid, entry["comment"], entry["score"], entry["at"]) == (
        "acc",
        "<b>slow</b>",
        3,
        "2026-11-28T10:00:00+00:00",
    )
    assert at == 1795860000.0
    assert comment_entry(orjson.dumps({**base, "type": "nps", "score": 9})) is None
    assert comment_entry(orjson.dumps({**base, "type": "nps", "score": 9, "comment": ""})) is None
    assert (
        comment_entry(orjson.dumps({**base, "type": "nps", "score": 11, "comment": "x"})) is None
    )  # invalid
    assert comment_entry(orjson.dumps({**base, "type": "ces", "score": 2, "comment": "x"})) is None
    csat = comment_entry(
        orjson.dumps({**base, "type": "csat", "ticket_id": "t", "score": 1, "comment": "no"})
    )
    assert csat is not None and (csat[2]["kind"], csat[2]["score"], csat[2]["comment"]) == ("csat", 1, "no")
    assert comment_entry(orjson.dumps({**base, "type": "csat", "score": 1})) is None
    assert comment_entry(b'{"type": "nps", "comment": broken') is None


def test_an_episode_shows_the_task_it_opened_or_updated() -> None:
    events = [ev("b", "firing", "2026-11-05T00:00:00Z"), ev("a", "firing", "2026-11-01T00:00:00Z")]
    task = {
        "task_id": "t1",
        "opened_by_alert": "a",
        "alert_id": "b",
        "alert_ids": ["a", "b"],
        "state": "open",
    }
    rows = alert_episodes(events, [task, {"task_id": "t0", "opened_by_alert": "z", "state": "done"}])
    assert [(r["alert_id"], (r["task"] or {}).get("task_id")) for r in rows] == [("b", "t1"), ("a", "t1")]
    assert alert_episodes(events)[0]["task"] is None
