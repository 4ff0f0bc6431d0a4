"""``GET /api/tasks/outcomes``: playbook outcomes per playbook or per CSM (streams.tasks.outcomes), and the
task figures of the CSM table. Registered before ``/api/tasks/{task_id}`` so that the path is not taken
for a task id."""

from __future__ import annotations

import time
from datetime import UTC, date, datetime
from typing import Any, Literal

from aiohttp import web
from pydantic import BaseModel, Field, field_validator

from streams.core.leader import period_span
from streams.core.portfolio import month_days
from streams.readmodel.outcomes import load
from streams.settings import Settings
from streams.tasks.model import Task
from streams.tasks.outcomes import AccountDay, OutcomeTable, outcome_table
from streams.web.openapi import get_operation


class OutcomesQuery(BaseModel):
    by: Literal["playbook", "csm"] = "playbook"
    #: Tasks opened in: YYYY-MM, YYYY-Qn, YYYY or T12-YYYY-MM; all tasks when absent.
    period: str | None = Field(default=None, max_length=12)

    @field_validator("period")
    @classmethod
    def _known(cls, v: str | None) -> str | None:
        if v is not None:
            try:
                period_span(v)
            except ValueError as exc:
                raise ValueError(f"not a period (YYYY-MM, YYYY-Qn, YYYY or T12-YYYY-MM): {v!r}") from exc
        return v


def period_days(period: str | None) -> tuple[date | None, date | None]:
    if period is None:
        return None, None
    months = period_span(period)
    return month_days(months[0])[0], month_days(months[-1])[1]


class OutcomesBody(OutcomeTable):
    period: str | None = None


#: Every task and their accounts' histories, read at most once per this many seconds: a dashboard render
#: asks three times (the CSM table, the Playbooks section by playbook and by CSM), on every update.
LOAD_TTL_S = 15.0
LOADED = web.AppKey("outcomes_loaded", dict)


async def loaded(app: web.Application) -> tuple[list[Task], dict[str, list[AccountDay]], datetime]:
    from streams.web.server import REDIS, SETTINGS

    cache = app[LOADED]
    hit = cache.get("all")
    if hit is None or time.monotonic() - hit[0] >= LOAD_TTL_S:
        s: Settings = app[SETTINGS]
        hit = cache["all"] = (time.monotonic(), await load(app[REDIS], s.redis_prefix, datetime.now(UTC)))
    return hit[1]


async def outcomes(request: web.Request) -> web.Response:
    q = OutcomesQuery.model_validate(dict(request.query))
    tasks, histories, now = await loaded(request.app)
    since, until = period_days(q.period)
    table = outcome_table(tasks, histories, now, by=q.by, since=since, until=until)
    body = OutcomesBody(period=q.period, **table.model_dump())
    return web.Response(body=body.model_dump_json(), content_type="application/json")


async def csm_task_figures(app: web.Application, period: str | None) -> dict[str, dict[str, Any]]:
    """Per CSM: open and overdue tasks now, and the on time % of the tasks opened in the period (none of
    which reads the accounts' histories)."""
    tasks, _, now = await loaded(app)
    current = {r.group: r for r in outcome_table(tasks, {}, now, by="csm").rows}
    since, until = period_days(period)
    in_period = {r.group: r for r in outcome_table(tasks, {}, now, "csm", since, until).rows}
    return {
        csm: {
            "open_tasks": r.open,
            "overdue_tasks": r.overdue,
            "on_time_pct": in_period[csm].on_time_pct if csm in in_period else None,
        }
        for csm, r in current.items()
    }


def register(app: web.Application) -> None:
    app[LOADED] = {}
    app.router.add_get("/api/tasks/outcomes", outcomes)


def openapi_paths() -> tuple[dict[str, Any], list[type[BaseModel]]]:
    paths = {
        "/api/tasks/outcomes": get_operation(
            "Playbook outcomes per playbook or per CSM (tasks opened in the period): tasks opened, open, "
            "overdue, on time %, median time to acknowledge, and for tasks done and tasks never acted on "
            "(the baseline) the band 14 and 30 days after, renewals, cancellations and the save rate "
            "(docs/tasks.md, Outcomes)",
            "OutcomesBody",
            OutcomesQuery,
            {"503": "the read model (Redis) is unavailable"},
        )
    }
    return paths, [OutcomesBody]
