"""The ingest mappings: ONE YAML file, validated at start (a bad file fails naming file, line and field).

Which Segment ``track`` events are logins, feature uses or sessions, which property names the feature,
where each source finds the account: all of that is configuration, never code. A source is enabled by
its section in the file; its secret comes from the settings (never from this file).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from streams.config import load_yaml

DEFAULT_CONFIG = Path(__file__).with_name("ingest.default.yaml")

WebhookName = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")]
Priority = Literal["low", "normal", "high", "urgent"]
_PRIORITIES: dict[str, Priority] = {"low": "low", "normal": "normal", "high": "high", "urgent": "urgent"}


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TrackRule(_Model):
    """What one Segment ``track`` event name becomes."""

    type: Literal["login", "feature_used", "session"]
    #: feature_used: the feature's name, from a property path (``properties.feature``) ...
    feature_from: str | None = None
    #: ... or a fixed name (``Report Created`` -> ``reports``).
    feature: str | None = None
    #: session: the path of the duration, and its unit.
    duration_from: str | None = None
    duration_unit: Literal["s", "ms", "min"] = "s"

    @model_validator(mode="after")
    def _complete(self) -> TrackRule:
        if self.type == "feature_used" and (self.feature_from is None) == (self.feature is None):
            raise ValueError(
                "a feature_used rule needs exactly one of feature_from (a path) or feature (a name)"
            )
        if self.type != "feature_used" and (self.feature_from or self.feature):
            raise ValueError(f"feature/feature_from only apply to feature_used, not {self.type}")
        if self.type == "session" and not self.duration_from:
            raise ValueError("a session rule needs duration_from (the path of the duration)")
        if self.type != "session" and self.duration_from:
            raise ValueError(f"duration_from only applies to session, not {self.type}")
        return self


class GroupMapping(_Model):
    """Segment ``group`` calls as ``account`` events: the trait that holds each field."""

    name: str = "name"
    segment: str = "plan"
    #: trait value -> contract segment (values already smb/mid_market/enterprise pass as they are).
    segment_values: dict[str, Literal["smb", "mid_market", "enterprise"]] = Field(default_factory=dict)
    csm_name: str = "csm_name"
    csm_email: str = "csm_email"
    signed_up_at: str = "createdAt"


class SegmentConfig(_Model):
    #: Where a message's account is found, the first present wins (``context.groupId`` is Segment's way).
    account_from: list[str] = Field(default_factory=lambda: ["context.groupId"], min_length=1)
    #: track event name -> rule; names not listed are accepted and ignored.
    track: dict[str, TrackRule] = Field(default_factory=dict)
    #: group calls become account events only when this is set.
    group: GroupMapping | None = None


class StripeConfig(_Model):
    #: The metadata key on the subscription (and so on its invoices) that holds the healthmon account id.
    account_metadata_key: str = "healthmon_account_id"
    #: Stripe customer id -> account id, for customers without the metadata key.
    customers: dict[str, str] = Field(default_factory=dict)
    #: Without either: use the Stripe customer id itself as the account id (else: dead letter).
    customer_id_fallback: bool = False
    #: The products (or price lookup keys) whose quantity is the seat count; empty: every licensed item's.
    seat_products: list[str] = Field(default_factory=list)


class ZendeskConfig(_Model):
    #: Where the ticket's account is found in the payload (the organization, by default).
    account_from: list[str] = Field(
        default_factory=lambda: ["detail.organization_id", "organization_id"], min_length=1
    )
    #: Zendesk organization (or whatever account_from finds) -> account id; values not listed pass as they are.
    accounts: dict[str, str] = Field(default_factory=dict)
    priorities: dict[str, Priority] = Field(default_factory=lambda: dict(_PRIORITIES))
    #: The priority of a ticket created without one.
    default_priority: Priority = "normal"


class WebhookField(_Model):
    """One contract field of a generic webhook: a path in the payload or a fixed value."""

    path: str | None = None
    value: str | int | float | None = None
    #: A value read from ``path`` -> the contract's value (e.g. a survey tool's "Good" -> 5).
    map: dict[str, str | int | float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one(self) -> WebhookField:
        if (self.path is None) == (self.value is None):
            raise ValueError("give exactly one of path or value")
        return self


class WebhookConfig(_Model):
    """A generic signed JSON webhook (other help desks, survey tools): POST /v1/webhooks/{name}."""

    type: Literal[
        "ticket_opened",
        "ticket_replied",
        "ticket_resolved",
        "ticket_reopened",
        "csat",
        "nps",
        "ces",
        "csm_sentiment",
        "account",
        "meeting",  # contract 1.1: a CRM's meetings and logged calls / e-mails
        "csm_touch",
    ]
    #: contract field -> where it comes from; event_id, account_id and occurred_at are required.
    fields: dict[str, WebhookField | str]
    #: A JSON array of such objects at this path (one event each) instead of one object per request.
    items_from: str | None = None

    @model_validator(mode="after")
    def _required(self) -> WebhookConfig:
        missing = [f for f in ("event_id", "account_id", "occurred_at") if f not in self.fields]
        if missing:
            raise ValueError(f"fields must map {', '.join(missing)}")
        return self

    def field(self, name: str) -> WebhookField:
        spec = self.fields[name]
        return WebhookField(path=spec) if isinstance(spec, str) else spec


class IngestConfig(_Model):
    segment: SegmentConfig | None = None
    stripe: StripeConfig | None = None
    zendesk: ZendeskConfig | None = None
    #: name (the URL's last part) -> mapping.
    webhooks: dict[WebhookName, WebhookConfig] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _some_source(self) -> IngestConfig:
        if not (self.segment or self.stripe or self.zendesk or self.webhooks):
            raise ValueError("no source is configured (segment, stripe, zendesk or webhooks)")
        return self


def load_config(path: Path | None) -> IngestConfig:
    """The mappings from ``path`` (default: the shipped file); ConfigError names file, line and field."""
    return load_yaml(path or DEFAULT_CONFIG, IngestConfig)
