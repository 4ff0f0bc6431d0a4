"""A notification as a CSM reads it: one row per account (its latest figures once), NEW first."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from alerts.model import Notification
from alerts.text import one_line
from rules.model import AlertEvent


@dataclass
class Item:
    description: str
    action: str
    since: str
    new: bool
    #: A firing alert whose account has moved on since it fired: "health 52 (red) when it fired".
    at_firing: str = ""
    #: One-click links (label, URL) for the task the item is part of, when there is one.
    links: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Row:
    account_id: str
    name: str
    new: bool
    score: str
    band: str
    mrr: str
    #: "renews 2027-01-12", "renewal overdue since 2026-10-12", or "" (unknown, or cancelled).
    renewal: str
    since: str
    link: str
    canceled: bool
    items: list[Item] = field(default_factory=list)
    #: The score drivers of the account's newest alert (the why, up to three), " · "-joined (a
    #: driver's own text has semicolons: "CSAT 0% over 90 days; target 90%").
    why: str = ""


def snapshot_figures(snapshot: dict[str, Any]) -> dict[str, str]:
    """What a digest adds from an account's latest snapshot (``cs.health``): the renewal date and
    whether it has passed, and a cancellation."""
    got: dict[str, str] = {}
    metrics = snapshot.get("metrics") or {}
    days, as_of = metrics.get("days_to_renewal"), snapshot.get("as_of")
    if days is not None and as_of:
        when = datetime.fromisoformat(str(as_of).replace("Z", "+00:00"))
        got["renewal"] = (when + timedelta(days=int(days))).date().isoformat()
        if days < 0:  # a renewal date that has passed is not a coming one
            got["renewal_overdue"] = "1"
    if metrics.get("canceled"):
        got["canceled"] = "1"
    return got


def _date(t: datetime | None) -> str:
    return t.date().isoformat() if t else "n/a"


def _money(raw: str | None) -> str:
    if not raw:
        return "n/a"
    try:
        return f"${float(raw):,.0f}"
    except ValueError:
        return "n/a"


#: How the resolutions of a notification are headed, in this order (``AlertEvent.ended_by``).
ENDED_HEADINGS = {
    "cancelled": "Closed: account cancelled",
    "superseded": "Superseded (went on to a more urgent alert)",
    "recovered": "Recovered",
    "rule_removed": "Closed: rule removed",
}


def ended_sections(n: Notification) -> list[tuple[str, list[Row]]]:
    """The resolutions by why they ended: an account that cancelled is never listed as recovered."""
    out = []
    for why, heading in ENDED_HEADINGS.items():
        alerts = [a for a in n.resolved if (a.ended_by or "recovered") == why]
        if alerts:
            out.append((heading, rows(n, alerts, "")))
    return out


def _renewal(fig: dict[str, str], canceled: bool) -> str:
    if canceled or not fig.get("renewal"):
        return ""
    if fig.get("renewal_overdue") == "1":
        return f"renewal overdue since {fig['renewal']}"
    return f"renews {fig['renewal']}"


def _at_firing(a: AlertEvent, band_now: str | None) -> str:
    if a.status != "firing" or not band_now or a.band is None or a.band == band_now:
        return ""
    score = "n/a" if a.score is None else f"{a.score:.0f}"
    return f"health {score} ({a.band}) when it fired"


def rows(
    n: Notification,
    alerts: list[AlertEvent],
    link_base_url: str,
    links: Callable[[AlertEvent], list[tuple[str, str]]] | None = None,
) -> list[Row]:
    """Group alerts by account; figures from the read model when known (the latest), else from the
    newest alert of the account. NEW accounts first, then the lowest health first. ``links`` gives
    an item's one-click task links (email)."""
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
        canceled = fig.get("canceled") == "1" or any(
            a.rule_id == "account_canceled" or a.ended_by == "cancelled" for a in items
        )
        band = fig.get("band") or latest.band or "unknown"
        newest = max(items, key=lambda a: a.starts_at)
        out.append(
            Row(
                account_id=aid,
                name=one_line(latest.account.name or fig.get("name") or aid, 80),
                new=any(a.alert_id in new for a in items),
                score=f"{float(score):.0f}" if score else "n/a",
                band=band,
                mrr=_money(mrr),
                renewal=_renewal(fig, canceled),
                since=_date(min(a.starts_at for a in items)),
                link=f"{link_base_url.rstrip('/')}/accounts/{aid}" if link_base_url else "",
                canceled=canceled,
                why=" · ".join(one_line(d.text, 160) for d in newest.drivers[:3]),
                items=[
                    Item(
                        one_line(a.description, 200),
                        one_line(a.action, 300),
                        _date(a.ends_at if a.status == "resolved" else a.starts_at),
                        a.alert_id in new,
                        _at_firing(a, fig.get("band")),
                        links(a) if links is not None else [],
                    )
                    for a in sorted(items, key=lambda a: (a.alert_id not in new, a.starts_at))
                ],
            )
        )
    out.sort(key=lambda r: (not r.new, float(r.score) if r.score != "n/a" else 101.0, r.name))
    return out
