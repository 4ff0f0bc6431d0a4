"""The Redis read model of playbook tasks, written from each account's task book (``cs.tasks``).

Key layout (``{p}`` is ``HEALTHMON_REDIS_PREFIX``):

- ``{p}task:{task_id}``                 the task's JSON
- ``{p}tasks:owner:{owner}``            sorted set: the owner's open (or acknowledged) task ids by due time;
  a task of a role without a person is under ``role:{role}`` (``role:manager``)
- ``{p}tasks:state:{state}``            sorted set: task ids in that state by due time
- ``{p}tasks:account:{account_id}``     set of the account's task ids

Writing a book is idempotent and self-healing: each task's previous version is read from Redis, so a
book written again after a crash (or by a rebuild from the topic) moves the indexes exactly once.
"""

from __future__ import annotations

import orjson
from redis.asyncio import Redis

from streams.tasks.model import Task, TaskBook


def owner_key(owner: str | None, owner_role: str) -> str:
    return owner if owner else f"role:{owner_role}"


def _indexes(prefix: str, task: dict) -> tuple[str | None, str]:
    """The owner index a task belongs to (None once closed) and its state index."""
    owner = None
    if task["state"] in ("open", "acknowledged"):
        owner = f"{prefix}tasks:owner:{owner_key(task.get('owner'), task['owner_role'])}"
    return owner, f"{prefix}tasks:state:{task['state']}"


async def write_book(redis: Redis, prefix: str, book: TaskBook) -> int:
    """Write every task of the book whose Redis copy differs; returns how many were written."""
    tasks = list(book.tasks.values())
    if not tasks:
        return 0
    olds = await redis.mget([f"{prefix}task:{t.task_id}" for t in tasks])
    written = 0
    async with redis.pipeline(transaction=True) as pipe:
        for task, old_raw in zip(tasks, olds, strict=True):
            raw = task.model_dump_json().encode()
            if old_raw == raw:
                continue
            new = orjson.loads(raw)
            due = task.due_at.timestamp()
            if old_raw is not None:
                for key in _indexes(prefix, orjson.loads(old_raw)):
                    if key is not None:
                        pipe.zrem(key, task.task_id)
            pipe.set(f"{prefix}task:{task.task_id}", raw)
            for key in _indexes(prefix, new):
                if key is not None:
                    pipe.zadd(key, {task.task_id: due})
            pipe.sadd(f"{prefix}tasks:account:{task.account_id}", task.task_id)
            written += 1
        if written:
            await pipe.execute()
    return written


async def get_task(redis: Redis, prefix: str, task_id: str) -> Task | None:
    raw = await redis.get(f"{prefix}task:{task_id}")
    return None if raw is None else Task.model_validate_json(raw)


async def list_tasks(
    redis: Redis,
    prefix: str,
    *,
    owner: str | None = None,
    state: str | None = None,
    due_before: float | None = None,
    limit: int = 100,
) -> list[Task]:
    """Tasks by due time: an owner's open ones, or those in a state; ``due_before`` a UNIX time."""
    key = f"{prefix}tasks:owner:{owner}" if owner is not None else f"{prefix}tasks:state:{state or 'open'}"
    ids = await redis.zrangebyscore(key, "-inf", due_before if due_before is not None else "+inf", 0, limit)
    if not ids:
        return []
    raws = await redis.mget([f"{prefix}task:{i.decode()}" for i in ids])
    tasks = [Task.model_validate_json(r) for r in raws if r is not None]
    return [t for t in tasks if state is None or t.state == state]
