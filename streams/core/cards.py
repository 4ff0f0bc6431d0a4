"""Scorecards in force over event time: the promotion flow's records and the schedule scoring reads
(issue 26, item 3; docs/promotion.md).

Every decision about a card is a :class:`CardRecord` on one compacted, single-partition topic
(``cs.scorecards``): a candidate *proposed* (with its verdict), a proposal *accepted* from an event time
on, a promotion *rolled back* from an event time on. Each record has its own key (version, status,
effective time), so compaction only folds a retried write of the same record and the whole history
stays. The card in force at event time ``t`` is the card of the latest accepted or rolled-back record
with ``effective_from <= t`` (a rollback carries the card it restores), else the configured base card.

Pure: records in, a :class:`CardSchedule` out; scoring asks the schedule for the card of an
evaluation's ``as_of``, never the clock, so a replay of the same input and records scores alike.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

from streams.core.promotion import Verdict
from streams.core.scoring import ScoringConfig

CardStatus = Literal["proposed", "accepted", "rolled_back"]
#: The key of the one change event a promotion or rollback publishes on ``cs.health.changes``
#: (account ids of this form are reserved).
CARD_CHANGE_KEY = b"__scorecard__"


class CardRecord(BaseModel):
    """One decision about a card. ``config`` is always the card in force from ``effective_from`` on
    (for a rollback, the card it restores, named by ``restores``); ``recorded_at`` is wall time, for
    people only: scoring never reads it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    version: str = Field(min_length=1, max_length=64)
    config: ScoringConfig
    status: CardStatus
    #: Event time (s) from which the record's card is in force; None for a proposal.
    effective_from: int | None = None
    #: rolled_back: the version back in force.
    restores: str | None = None
    by: str = Field(min_length=1, max_length=254)
    reason: str = Field(default="", max_length=1000)
    #: The verdict figures that proposed the card (held-out AUC and intervals, band changes).
    verdict: Verdict | None = None
    recorded_at: AwareDatetime

    @model_validator(mode="after")
    def _consistent(self) -> CardRecord:
        if (self.effective_from is None) != (self.status == "proposed"):
            raise ValueError("effective_from is required for accepted and rolled_back records, only there")
        named = self.restores if self.status == "rolled_back" else self.version
        if named is None or named != self.config.card_version:
            raise ValueError(f"the record's card has version {self.config.card_version}, not {named}")
        return self

    @property
    def key(self) -> bytes:
        """Unique per decision, so that the compacted topic keeps every one (a retry overwrites itself)."""
        return f"{self.version}|{self.status}|{self.effective_from or ''}".encode()


class CardChange(BaseModel):
    """The one change event a promotion or rollback publishes on ``cs.health.changes`` (key
    :data:`CARD_CHANGE_KEY`): why the band changes that follow happen. Per-account change events
    under the new card name it (``HealthChange.scorecard_version``, ``scorecard_changed_from``)."""

    kind: Literal["scorecard"] = "scorecard"
    action: Literal["accepted", "rolled_back"]
    as_of: datetime
    version: str
    previous_version: str
    by: str
    reason: str
    #: Accounts whose band the candidate would change, by "from->to", as the verdict counted them.
    band_changes: dict[str, int] = Field(default_factory=dict)
    accounts_changing_band: int | None = None


class CardRefused(ValueError):
    """A decision the book refuses; ``status`` is the HTTP status that says why (404 or 409)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class CardSchedule:
    """The card in force at each event time: ``base`` until the first entry, then each entry's card
    from its ``effective_from`` (entries sorted by time, ties in the order given)."""

    def __init__(self, base: ScoringConfig, entries: Sequence[tuple[int, ScoringConfig]] = ()) -> None:
        ordered = sorted(enumerate(entries), key=lambda ie: (ie[1][0], ie[0]))
        self.base = base
        self.starts = [t for _, (t, _) in ordered]
        self.cards = [c for _, (_, c) in ordered]

    def at(self, t: int) -> ScoringConfig:
        i = bisect.bisect_right(self.starts, t) - 1
        return self.base if i < 0 else self.cards[i]

    def since(self, t: int) -> int | None:
        """When the card in force at ``t`` took effect (None: the base card)."""
        i = bisect.bisect_right(self.starts, t) - 1
        return None if i < 0 else self.starts[i]

    def __len__(self) -> int:
        return len(self.starts)


@dataclass
class CardBook:
    """The records of the card topic in topic order, and the decisions they allow."""

    base: ScoringConfig
    records: list[CardRecord] = field(default_factory=list)

    def add(self, records: Iterable[CardRecord]) -> None:
        self.records.extend(records)

    @property
    def changes(self) -> list[CardRecord]:
        """The accepted and rolled-back records, in effective-time order (ties: topic order)."""
        done = [r for r in self.records if r.status != "proposed"]
        return sorted(done, key=lambda r: r.effective_from or 0)

    def schedule(self) -> CardSchedule:
        return CardSchedule(self.base, [(r.effective_from or 0, r.config) for r in self.changes])

    def standing(self) -> list[CardRecord]:
        """The promotions not rolled back, oldest first: a rollback undoes the last of them."""
        stack: list[CardRecord] = []
        for r in self.changes:
            if r.status == "accepted":
                stack.append(r)
            elif stack:
                stack.pop()
        return stack

    def latest(self) -> tuple[ScoringConfig, int | None]:
        """The card of the last decision (in force now, or from a time the stream has not reached)."""
        changes = self.changes
        return (changes[-1].config, changes[-1].effective_from) if changes else (self.base, None)

    def proposed(self) -> CardRecord | None:
        """The open proposal: the last proposed record, unless its version was accepted after it."""
        for i in range(len(self.records) - 1, -1, -1):
            r = self.records[i]
            if r.status == "proposed":
                later = self.records[i + 1 :]
                if any(x.status == "accepted" and x.version == r.version for x in later):
                    return None
                return r
        return None

    def _check_time(self, at: int) -> None:
        _, since = self.latest()
        if since is not None and at < since:
            raise CardRefused(
                409,
                f"effective_from {at} is before the last change ({since}): the schedule only moves forward",
            )

    def accept(self, version: str, at: int, by: str, reason: str, now: datetime) -> CardRecord:
        """The record that puts the open proposal ``version`` in force from event time ``at``."""
        known = {r.version for r in self.records}
        if version not in known:
            raise CardRefused(404, f"no card {version} on the card topic")
        open_ = self.proposed()
        if open_ is None or open_.version != version:
            raise CardRefused(
                409, f"card {version} is not the open proposal; only a proposed card can be accepted"
            )
        self._check_time(at)
        current, _ = self.latest()
        if open_.config.metrics != current.metrics:
            raise CardRefused(
                409, "the card's metrics section differs from the card in force: events are folded with it"
            )
        return CardRecord(
            version=version,
            config=open_.config,
            status="accepted",
            effective_from=at,
            by=by,
            reason=reason,
            verdict=open_.verdict,
            recorded_at=now,
        )

    def rollback(self, at: int, by: str, reason: str, now: datetime) -> CardRecord:
        """The record that undoes the last standing promotion from event time ``at``: the card in
        force before it comes back."""
        stack = self.standing()
        if not stack:
            raise CardRefused(409, "nothing to roll back: the configured card is in force")
        self._check_time(at)
        restored = stack[-2].config if len(stack) > 1 else self.base
        return CardRecord(
            version=stack[-1].version,
            config=restored,
            status="rolled_back",
            effective_from=at,
            restores=restored.card_version,
            by=by,
            reason=reason,
            recorded_at=now,
        )

    def propose(
        self, config: ScoringConfig, verdict: Verdict | None, by: str, reason: str, now: datetime
    ) -> CardRecord:
        """The record that proposes ``config`` (a human, or automatic promotion, accepts it later)."""
        return CardRecord(
            version=config.card_version,
            config=config,
            status="proposed",
            by=by,
            reason=reason,
            verdict=verdict,
            recorded_at=now,
        )

    def change_event(self, record: CardRecord) -> CardChange:
        """The explaining change event of an accepted or rolled-back ``record`` (before it is added)."""
        assert record.status != "proposed" and record.effective_from is not None
        previous, _ = self.latest()
        verdict = record.verdict if record.status == "accepted" else None
        return CardChange(
            action=record.status,
            as_of=datetime.fromtimestamp(record.effective_from, UTC),
            version=record.config.card_version,
            previous_version=previous.card_version,
            by=record.by,
            reason=record.reason,
            band_changes=verdict.band_changes if verdict else {},
            accounts_changing_band=verdict.accounts_changing_band if verdict else None,
        )
