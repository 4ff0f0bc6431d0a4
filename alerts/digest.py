"""A notification as a CSM reads it: one row per account (its latest figures once), NEW first."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from alerts.model import Notification
from alerts.text import one_line
from rules.model import AlertEvent


@dataclass
class Item:
    description: str
    action: str
    since: str
    new: bool


@dataclass
class Row:
    account_id: str
    name: str
    new: bool
    score: str
    band: str
    mrr: str
    renewal: str
    since: str
    link: str
    canceled: bool
    items: list[Item] = field(default_factory=list)


def _date(t: datetime | None) -> str:
    return t.date().isoformat() if t else "n/a"


def _money(raw: str | None) -> str:
    if not raw:
        return "n/a"
    try:
        return f"${float(raw):,.0f}"
    except ValueError:
        return "n/a"


def rows(n: Notification, alerts: list[AlertEvent], link_base_url: str) -> list[Row]:
    """Group alerts by account; figures from the read model when known (the latest), else from the
    newest alert of the account. NEW accounts first, then the lowest health first."""
    new = set(n.new)
    by_account: dict[str, list[AlertEvent]] = {}
    for a in alerts:
        by_account.setdefault(a.account_id, []).append(a)
    out = []
    for aid, items in by_account.items():
        latest = max(items, key=lambda a: a.ends_at or a.starts_at)
        fig = n.accounts.get(aid, {})
        score = fig.get("score") or ("" if latest.score is None else str(latest.score))
        mrr = fig.get("mrr") or (str(latest.values["mrr"]) if latest.values.get("mrr") is not None else None)
        out.append(
            Row(
                account_id=aid,
                name=one_line(latest.account.name or fig.get("name") or aid, 80),
                new=any(a.alert_id in new for a in items),
                score=f"{float(score):.0f}" if score else "n/a",
                band=fig.get("band") or latest.band or "unknown",
                mrr=_money(mrr),
                renewal=fig.get("renewal", "n/a"),
                since=_date(min(a.starts_at for a in items)),
                link=f"{link_base_url.rstrip('/')}/accounts/{aid}" if link_base_url else "",
                canceled=fig.get("canceled") == "1" or any(a.rule_id == "account_canceled" for a in items),
                items=[
                    Item(
                        one_line(a.description, 200),
                        one_line(a.action, 300),
                        _date(a.ends_at if a.status == "resolved" else a.starts_at),
                        a.alert_id in new,
                    )
                    for a in sorted(items, key=lambda a: (a.alert_id not in new, a.starts_at))
                ],
            )
        )
    out.sort(key=lambda r: (not r.new, float(r.score) if r.score != "n/a" else 101.0, r.name))
    return out
