"""The routing configuration (YAML, validated at start-up): receivers and a routing tree.

Like Alertmanager: a tree of routes matched on alert labels, first match wins unless ``continue``.
Receivers may target the alert's own account: ``to: [account_csm]`` sends email to the account's CSM,
and a Slack receiver posts to the account's ``slack_channel`` when ``channel_webhooks`` maps it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from rules.model import Duration
from streams.config import load_yaml

DEFAULT_ROUTING = Path(__file__).with_name("routing.default.yaml")
EMAIL_RE = re.compile(r"^[^@\s<>,;\"\\]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _secret(value: Any, env: str | None) -> SecretStr | None:
    if env:
        got = os.environ.get(env)
        if not got:
            raise ValueError(f"environment variable {env} is not set")
        return SecretStr(got)
    return value


class SlackConfig(_Strict):
    webhook_url: SecretStr | None = None
    webhook_url_env: str | None = None
    #: Slack channel of the account (cs.accounts slack_channel) -> incoming webhook for that channel.
    channel_webhooks: dict[str, SecretStr] = Field(default_factory=dict)
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _url(self) -> SlackConfig:
        url = _secret(self.webhook_url, self.webhook_url_env)
        if url is None and not self.channel_webhooks:
            raise ValueError("a slack receiver needs webhook_url, webhook_url_env or channel_webhooks")
        object.__setattr__(self, "webhook_url", url)
        return self


class EmailConfig(_Strict):
    #: Addresses, or ``account_csm`` for the CSM of each alert's account.
    to: list[str] = Field(min_length=1)
    sender: str = "healthmon@localhost"

    @field_validator("to")
    @classmethod
    def _addresses(cls, v: list[str]) -> list[str]:
        for addr in v:
            if addr != "account_csm" and not EMAIL_RE.match(addr):
                raise ValueError(f"{addr!r} is not an email address")
        return v


class WebhookConfig(_Strict):
    url: str = Field(pattern=r"^https?://")
    secret: SecretStr | None = None
    secret_env: str | None = None
    timeout_s: float = Field(default=10.0, gt=0)

    @model_validator(mode="after")
    def _secret(self) -> WebhookConfig:
        secret = _secret(self.secret, self.secret_env)
        if secret is None:
            raise ValueError("a webhook receiver needs secret or secret_env (bodies are signed)")
        object.__setattr__(self, "secret", secret)
        return self


class AlertmanagerConfig(_Strict):
    """A Prometheus Alertmanager (its v2 API) for teams that already route alerts there."""

    url: str = Field(pattern=r"^https?://")
    #: Alertmanager resolves an alert it has not heard about for this long; a still-firing group is
    #: re-posted every repeat_interval, so keep this longer than that.
    ends_after: Duration = 86400
    timeout_s: float = Field(default=10.0, gt=0)


class Receiver(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    slack: SlackConfig | None = None
    email: EmailConfig | None = None
    webhook: WebhookConfig | None = None
    alertmanager: AlertmanagerConfig | None = None
    #: At most this many notifications a second to this receiver (Slack allows about one).
    rate_per_s: float = Field(default=1.0, gt=0)
    send_resolved: bool = True

    @model_validator(mode="after")
    def _one_channel(self) -> Receiver:
        if sum(x is not None for x in (self.slack, self.email, self.webhook, self.alertmanager)) != 1:
            raise ValueError("a receiver has exactly one of slack, email, webhook, alertmanager")
        return self

    @property
    def channel(self) -> str:
        if self.alertmanager:
            return "alertmanager"
        return "slack" if self.slack else "email" if self.email else "webhook"


class Route(_Strict):
    receiver: str | None = None
    #: Label equality matchers (all must hold); ``match_re`` takes regular expressions.
    match: dict[str, str] = Field(default_factory=dict)
    match_re: dict[str, Annotated[str, Field(min_length=1)]] = Field(default_factory=dict)
    continue_: bool = Field(default=False, alias="continue")
    group_by: list[str] | None = None
    group_wait: Duration | None = None
    group_interval: Duration | None = None
    repeat_interval: Duration | None = None
    routes: list[Route] = Field(default_factory=list)

    @field_validator("match_re")
    @classmethod
    def _regexes(cls, v: dict[str, str]) -> dict[str, str]:
        for label, pattern in v.items():
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"match_re.{label}: {exc}") from None
        return v


class RoutingConfig(_Strict):
    receivers: list[Receiver] = Field(min_length=1)
    route: Route
    #: An alert whose account has no known CSM waits this long for the profile (looked up in the read
    #: model) before it goes to ``fallback_receiver`` (or, without one, is routed as it is).
    profile_wait: Duration = 15 * 60
    fallback_receiver: str | None = None
    #: A firing alert nothing refreshed or resolved for this long is forgotten (a rule removed).
    firing_ttl: Duration = 7 * 86400
    #: Links in notifications: ``{link_base_url}/accounts/{account_id}``; empty for none.
    link_base_url: str = Field(default="", pattern=r"^(https?://\S+)?$")

    @model_validator(mode="after")
    def _receivers_exist(self) -> RoutingConfig:
        names = [r.name for r in self.receivers]
        if len(set(names)) != len(names):
            raise ValueError("receiver names must be unique")
        if self.route.receiver is None:
            raise ValueError("the top-level route needs a receiver (the default)")

        def walk(route: Route) -> None:
            if route.receiver is not None and route.receiver not in names:
                raise ValueError(f"route receiver {route.receiver!r} is not defined")
            for child in route.routes:
                walk(child)

        walk(self.route)
        if self.fallback_receiver is not None and self.fallback_receiver not in names:
            raise ValueError(f"fallback_receiver {self.fallback_receiver!r} is not defined")
        return self

    def receiver(self, name: str) -> Receiver:
        return next(r for r in self.receivers if r.name == name)


def load_routing(path: Path | str | None = None) -> RoutingConfig:
    return load_yaml(path or DEFAULT_ROUTING, RoutingConfig)
