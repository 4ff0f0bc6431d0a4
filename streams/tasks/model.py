"""Playbook tasks: what a firing alert asks someone to do, by when, and what they did.

Messages of the task topics: human actions on ``cs.task-actions`` (key: account id), each account's
task book on the compacted ``cs.tasks`` (key: account id), and the notices (reminders, escalations,
closings) the machine asks to send. Pure data; the transitions are in :mod:`streams.tasks.machine`.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from rules.model import OwnerRole, PlaybookType

#: superseded: closed by the system when a playbook that supersedes it opened on the account (the
#: account went on from yellow to red: one open task for one slide).
TaskState = Literal["open", "acknowledged", "done", "dismissed", "cancelled", "superseded"]
OPEN_STATES: frozenset[str] = frozenset({"open", "acknowledged"})
#: How a task that was done ended (the issue's list; "other" with a note for the rest).
Outcome = Literal["reached", "no_answer", "save_plan_agreed", "not_needed", "other"]
HumanVerb = Literal["acknowledge", "complete", "dismiss", "snooze", "reassign"]
Who = Annotated[str, StringConstraints(min_length=1, max_length=254)]
SYSTEM = "healthmon"
#: History entries kept per task (a trigger that keeps re-firing adds one per episode).
MAX_HISTORY = 100


def task_id(account_id: str, rule_id: str, opened_by_alert: str) -> str:
    """Deterministic: a replay or a redelivered alert opens the same task, never a second one."""
    return hashlib.sha256(f"{account_id}\x00{rule_id}\x00{opened_by_alert}".encode()).hexdigest()[:24]


class HistoryEntry(BaseModel):
    model_config = ConfigDict(frozen=True)

    at: datetime
    by: str  # a person (the API's caller, a link's addressee, a Slack user) or "healthmon"
    action: str  # opened, updated, alert_resolved, acknowledge, complete, ..., reminded, escalated
    detail: str | None = None


class TaskStep(BaseModel):
    model_config = ConfigDict(frozen=True)

    step: str
    due_at: datetime


class Task(BaseModel):
    """One playbook task for one account: at most one open per (account, playbook)."""

    model_config = ConfigDict(frozen=True)

    task_id: str
    account_id: str
    account_name: str | None = None
    #: The playbook: the rule whose alert opened the task.
    rule_id: str
    type: PlaybookType = "risk"
    #: The playbooks this one takes over (its rule's ``supersedes``): while it is open, their alerts
    #: open no task of their own on the account.
    supersedes: tuple[str, ...] = ()
    step: str
    steps: tuple[TaskStep, ...] = ()
    #: The alert episode that opened the task, and the latest one (a new episode updates the task).
    opened_by_alert: str
    alert_id: str
    #: The episodes seen (the latest 20), so that a redelivered alert changes nothing.
    alert_ids: tuple[str, ...] = ()
    alert_status: Literal["firing", "resolved"] = "firing"
    episodes: int = 1
    owner_role: OwnerRole = "csm"
    #: The person: the account's CSM (their email) unless reassigned; None for a role without one.
    owner: str | None = None
    opened_at: datetime
    due_at: datetime
    remind_at: datetime
    state: TaskState = "open"
    acknowledged_at: datetime | None = None
    closed_at: datetime | None = None
    outcome: Outcome | None = None
    note: str | None = None
    reason: str | None = None
    snoozed_until: datetime | None = None
    reminded_at: datetime | None = None
    escalated_at: datetime | None = None
    #: The account's situation when the alert last fired (what an escalation says).
    score: float | None = None
    band: str | None = None
    summary: str = ""
    history: tuple[HistoryEntry, ...] = ()

    @property
    def is_open(self) -> bool:
        return self.state in OPEN_STATES


class TaskAction(BaseModel):
    """A person's action on a task (``cs.task-actions``, key: account id). ``action_id`` makes it
    idempotent: the same id applied twice (a redelivery, a link clicked twice) counts once."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["human"] = "human"
    action_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    account_id: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    task_id: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    action: HumanVerb
    by: Who
    at: AwareDatetime
    outcome: Outcome | None = None
    note: Annotated[str, StringConstraints(max_length=1000)] | None = None
    reason: Annotated[str, StringConstraints(min_length=1, max_length=500)] | None = None
    until: AwareDatetime | None = None
    owner: Who | None = None
    #: Where it came from: api, link, slack.
    via: Literal["api", "link", "slack", "cli"] = "api"

    @model_validator(mode="after")
    def _arguments(self) -> TaskAction:
        need = {"complete": "outcome", "dismiss": "reason", "snooze": "until", "reassign": "owner"}
        field = need.get(self.action)
        if field is not None and getattr(self, field) is None:
            raise ValueError(f"{self.action} needs {field}")
        return self


class DeadlineTick(BaseModel):
    """The clock reached a task deadline of the account (live mode: the wall clock, written to
    ``cs.task-actions`` by the worker's timer so that it is in the log like everything else)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["tick"] = "tick"
    account_id: str
    at: AwareDatetime


InputRecord = Annotated[TaskAction | DeadlineTick, Field(discriminator="kind")]


class TaskNotice(BaseModel):
    """Something to tell people about a task (``cs.task-notices``); ``notice_id`` is deterministic
    so that a redelivered notice is recognised as the same one."""

    model_config = ConfigDict(frozen=True)

    notice_id: str
    kind: Literal["opened", "updated", "reminder", "escalation", "closed"]
    task_id: str
    account_id: str
    at: datetime
    #: Whom it is for: the task's owner role, or "manager" for an escalation.
    to_role: OwnerRole
    to: str | None
    task: Task


class TaskBook(BaseModel):
    """An account's tasks, the value of ``cs.tasks``: open tasks and the latest closed ones, plus
    the ids of the actions applied (the idempotency window)."""

    account_id: str
    partition: int | None = None
    tasks: dict[str, Task] = Field(default_factory=dict)
    applied: list[str] = Field(default_factory=list)
