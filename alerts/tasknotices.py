"""Task reminders and escalations (``cs.task-notices``) as items of the digests delivery sends.

``healthmon tasks-worker`` stamps each reminder and escalation once, with the time it was due (event
time in a replay). Delivery turns each into an alert-shaped item so that it goes through the same
routing, grouping, silences, notification log and at-least-once commits as the alerts: a reminder
lands in the owner's digest (grouped with the CSM's alerts), an escalation goes to the manager route
(label ``to_role: manager``; severity ``critical`` for routing trees that send only critical alerts to
managers). Each is sent once (it is no rule's episode, so nothing resolves or repeats it), and the
digest shows the account's figures as the read model has them when it is sent: its situation then.
"""

from __future__ import annotations

from rules.model import AlertEvent
from streams.core.snapshot import AccountInfo
from streams.tasks.model import TaskNotice

#: The notice kinds people are told about; "opened", "updated" and "closed" are in the alert's own
#: message already (the alert that opened the task, its resolution, the cancellation).
DELIVERED = ("reminder", "escalation")
#: The rule ids these items carry (no rule has them): delivery sends them once, never repeats them.
RULE_IDS = {"reminder": "task_reminder", "escalation": "task_escalation"}
TASK_RULES = frozenset(RULE_IDS.values())


def _when(notice: TaskNotice) -> str:
    return notice.task.due_at.strftime("%Y-%m-%d %H:%M UTC")


def notice_alert(notice: TaskNotice) -> AlertEvent | None:
    """The digest item of a reminder or an escalation; None for the other kinds."""
    if notice.kind not in DELIVERED:
        return None
    t = notice.task
    name = t.account_name or t.account_id
    owner = t.owner or f"the {t.owner_role} role"
    then = "" if t.score is None else f"; health {t.score:.0f} ({t.band or 'unknown'}) when it last fired"
    if notice.kind == "reminder":
        description = f"Reminder: task due {_when(notice)} ({t.rule_id})"
        severity = "warning"
    else:
        description = f"Escalated: not acknowledged by {owner} at its deadline {_when(notice)} ({t.rule_id})"
        severity = "critical"
    labels = {
        "task_notice": notice.kind,
        "to_role": notice.to_role,
        "playbook": t.rule_id,
        "task_id": t.task_id,
        "severity": severity,
    }
    return AlertEvent(
        alert_id=f"{RULE_IDS[notice.kind]}:{notice.notice_id}",
        rule_id=RULE_IDS[notice.kind],
        account_id=t.account_id,
        status="firing",
        severity=severity,
        active_since=t.opened_at,
        starts_at=notice.at,
        summary=f"{name}: {description}",
        description=description + then,
        action=t.step,
        labels=labels,
        values={"due_at": t.due_at.isoformat(), "episodes": t.episodes},
        score=t.score,
        band=t.band,
        drivers=[],
        account=AccountInfo(name=t.account_name, csm_email=t.owner),
    )
