"""Event contract v1: one pydantic model per input event type.

Every event is a JSON object with ``event_id`` (the de-duplication key), ``account_id`` (also the Kafka
message key), ``type`` and ``occurred_at`` (RFC 3339 with an offset). Unknown extra fields are kept so
producers can add data before the contract names it. Money is ``Decimal``, never float.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

CONTRACT_VERSION = 1
#: Additive revisions of contract v1 (an older producer's events stay valid): 1.1 added the relationship
#: events (``meeting``, ``csm_touch``, on the accounts topic) and ``executive_sponsor`` on ``account``.
CONTRACT_REVISION = "1.1"

Id = Annotated[str, StringConstraints(min_length=1, max_length=256, strip_whitespace=False)]
Text = Annotated[str, StringConstraints(max_length=2000)]
Sentiment = Annotated[float, Field(ge=-1.0, le=1.0)]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]


class BaseEvent(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True, ser_json_timedelta="float")

    event_id: Id
    account_id: Id
    occurred_at: AwareDatetime


# --- cs.accounts -------------------------------------------------------------------------------


def _iana_zone(name: str) -> str:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)") from None
    return name


#: An IANA time zone name, e.g. "America/New_York": the account's own day (``same_day`` deadlines).
TimeZone = Annotated[str, StringConstraints(min_length=1, max_length=64), AfterValidator(_iana_zone)]


class Account(BaseEvent):
    """The account's profile and owner; the latest one wins."""

    type: Literal["account"]
    name: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    segment: Literal["smb", "mid_market", "enterprise"]
    csm_name: Annotated[str, StringConstraints(max_length=200)]
    csm_email: Annotated[str, StringConstraints(max_length=254, pattern=r"^[^@\s]+@[^@\s]+$")]
    slack_channel: Annotated[str, StringConstraints(max_length=80)] | None = None
    signed_up_at: AwareDatetime
    #: Optional (added in contract v1, compatible): where the account's day begins and ends.
    time_zone: TimeZone | None = None
    #: The customer's executive sponsor (name or e-mail), from the CRM; contract 1.1.
    executive_sponsor: Annotated[str, StringConstraints(max_length=254)] | None = None


# Relationship events (contract 1.1) ride the accounts topic: they come from the same systems as the
# profile (the CRM, the CSM's calendar and mailbox), are few, and are keyed by account like the rest.

#: Who attended a meeting, from the customer's side; ``executive`` makes it an executive touch.
AttendeeRole = Literal["executive", "champion", "admin", "user", "other"]


class Attendee(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    role: AttendeeRole
    name: Annotated[str, StringConstraints(max_length=200)] | None = None
    email: Annotated[str, StringConstraints(max_length=254)] | None = None


class Meeting(BaseEvent):
    """A customer meeting that was held or cancelled (a QBR/EBR, a check-in, a training, onboarding)."""

    type: Literal["meeting"]
    meeting_id: Id | None = None
    #: ``qbr`` and ``ebr`` (business reviews) both count as the review the QBR cadence asks for.
    kind: Literal["check_in", "qbr", "ebr", "training", "onboarding"]
    status: Literal["held", "cancelled"]
    attendees: Annotated[list[Attendee], Field(max_length=200)] = Field(default_factory=list)
    duration_min: Annotated[float, Field(ge=0, le=24 * 60)] | None = None


class CsmTouch(BaseEvent):
    """A CSM's logged e-mail or call with the customer (not a meeting)."""

    type: Literal["csm_touch"]
    channel: Literal["email", "call"]
    #: The role of the customer contact; ``executive`` makes it an executive touch.
    contact_role: AttendeeRole | None = None
    csm_email: Annotated[str, StringConstraints(max_length=254)] | None = None
    note: Text | None = None


# --- cs.usage ----------------------------------------------------------------------------------


class Login(BaseEvent):
    type: Literal["login"]
    user_id: Id


class FeatureUsed(BaseEvent):
    type: Literal["feature_used"]
    user_id: Id
    feature: Annotated[str, StringConstraints(min_length=1, max_length=200)]


class Session(BaseEvent):
    type: Literal["session"]
    user_id: Id
    duration_s: Annotated[float, Field(ge=0, le=7 * 24 * 3600)]


# --- cs.tickets --------------------------------------------------------------------------------


class TicketOpened(BaseEvent):
    type: Literal["ticket_opened"]
    ticket_id: Id
    priority: Literal["low", "normal", "high", "urgent"]
    sentiment: Sentiment | None = None


class TicketReplied(BaseEvent):
    type: Literal["ticket_replied"]
    ticket_id: Id
    author: Literal["agent", "customer"]
    sentiment: Sentiment | None = None


class TicketResolved(BaseEvent):
    type: Literal["ticket_resolved"]
    ticket_id: Id


class TicketReopened(BaseEvent):
    type: Literal["ticket_reopened"]
    ticket_id: Id


class Csat(BaseEvent):
    type: Literal["csat"]
    ticket_id: Id | None = None
    score: Annotated[int, Field(ge=1, le=5, strict=True)]
    #: What the customer wrote beside the score: shown (escaped) on the account page, never scored.
    comment: Text | None = None


# --- cs.billing --------------------------------------------------------------------------------


class Subscription(BaseEvent):
    """The subscription as it is now: a change of ``mrr`` is expansion or contraction."""

    type: Literal["subscription"]
    mrr: Money
    plan: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    seats: Annotated[int, Field(ge=0, le=10_000_000)]
    renewal_date: date


class InvoicePaid(BaseEvent):
    type: Literal["invoice_paid"]
    invoice_id: Id
    amount: Money


class PaymentFailed(BaseEvent):
    type: Literal["payment_failed"]
    invoice_id: Id
    amount: Money


class SubscriptionCanceled(BaseEvent):
    type: Literal["subscription_canceled"]
    reason: Text | None = None


# --- cs.surveys --------------------------------------------------------------------------------


class Nps(BaseEvent):
    type: Literal["nps"]
    user_id: Id
    score: Annotated[int, Field(ge=0, le=10, strict=True)]
    comment: Text | None = None


class Ces(BaseEvent):
    type: Literal["ces"]
    user_id: Id
    score: Annotated[int, Field(ge=1, le=7, strict=True)]


class CsmSentiment(BaseEvent):
    """The CSM's own read of the account: -1..1 (``scale: "-1..1"``, the default) or a 1-5 rating.

    The latest read by ``occurred_at`` wins: a nightly import that re-sends older reads never replaces a
    newer one. Its weight in the score decays with age (``metrics.csm_sentiment_half_life_days``).
    """

    type: Literal["csm_sentiment"]
    score: Annotated[float, Field(ge=-1.0, le=5.0)]
    scale: Literal["-1..1", "1-5"] = "-1..1"
    csm_email: Annotated[str, StringConstraints(max_length=254)] | None = None
    note: Text | None = None

    @model_validator(mode="after")
    def _in_scale(self) -> CsmSentiment:
        lo, hi = (-1.0, 1.0) if self.scale == "-1..1" else (1.0, 5.0)
        if not lo <= self.score <= hi:
            raise ValueError(f"score {self.score} is outside the {self.scale} scale")
        return self

    def normalised(self) -> float:
        """-1..1 whatever the scale (a 1-5 rating: 1 -> -1, 3 -> 0, 5 -> 1)."""
        return self.score if self.scale == "-1..1" else (self.score - 3.0) / 2.0


Event = Annotated[
    Account
    | Meeting
    | CsmTouch
    | Login
    | FeatureUsed
    | Session
    | TicketOpened
    | TicketReplied
    | TicketResolved
    | TicketReopened
    | Csat
    | Subscription
    | InvoicePaid
    | PaymentFailed
    | SubscriptionCanceled
    | Nps
    | Ces
    | CsmSentiment,
    Field(discriminator="type"),
]

#: Which event types each input topic carries (keys are the TopicNames field names).
TOPIC_TYPES: dict[str, frozenset[str]] = {
    "accounts": frozenset({"account", "meeting", "csm_touch"}),
    "usage": frozenset({"login", "feature_used", "session"}),
    "tickets": frozenset({"ticket_opened", "ticket_replied", "ticket_resolved", "ticket_reopened", "csat"}),
    "billing": frozenset({"subscription", "invoice_paid", "payment_failed", "subscription_canceled"}),
    "surveys": frozenset({"nps", "ces", "csm_sentiment"}),
}
TYPE_TOPIC: dict[str, str] = {t: topic for topic, types in TOPIC_TYPES.items() for t in types}

EVENT_ADAPTER: TypeAdapter[Event] = TypeAdapter(Event)


class InvalidEvent(ValueError):
    """An input message that breaks the contract; ``reason`` is shown in the dead-letter topic."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _explain(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors(include_url=False)[:5]:
        loc = ".".join(str(p) for p in err["loc"]) or "(message)"
        parts.append(f"{loc}: {err['msg']}")
    more = exc.error_count() - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "; ".join(parts)


def parse_event(value: bytes | None, key: bytes | None, topic_kind: str | None = None) -> Event:
    """Validate one raw Kafka message against the contract, or raise :class:`InvalidEvent`.

    ``topic_kind`` is the TopicNames field the message came from; an event type that belongs to
    another topic is rejected so that each topic keeps one meaning.
    """
    if not value:
        raise InvalidEvent("empty message value")
    try:
        event = EVENT_ADAPTER.validate_json(value)
    except ValidationError as exc:
        raise InvalidEvent(_explain(exc)) from None
    if topic_kind is not None and event.type not in TOPIC_TYPES[topic_kind]:
        raise InvalidEvent(
            f"type: {event.type!r} does not belong on the {topic_kind} topic "
            f"(expected one of {sorted(TOPIC_TYPES[topic_kind])})"
        )
    if key is None:
        raise InvalidEvent("message key is missing: it must be the account_id")
    if key != event.account_id.encode():
        raise InvalidEvent(
            f"message key {key[:100].decode(errors='replace')!r} does not match "
            f"account_id {event.account_id!r}"
        )
    return event
