"""Reads of the Redis read model (see streams/readmodel/projector.py for the keys) for the API and the page."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any, Literal

import orjson
from pydantic import BaseModel, Field
from redis.asyncio import Redis

from streams.core.accuracy import Track, accuracy, tracks_from
from streams.readmodel.projector import read_comments, read_history

SortKey = Literal["score", "-score", "mrr", "-mrr", "name", "-name", "renewal", "-renewal"]
_ROW_FIELDS = (
    "name",
    "segment",
    "csm",
    "csm_name",
    "score",
    "band",
    "mrr",
    "canceled",
    "renewal_date",
    "as_of",
)


class AccountQuery(BaseModel):
    """Filters, sorting and paging of ``GET /api/accounts`` (query parameters)."""

    band: Literal["red", "yellow", "green"] | None = None
    csm: str | None = None
    segment: str | None = None
    #: Only accounts renewing within this many days of ``today`` (the read model's latest day).
    renewal_within_days: int | None = Field(default=None, ge=0, le=3660)
    include_canceled: bool = False
    q: str | None = Field(default=None, max_length=100)  # a substring of the name or id
    sort: SortKey = "score"
    limit: int = Field(default=50, ge=1, le=500)
    offset: int = Field(default=0, ge=0)


def _row(aid: str, values: list[bytes | None]) -> dict[str, Any]:
    v = {k: (x.decode() if x is not None else None) for k, x in zip(_ROW_FIELDS, values, strict=True)}
    return {
        "account_id": aid,
        "name": v["name"] or aid,
        "segment": v["segment"] or None,
        "csm": v["csm"] or None,
        "csm_name": v["csm_name"] or None,
        "score": float(v["score"]) if v["score"] else None,
        "band": v["band"] or None,
        "mrr": float(v["mrr"]) if v["mrr"] else 0.0,
        "canceled": v["canceled"] == "1",
        "renewal_date": v["renewal_date"] or None,
        "as_of": v["as_of"] or None,
    }


async def list_accounts(redis: Redis, p: str, q: AccountQuery) -> dict[str, Any]:
    sets = [
        f"{p}{field}:{value}"
        for field, value in (("band", q.band), ("csm", q.csm), ("segment", q.segment))
        if value
    ]
    ids = await redis.sinter(sets) if sets else await redis.smembers(f"{p}accounts")
    names = sorted(x.decode() for x in ids)
    async with redis.pipeline(transaction=False) as pipe:
        for aid in names:
            pipe.hmget(f"{p}account:{aid}", list(_ROW_FIELDS))
        rows = [_row(aid, values) for aid, values in zip(names, await pipe.execute(), strict=True)]
    if not q.include_canceled:
        rows = [r for r in rows if not r["canceled"]]
    if q.renewal_within_days is not None:
        today = max((r["as_of"][:10] for r in rows if r["as_of"]), default=None)
        if today is None:
            rows = []
        else:
            first = date.fromisoformat(today)
            last = (first + timedelta(days=q.renewal_within_days)).isoformat()
            rows = [r for r in rows if r["renewal_date"] and today <= r["renewal_date"] <= last]
    if q.q:
        needle = q.q.lower()
        rows = [r for r in rows if needle in r["name"].lower() or needle in r["account_id"].lower()]
    key = q.sort.lstrip("-")

    def value(r: dict) -> Any:
        v = r["renewal_date"] if key == "renewal" else r[key]
        return v.lower() if isinstance(v, str) else v

    present = sorted(
        (r for r in rows if value(r) is not None),
        key=lambda r: (value(r), r["account_id"]),
        reverse=q.sort.startswith("-"),
    )
    rows = present + [r for r in rows if value(r) is None]  # accounts without the value go last
    return {
        "total": len(rows),
        "limit": q.limit,
        "offset": q.offset,
        "items": rows[q.offset : q.offset + q.limit],
    }


_TASK_FIELDS = ("task_id", "state", "step", "owner", "owner_role", "due_at", "outcome", "closed_at")


def alert_episodes(alerts: list[dict], tasks: list[dict] | None = None) -> list[dict]:
    """One row per episode (``alert_id``), newest fired first, from an account's alert events (newest
    first, as the read model keeps them): a resolved episode shows its end, never its old firing row,
    and the playbook task the episode opened or updated (``task``, None without one)."""
    task_of: dict[str, dict] = {}
    for t in sorted(tasks or [], key=lambda t: str(t.get("opened_at") or "")):  # a later task wins
        for alert_id in (t.get("opened_by_alert"), t.get("alert_id"), *(t.get("alert_ids") or ())):
            if alert_id:
                task_of[str(alert_id)] = {k: t.get(k) for k in _TASK_FIELDS}
    by_id: dict[str, dict] = {}
    for a in reversed(alerts):  # oldest first: the last event of an episode wins
        aid = str(a.get("alert_id") or "")
        row = by_id.setdefault(
            aid,
            {
                "alert_id": aid,
                "rule_id": a.get("rule_id"),
                "severity": a.get("severity"),
                "active_since": a.get("active_since"),
                "fired_at": a.get("starts_at"),
            },
        )
        row.update(
            status=a.get("status"),
            summary=a.get("summary") or a.get("rule_id"),
            action=a.get("action"),
            resolved_at=a.get("ends_at") if a.get("status") == "resolved" else None,
            ended_by=(a.get("ended_by") or "recovered") if a.get("status") == "resolved" else None,
        )
        if a.get("status") == "firing":
            row["fired_at"] = a.get("starts_at")
    for aid, row in by_id.items():
        row["task"] = task_of.get(aid)
    return sorted(by_id.values(), key=lambda r: str(r.get("fired_at") or ""), reverse=True)


async def account_tasks(redis: Redis, p: str, aid: str) -> list[dict]:
    """The account's playbook tasks as the task read model holds them (streams/readmodel/tasks.py)."""
    ids = sorted(x.decode() for x in await redis.smembers(f"{p}tasks:account:{aid}"))
    raws = await redis.mget([f"{p}task:{i}" for i in ids]) if ids else []
    return [orjson.loads(r) for r in raws if r is not None]


async def account_detail(redis: Redis, p: str, aid: str, history_days: int) -> dict[str, Any] | None:
    raw = await redis.hget(f"{p}account:{aid}", "snapshot")
    if raw is None:
        return None
    alerts = [orjson.loads(x) for x in await redis.lrange(f"{p}alerts:{aid}", 0, -1)]
    firing = [
        orjson.loads(v)
        for v in (await redis.hgetall(f"{p}alerts:firing")).values()
        if orjson.loads(v).get("account_id") == aid
    ]
    return {
        "snapshot": orjson.loads(raw),
        "history": await read_history(redis, p, aid, history_days),
        "alerts": alerts,
        "episodes": alert_episodes(alerts, await account_tasks(redis, p, aid)),
        "firing": firing,
        "comments": await read_comments(redis, p, aid),
    }


async def alerts_feed(
    redis: Redis, p: str, limit: int, account: str | None = None, status: str | None = None
) -> list[dict]:
    key = f"{p}alerts:{account}" if account else f"{p}alerts"
    out = [orjson.loads(x) for x in await redis.lrange(key, 0, -1)]
    if status:
        out = [a for a in out if a.get("status") == status]
    return out[:limit]


async def periods(redis: Redis, p: str) -> list[str]:
    return [x.decode() for x in await redis.zrange(f"{p}portfolio:periods", 0, -1)]


async def portfolio(redis: Redis, p: str, period: str, group: str) -> dict | None:
    raw = await redis.hget(f"{p}portfolio:{period}", group)
    return None if raw is None else orjson.loads(raw)


async def portfolio_groups(redis: Redis, p: str, period: str) -> list[str]:
    return sorted(x.decode() for x in await redis.hkeys(f"{p}portfolio:{period}"))


_TREND_FIELDS = (
    "period",
    "nrr",
    "grr",
    "logo_churn_rate",
    "revenue_churn_rate",
    "healthy_pct",
    "at_risk_mrr",
    "at_risk_accounts",
    "ending_mrr",
    "accounts_by_band",
    "nps",
    "csat",
    "renewal_rate",
)


async def trend(redis: Redis, p: str, group: str, months: int) -> list[dict]:
    """The group's monthly figures, oldest first, without the account lists (for the tiles' trend)."""
    monthly = [x for x in await periods(redis, p) if len(x) == 7 and "Q" not in x][-months:]
    async with redis.pipeline(transaction=False) as pipe:
        for period in monthly:
            pipe.hget(f"{p}portfolio:{period}", group)
        rows = await pipe.execute()
    out = []
    for raw in rows:
        if raw is not None:
            figures = orjson.loads(raw)
            out.append({k: figures.get(k) for k in _TREND_FIELDS})
    return out


async def score_lines(redis: Redis, p: str) -> list[Track]:
    """Every account's score line (``{p}scoreline:*``) with its segment, for :func:`accuracy`."""
    names = sorted(x.decode() for x in await redis.smembers(f"{p}accounts"))
    async with redis.pipeline(transaction=False) as pipe:
        for aid in names:
            pipe.hget(f"{p}account:{aid}", "segment")
            pipe.zrange(f"{p}scoreline:{aid}", 0, -1)
        got = await pipe.execute()
    return tracks_from(
        {
            aid: ((seg or b"").decode() or None, line)
            for aid, seg, line in zip(names, got[::2], got[1::2], strict=True)
        }
    )


async def set_aside(redis: Redis, p: str) -> list[dict[str, Any]]:
    """The measures the information check sets aside, with why and for how many accounts (latest
    snapshots of the accounts still customers), most accounts first."""
    names = sorted(x.decode() for x in await redis.smembers(f"{p}accounts"))
    async with redis.pipeline(transaction=False) as pipe:
        for aid in names:
            pipe.hmget(f"{p}account:{aid}", ["set_aside", "canceled"])
        rows = await pipe.execute()
    counts: dict[tuple[str, str, str, str, str], int] = {}
    for raw, canceled in rows:
        if not raw or canceled == b"1":
            continue
        for a in orjson.loads(raw):
            key = (a.get("scorecard") or "default", a["component"], a["measure"], a["reason"], a["text"])
            counts[key] = counts.get(key, 0) + 1
    return [
        {"scorecard": k[0], "component": k[1], "measure": k[2], "reason": k[3], "text": k[4], "accounts": n}
        for k, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    ]


async def accuracy_report(redis: Redis, p: str, window_days: int) -> dict[str, Any]:
    """``GET /api/accuracy``: the live score accuracy (streams.core.accuracy) and the set-aside measures."""
    report = accuracy(await score_lines(redis, p), window_days=window_days)
    return {**report.model_dump(), "set_aside": await set_aside(redis, p)}
