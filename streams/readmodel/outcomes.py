"""Reads what playbook outcomes need from the Redis read model: every task (closed ones too: the task read
model never drops a task, while the ``cs.tasks`` book keeps only the latest closed ones) and the daily
history of their accounts (``{p}history:{account_id}``, ``HEALTHMON_HISTORY_DAYS`` kept: at least 90,
enough for a 30-day window after any task of the last two months).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time
from typing import get_args

import orjson
from redis.asyncio import Redis

from streams.tasks.model import Task, TaskState
from streams.tasks.outcomes import AccountDay, GroupBy, OutcomeTable, history_days, outcome_table

STATES = get_args(TaskState)


async def all_tasks(redis: Redis, prefix: str) -> list[Task]:
    async with redis.pipeline(transaction=False) as pipe:
        for state in STATES:
            pipe.zrange(f"{prefix}tasks:state:{state}", 0, -1)
        found = await pipe.execute()
    ids = sorted({i.decode() for ids in found for i in ids})
    tasks: list[Task] = []
    for n in range(0, len(ids), 1000):
        raws = await redis.mget([f"{prefix}task:{i}" for i in ids[n : n + 1000]])
        tasks.extend(Task.model_validate_json(r) for r in raws if r is not None)
    return tasks


async def account_histories(redis: Redis, prefix: str, account_ids: set[str]) -> dict[str, list[AccountDay]]:
    ordered = sorted(account_ids)
    async with redis.pipeline(transaction=False) as pipe:
        for aid in ordered:
            pipe.zrange(f"{prefix}history:{aid}", 0, -1)
        found = await pipe.execute()
    return {
        aid: history_days(orjson.loads(r) for r in raws) for aid, raws in zip(ordered, found, strict=True)
    }


def read_model_now(tasks: list[Task], histories: dict[str, list[AccountDay]], wall: datetime) -> datetime:
    """The read model's clock: the end of the latest day any history holds (or the latest task time),
    never past the wall clock. In a replay that is the replayed time, live it is now."""
    latest = [datetime.combine(days[-1].day, time.max, UTC) for days in histories.values() if days]
    latest += [t.closed_at or t.opened_at for t in tasks]
    return min(max(latest), wall) if latest else wall


async def load(
    redis: Redis, prefix: str, wall: datetime
) -> tuple[list[Task], dict[str, list[AccountDay]], datetime]:
    """Every task, their accounts' histories and the read model's clock."""
    tasks = await all_tasks(redis, prefix)
    histories = await account_histories(redis, prefix, {t.account_id for t in tasks})
    return tasks, histories, read_model_now(tasks, histories, wall)


async def read_outcomes(
    redis: Redis,
    prefix: str,
    by: GroupBy,
    since: date | None,
    until: date | None,
    wall: datetime,
) -> OutcomeTable:
    tasks, histories, now = await load(redis, prefix, wall)
    return outcome_table(tasks, histories, now, by=by, since=since, until=until)
