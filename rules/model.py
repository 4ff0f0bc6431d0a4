"""Rule files and the alert events the engine publishes on ``cs.alerts``."""

from __future__ import annotations

import re
import string
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    field_validator,
    model_validator,
)

from rules.context import FIELDS
from rules.expr import Compiled, ExprError, compile_condition
from streams.core.scoring import Driver
from streams.core.snapshot import AccountInfo

Severity = Literal["info", "warning", "critical"]
_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"^(?:(\d+)w)?(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_duration(value: Any) -> int:
    """``"14d"``, ``"1d12h"``, ``"90m"``, ``"0"`` or a number of seconds, to seconds."""
    if isinstance(value, bool):
        raise ValueError("a duration is like 14d, 12h, 30m or 1d12h")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("a duration cannot be negative")
        return value
    if isinstance(value, str):
        text = value.strip()
        if text == "0":
            return 0
        m = _DURATION.match(text)
        if m and any(m.groups()):
            return sum(int(n) * _UNITS[u] for n, u in zip(m.groups(), "wdhms", strict=True) if n)
    raise ValueError(f"{value!r} is not a duration like 14d, 12h, 30m or 1d12h")


Duration = Annotated[int, BeforeValidator(parse_duration)]


def format_duration(seconds: int) -> str:
    if seconds == 0:
        return "0"
    if seconds < 0:
        return "-" + format_duration(-seconds)
    out = []
    for unit, size in _UNITS.items():
        if seconds >= size:
            out.append(f"{seconds // size}{unit}")
            seconds %= size
    return "".join(out)


def parse_deadline(value: Any) -> int | str:
    """``same_day`` (the end of the account's local day) or a positive duration in seconds."""
    if value == "same_day":
        return "same_day"
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a deadline: same_day, or a duration like 48h, 24h, 7d") from None
    if seconds <= 0:
        raise ValueError("a deadline must be later than the moment the task opens")
    return seconds


#: ``respond_within`` and a step's ``within``: seconds after the task opens, or "same_day".
Deadline = Annotated[int | Literal["same_day"], BeforeValidator(parse_deadline)]
OwnerRole = Literal["csm", "manager"]
PlaybookType = Literal["risk", "opportunity"]


def deadline_order(d: int | str) -> int:
    """Sorts deadlines: same_day ends within a day, so it comes before any offset over a day."""
    return 86_400 if d == "same_day" else int(d)


class PlaybookStep(BaseModel):
    """One step of a playbook, due ``within`` this long after the task opens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str = Field(min_length=1, max_length=500)
    within: Deadline


class Action(BaseModel):
    """What the CSM does when the rule fires. With ``respond_within`` it is a tracked playbook: a
    firing alert opens a task (streams/tasks) due then, owned by ``owner``; without it, the step is
    only text in the notification. A plain string in YAML is the text alone."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    step: str = Field(min_length=1, max_length=500)
    respond_within: Deadline | None = None
    owner: OwnerRole = "csm"
    type: PlaybookType = "risk"
    #: Ordered follow-up steps, each due at its own offset from the opening (e.g. call within 48h,
    #: then log the save plan within 7d); the first response is still due at ``respond_within``.
    steps: tuple[PlaybookStep, ...] = ()

    @model_validator(mode="after")
    def _consistent(self) -> Action:
        if self.steps and self.respond_within is None:
            raise ValueError("steps need respond_within (the deadline of the first response)")
        offsets = [deadline_order(st.within) for st in self.steps]
        if offsets != sorted(offsets):
            raise ValueError("steps must be in the order they are due (each within no earlier than the last)")
        return self

    @property
    def tracked(self) -> bool:
        """A firing alert of this rule opens a task."""
        return self.respond_within is not None


def _action(value: Any) -> Any:
    return {"step": value} if isinstance(value, str) else value


class Rule(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,99}$")
    description: str = Field(min_length=1, max_length=500)
    #: The condition over the account's snapshot (see rules/expr.py and docs/rules.md).
    when: str
    #: How long the condition must hold, in event time, before the alert fires.
    for_: Duration = Field(default=0, alias="for")
    #: Keep firing this long after the condition stops holding (damps flapping).
    keep_firing_for: Duration = 0
    #: After an episode resolves, a new one cannot start before this has passed.
    cooldown: Duration = 0
    severity: Severity = "warning"
    labels: dict[str, str] = Field(default_factory=dict)
    #: The playbook step for the CSM: a line of text, or a mapping with a deadline (see Action).
    action: Annotated[Action, BeforeValidator(_action)]
    #: One line for the notification; ``{field}`` placeholders take values from the snapshot.
    summary: str | None = None
    send_resolved: bool = True
    #: Rules whose episode this one takes over (one crossing, one episode): when this rule fires, their
    #: firing episode of the account resolves as ``superseded`` (and their open task closes, see
    #: streams/tasks), and while it is firing they cannot start a new one.
    supersedes: tuple[str, ...] = ()

    _condition: Compiled = PrivateAttr()

    @field_validator("when")
    @classmethod
    def _compiles(cls, v: str) -> str:
        try:
            compile_condition(v, FIELDS)
        except ExprError as exc:
            raise ValueError(str(exc)) from None
        return v

    @field_validator("summary")
    @classmethod
    def _summary_fields(cls, v: str | None) -> str | None:
        if v is None:
            return v
        for _, name, spec, conversion in string.Formatter().parse(v):
            if name is None:
                continue
            if name not in FIELDS and name != "account":
                raise ValueError(f"summary placeholder {{{name}}} is not a known field")
            if conversion not in (None, "", "r", "s", "a"):
                raise ValueError(f"summary placeholder {{{name}}}: unknown conversion !{conversion}")
            if spec:
                if "{" in spec:
                    raise ValueError(f"summary placeholder {{{name}}}: nested format specs are not allowed")
                samples: tuple[object, ...] = (1.5, 2, "text") if name != "account" else ("text",)
                if not any(_formats(sample, spec) for sample in samples):
                    raise ValueError(f"summary placeholder {{{name}:{spec}}}: invalid format spec")
        return v

    @model_validator(mode="after")
    def _not_itself(self) -> Rule:
        if self.id in self.supersedes:
            raise ValueError(f"rule {self.id} cannot supersede itself")
        return self

    def model_post_init(self, _: Any) -> None:
        self._condition = compile_condition(self.when, FIELDS)

    @property
    def condition(self) -> Compiled:
        return self._condition


def _formats(value: object, spec: str) -> bool:
    try:
        format(value, spec)
    except (ValueError, TypeError):
        return False
    return True


class RuleFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[Rule] = Field(default_factory=list)


class AlertEvent(BaseModel):
    """One notification-worthy change of a rule for one account (``cs.alerts``, key: account_id)."""

    schema_version: int = 1
    alert_id: str  # the same for the firing and the resolved event of one episode
    rule_id: str
    account_id: str
    status: Literal["firing", "resolved"]
    severity: Severity
    active_since: datetime  # when the condition started to hold (the episode start)
    starts_at: datetime  # when it fired (active_since + for)
    ends_at: datetime | None = None  # when it resolved
    #: Why a resolved episode ended: its condition stopped holding, the account cancelled (never
    #: "recovered"), a rule that supersedes it fired (yellow -> red: never "recovered" either), or its
    #: rule was removed from the pack. None while firing.
    ended_by: Literal["recovered", "cancelled", "superseded", "rule_removed"] | None = None
    summary: str
    description: str
    action: str
    #: The rule's tracked playbook (deadline, owner role, type, steps) when it has one: a firing
    #: alert with a playbook opens a task (streams/tasks).
    playbook: Action | None = None
    #: The rules whose episodes and open tasks a firing of this one takes over (Rule.supersedes).
    supersedes: list[str] = Field(default_factory=list)
    labels: dict[str, str]
    #: The values the condition read when it fired (or resolved).
    values: dict[str, Any]
    score: float | None
    band: str | None
    drivers: list[Driver]
    account: AccountInfo
