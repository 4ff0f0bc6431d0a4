"""Matching an alert's labels against the routing tree (pure)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from alerts.config import Route, RoutingConfig
from rules.model import AlertEvent

#: Timers of a route that sets none (and of the root): one digest per CSM, re-sent daily while firing.
GROUP_WAIT_S, GROUP_INTERVAL_S, REPEAT_INTERVAL_S = 30, 300, 24 * 3600
DEFAULTS = {
    "group_by": ["csm"],
    "group_wait": GROUP_WAIT_S,
    "group_interval": GROUP_INTERVAL_S,
    "repeat_interval": REPEAT_INTERVAL_S,
}


@dataclass(frozen=True)
class RouteMatch:
    receiver: str
    group_by: tuple[str, ...]
    group_wait: int
    group_interval: int
    repeat_interval: int


def alert_labels(alert: AlertEvent) -> dict[str, str]:
    """What routes can match on: the rule's labels plus the account's routing facts."""
    acc = alert.account
    return {
        **alert.labels,
        "rule": alert.rule_id,
        "severity": alert.severity,
        "account": alert.account_id,
        "segment": acc.segment or "",
        "csm": acc.csm_email or "",
        "slack_channel": acc.slack_channel or "",
    }


def _matches(route: Route, labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in route.match.items()):
        return False
    return all(re.fullmatch(p, labels.get(k, "")) for k, p in route.match_re.items())


def route_alert(config: RoutingConfig, labels: dict[str, str]) -> list[RouteMatch]:
    """Receivers for an alert: depth first, first matching child wins unless it says ``continue``."""
    out: list[RouteMatch] = []

    def settings(route: Route, inherited: dict) -> dict:
        merged = dict(inherited)
        for key in ("receiver", "group_by", "group_wait", "group_interval", "repeat_interval"):
            value = getattr(route, key)
            if value is not None:
                merged[key] = value
        return merged

    def visit(route: Route, inherited: dict) -> bool:
        if not _matches(route, labels):
            return False
        mine = settings(route, inherited)
        matched_child = False
        for child in route.routes:
            if visit(child, mine):
                matched_child = True
                if not child.continue_:
                    break
        if not matched_child:
            out.append(
                RouteMatch(
                    receiver=mine["receiver"],
                    group_by=tuple(mine["group_by"]),
                    group_wait=mine["group_wait"],
                    group_interval=mine["group_interval"],
                    repeat_interval=mine["repeat_interval"],
                )
            )
        return True

    visit(config.route, dict(DEFAULTS))
    return out


def group_key(match: RouteMatch, labels: dict[str, str]) -> str:
    return match.receiver + "|" + ",".join(f"{k}={labels.get(k, '')}" for k in match.group_by)
