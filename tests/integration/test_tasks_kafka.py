"""`healthmon tasks-worker` through the real broker and Redis: an alert opens a task with the right due
time, no action -> one reminder and exactly one escalation at the deadline (wall clock live, event time
in a replay), a cancellation closes the tasks, and an action survives a SIGKILL applied exactly once."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from redis.asyncio import Redis

from rules.model import Action, AlertEvent
from streams.broker.admin import ensure_topic, poll_committed, topic_specs
from streams.readmodel.tasks import get_task, list_tasks
from streams.settings import Settings
from streams.tasks.model import TaskAction, TaskBook
from tests.alert_fixtures import make_alert
from tests.conftest import WorkerProcess, run_cli
from tests.helpers import collect, produce, setup_topics

pytestmark = [pytest.mark.kafka, pytest.mark.redis]

NPS = Action.model_validate({"step": "Manager call", "respond_within": "24h", "owner": "manager"})
CHECK_IN = Action.model_validate({"step": "Check-in call", "respond_within": "48h"})


def alert(
    account: str, rule: str, starts_at: datetime, playbook: Action | None, status: str = "firing"
) -> AlertEvent:
    a = make_alert(account=account, rule=rule, episode=int(starts_at.timestamp()))
    update: dict = {"playbook": playbook, "starts_at": starts_at, "active_since": starts_at, "status": status}
    return a.model_copy(update=update)


async def send(s: Settings, topic: str, key: str, value: bytes) -> None:
    await produce(s, [(s.topic(topic), key.encode(), value)])


def notices(records, account: str | None = None) -> list[dict]:
    out = [orjson.loads(r.value) for r in records]
    return [n for n in out if account is None or n["account_id"] == account]


def kinds(records, account: str) -> list[str]:
    return [n["kind"] for n in notices(records, account)]


def books(records) -> dict[str, TaskBook]:
    return {r.key.decode(): TaskBook.model_validate_json(r.value) for r in records if r.value is not None}


async def open_tasks(
    s: Settings, accounts: list[str], rule: str, now: datetime
) -> tuple[dict[str, str], list]:
    """An alert with the check-in playbook per account; once every task is opened, their ids and the
    notices read."""
    await produce(
        s,
        [
            (s.topic("alerts"), a.encode(), alert(a, rule, now, CHECK_IN).model_dump_json().encode())
            for a in accounts
        ],
    )
    recs = await collect(
        s, "task_notices", lambda rs: all("opened" in kinds(rs, a) for a in accounts), timeout=60
    )
    return {n["account_id"]: n["task_id"] for n in notices(recs) if n["kind"] == "opened"}, recs


def acknowledgements(s: Settings, task_ids: dict[str, str], now: datetime) -> list[tuple[str, bytes, bytes]]:
    """One acknowledgement by ana of each account's task, as records for cs.task-actions."""
    actions = [
        TaskAction(action_id=f"ack-{a}", account_id=a, task_id=tid, action="acknowledge", by="ana", at=now)
        for a, tid in task_ids.items()
    ]
    return [(s.topic("task_actions"), x.account_id.encode(), x.model_dump_json().encode()) for x in actions]


def all_acknowledged(task_ids: dict[str, str]) -> Callable[[list], bool]:
    def done(rs) -> bool:
        b = books(rs)
        return all(a in b and b[a].tasks[tid].state == "acknowledged" for a, tid in task_ids.items())

    return done


def tasks_worker(s: Settings, tmp_path: Path) -> WorkerProcess:
    return WorkerProcess(s, tmp_path / "tasks-worker.log", command="tasks-worker")


@pytest.fixture
def live(kafka_settings: Settings) -> Settings:
    return kafka_settings.model_copy(update={"clock": "live", "partitions": 1, "tasks_tick_s": 0.2})


async def test_live_an_alert_opens_a_task_and_no_action_escalates_once_at_the_deadline(live, tmp_path):
    s = live
    await setup_topics(s)
    w = tasks_worker(s, tmp_path).start()
    redis = Redis.from_url(s.redis_url)
    try:
        # fired (almost) 24 hours ago: the reminder is already late, the deadline a few seconds away
        started = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=24) + timedelta(seconds=6)
        a = alert("acme", "nps_detractor", started, NPS)
        await send(s, "alerts", "acme", a.model_dump_json().encode())
        recs = await collect(s, "task_notices", lambda rs: "escalation" in kinds(rs, "acme"), timeout=60)
        seen = time.time()
        esc = next(n for n in notices(recs, "acme") if n["kind"] == "escalation")
        due = started + timedelta(hours=24)
        assert datetime.fromisoformat(esc["at"]) == due and esc["to_role"] == "manager"
        assert seen >= due.timestamp()  # not before the deadline (wall clock)
        assert kinds(recs, "acme") == ["opened", "reminder", "escalation"]
        opened = notices(recs, "acme")[0]["task"]
        assert datetime.fromisoformat(opened["due_at"]) == due and opened["owner_role"] == "manager"

        # a positive signal that the worker went on: another account's task opens after it
        later = alert("beta", "health_below_60", datetime.now(UTC).replace(microsecond=0), CHECK_IN)
        await send(s, "alerts", "beta", later.model_dump_json().encode())
        recs = await collect(s, "task_notices", lambda rs: "opened" in kinds(rs, "beta"), timeout=30)
        assert kinds(recs, "acme") == ["opened", "reminder", "escalation"]  # exactly one escalation

        state = books(await collect(s, "tasks", lambda rs: {"acme", "beta"} <= books(rs).keys(), timeout=30))
        (task,) = state["acme"].tasks.values()
        assert task.escalated_at == due and task.state == "open" and task.due_at == due
        # the read model serves the lists
        mine = await list_tasks(redis, s.redis_prefix, owner="role:manager")
        assert [t.task_id for t in mine] == [task.task_id]
        ana = await list_tasks(redis, s.redis_prefix, owner="ana@example.com")
        assert [t.account_id for t in ana] == ["beta"]
        stored = await get_task(redis, s.redis_prefix, task.task_id)
        assert stored is not None and stored.escalated_at == due
    finally:
        await redis.aclose()
        w.stop()


async def test_an_action_survives_a_sigkill_and_is_applied_once(live, tmp_path):
    s = live.model_copy(update={"tasks_commit_interval_s": 60.0})
    await setup_topics(s)
    w = tasks_worker(s, tmp_path).start()
    redis = Redis.from_url(s.redis_url)
    try:
        a = alert("acme", "health_below_60", datetime.now(UTC).replace(microsecond=0), CHECK_IN)
        await send(s, "alerts", "acme", a.model_dump_json().encode())
        recs = await collect(s, "task_notices", lambda rs: "opened" in kinds(rs, "acme"), timeout=60)
        task_id = notices(recs, "acme")[0]["task_id"]

        def action(action_id: str, verb: str, **kw) -> bytes:
            at = datetime.now(UTC)
            act = TaskAction(
                action_id=action_id, account_id="acme", task_id=task_id, action=verb, by="ana", at=at, **kw
            )
            return act.model_dump_json().encode()

        # a snooze: applied twice, it would be in the history twice (unlike acknowledging again)
        until = datetime.now(UTC) + timedelta(hours=30)
        await send(s, "task_actions", "acme", action("snooze-1", "snooze", until=until))

        def snoozed(rs) -> bool:
            b = books(rs).get("acme")
            return b is not None and b.tasks[task_id].snoozed_until is not None

        await collect(s, "tasks", snoozed, timeout=30)
        # the effect is in cs.tasks, the action's offset not committed (commits every 60 s here): SIGKILL
        assert w.proc is not None
        w.proc.kill()
        w.proc.wait()
        w.stop()
        committed = await poll_committed(
            s.model_copy(update={"app_id": f"{s.app_id}-tasks"}), lambda _: True, 10
        )
        assert committed.get((s.topic("task_actions"), 0), 0) == 0, committed  # so it comes again
        w = tasks_worker(s, tmp_path).start()
        # the same action again (a link clicked twice), then the completion
        await send(s, "task_actions", "acme", action("snooze-1", "snooze", until=until))
        await send(s, "task_actions", "acme", action("done-1", "complete", outcome="reached"))

        def done(rs) -> bool:
            b = books(rs).get("acme")
            return b is not None and b.tasks[task_id].state == "done"

        book = books(await collect(s, "tasks", done, timeout=60))["acme"]
        task = book.tasks[task_id]
        assert [h.action for h in task.history] == ["opened", "snooze", "complete"], (
            committed,
            task.history,
        )
        assert book.applied == ["snooze-1", "done-1"] and task.outcome == "reached"
        recs = await collect(s, "task_notices", lambda rs: "closed" in kinds(rs, "acme"), timeout=30)
        assert kinds(recs, "acme") == ["opened", "closed"]
        stored = await get_task(redis, s.redis_prefix, task_id)
        assert stored is not None and stored.state == "done"
        assert await list_tasks(redis, s.redis_prefix, owner="ana@example.com") == []
        assert [t.task_id for t in await list_tasks(redis, s.redis_prefix, state="done")] == [task_id]
    finally:
        await redis.aclose()
        w.stop()


async def test_replay_deadlines_are_event_time_exact_and_a_cancellation_closes_tasks(
    kafka_settings, tmp_path
):
    s = kafka_settings.model_copy(update={"partitions": 1})  # clock: event
    assert s.clock == "event"
    await setup_topics(s)
    w = tasks_worker(s, tmp_path).start()
    try:
        t0 = datetime(2026, 10, 1, 9, tzinfo=UTC)
        records = [
            ("acme", alert("acme", "health_below_60", t0, CHECK_IN)),
            ("beta", alert("beta", "health_below_60", t0 + timedelta(hours=50), CHECK_IN)),
            ("beta", alert("beta", "account_canceled", t0 + timedelta(hours=51), None)),
        ]
        await produce(s, [(s.topic("alerts"), k.encode(), a.model_dump_json().encode()) for k, a in records])
        recs = await collect(s, "task_notices", lambda rs: "closed" in kinds(rs, "beta"), timeout=60)
        got = [(n["kind"], datetime.fromisoformat(n["at"])) for n in notices(recs, "acme")]
        assert got == [
            ("opened", t0),
            ("reminder", t0 + timedelta(hours=36)),
            ("escalation", t0 + timedelta(hours=48)),
        ]
        assert kinds(recs, "beta") == ["opened", "closed"]
        state = books(await collect(s, "tasks", lambda rs: "beta" in books(rs), timeout=30))
        (beta,) = state["beta"].tasks.values()
        assert (beta.state, beta.reason) == ("cancelled", "account cancelled")
        # a record that is no task action goes to the dead-letter topic with the reason, and nothing stops
        await send(s, "task_actions", "acme", b'{"kind": "human", "action": "explode"}')
        dead = await collect(s, "deadletter", lambda rs: len(rs) >= 1, timeout=30)
        reason = dict(dead[0].headers)["healthmon.reason"].decode()
        assert dead[0].value == b'{"kind": "human", "action": "explode"}' and "invalid task record" in reason
        later = alert("acme", "nps_detractor", t0 + timedelta(hours=52), NPS)
        await send(s, "alerts", "acme", later.model_dump_json().encode())
        await collect(s, "task_notices", lambda rs: kinds(rs, "acme").count("opened") == 2, timeout=30)
    finally:
        w.stop()


async def test_a_rebalance_moves_the_books_with_their_partitions(kafka_settings, tmp_path):
    """A second worker joins: the partitions it takes over come with their books (recovered from
    cs.tasks), so actions on tasks the first worker opened are applied, each once."""
    s = kafka_settings.model_copy(update={"clock": "live", "partitions": 4})
    await setup_topics(s)
    first = WorkerProcess(s, tmp_path / "tasks-a.log", command="tasks-worker").start()
    second = WorkerProcess(
        s.model_copy(update={"data_dir": str(tmp_path / "b")}),
        tmp_path / "tasks-b.log",
        command="tasks-worker",
    )
    try:
        accounts = [f"acc-{i}" for i in range(12)]
        now = datetime.now(UTC).replace(microsecond=0)
        task_ids, recs = await open_tasks(s, accounts, "health_below_60", now)
        assert len({r.partition for r in recs}) == 4  # the accounts are on every partition
        second.start()
        # each action twice (a retry): applied once
        batch = acknowledgements(s, task_ids, now)
        await produce(s, batch + batch)
        try:
            final = books(await collect(s, "tasks", all_acknowledged(task_ids), timeout=90))
        except AssertionError as exc:  # say which books lag, and what each worker was doing
            raise AssertionError(
                f"{exc}\n--- first worker:\n{first.log_tail(80)}\n--- second worker:\n{second.log_tail(80)}"
            ) from None
        for a in accounts:
            assert [h.action for h in final[a].tasks[task_ids[a]].history] == ["opened", "acknowledge"]
        # the second worker owned some partitions (their books came from cs.tasks)
        owned = re.findall(
            r"(\d+) account books on partitions \[([\d, ]*)\]", second.log().decode(errors="replace")
        )
        assert any(parts and int(n) > 0 for n, parts in owned), owned
    finally:
        second.stop()
        first.stop()


async def test_the_tasks_worker_refuses_to_start_without_its_topics(kafka_settings):
    s = kafka_settings
    for spec in topic_specs(s):
        if spec.name in s.input_topics:
            await ensure_topic(s, spec)
    out = await asyncio.to_thread(run_cli, s, "tasks-worker", timeout=120)
    assert out.returncode != 0
    assert f"task topics missing on {s.kafka_bootstrap}: {s.topic('alerts')}" in out.stderr
    assert "healthmon topics create" in out.stderr


async def test_records_faust_skips_are_read_again(live, tmp_path):
    """Faust can skip fetched records and count the jump as acked (faust-streaming 0.15, see
    tests/faults/lossy_worker.py): the tasks worker reads such a hole again, so no action is lost."""
    s = live
    await setup_topics(s)
    lose = f"{s.topic('task_actions')}:0:0:1"  # the first action, the first time it is fetched
    w = WorkerProcess(
        s,
        tmp_path / "tasks-worker.log",
        module="tests.faults.lossy_worker",
        command="tasks-worker",
        env={"HM_LOSE": lose},
    ).start()
    try:
        accounts = ["acc-a", "acc-b", "acc-c"]
        now = datetime.now(UTC).replace(microsecond=0)
        task_ids, _ = await open_tasks(s, accounts, "band_red", now)
        await produce(s, acknowledgements(s, task_ids, now))
        try:
            final = books(await collect(s, "tasks", all_acknowledged(task_ids), timeout=60))
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n--- worker:\n{w.log_tail(60)}") from None
        assert [h.action for h in final["acc-a"].tasks[task_ids["acc-a"]].history] == [
            "opened",
            "acknowledge",
        ]
        log = w.log().decode(errors="replace")
        assert log.count("lossy client: lost") == 1, "the fault must have happened"
        assert f"{s.topic('task_actions')}[0]: records from 0 were not delivered (1 came next)" in log
    finally:
        w.stop()
