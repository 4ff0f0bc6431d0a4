"""What happens to one account: fold an event, evaluate the account at an event time.

Pure (no Kafka, no Redis, no clock). :mod:`streams.driver` decides *when* accounts are evaluated (in
event-time order, per partition); this module decides *what* an evaluation does.

Every account has a ``next_due`` time: the next UTC midnight (all windows move by whole days) or an
earlier rule timer (``for``, ``keep_firing_for``, ``cooldown``), so an account that sends nothing is
still re-evaluated when, say, 14 days without a login have passed. An account whose every window has
emptied (no event for longer than the state's horizon) stops falling due until its next event: nothing
about it can change day by day any more, and an old event must never make the worker walk years of
midnights.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from rules.engine import RuleSet, evaluate, next_rule_due
from rules.model import AlertEvent
from streams.core.aggregate import apply_event
from streams.core.cards import CardSchedule
from streams.core.events import BaseEvent
from streams.core.metrics import AccountMetrics, Portfolio
from streams.core.scoring import ScoringConfig
from streams.core.snapshot import HealthChange, HealthSnapshot, assess, remember
from streams.core.state import DAY_S, HORIZON_DAYS, MAX_USERS, AccountState

if TYPE_CHECKING:
    from streams.settings import Settings


@dataclass
class Evaluation:
    snapshot: HealthSnapshot
    change: HealthChange | None
    alerts: list[AlertEvent]


@dataclass
class Engine:
    scoring: ScoringConfig
    rules: RuleSet
    dedupe_window: int = 64
    #: Users remembered per account (HEALTHMON_MAX_USERS_PER_ACCOUNT; docs/processing.md).
    max_users: int = MAX_USERS
    #: The cards promoted over event time (streams/core/cards.py); None: ``scoring`` throughout. Set
    #: by the worker from the card topic; an evaluation scores with the card in force at its ``as_of``.
    cards: CardSchedule | None = None
    #: The latest ``as_of`` evaluated (for the card follower's warning about a card that came late).
    reached: int | None = None

    def __post_init__(self) -> None:
        self.key_features = frozenset(self.scoring.metrics.key_features)

    @classmethod
    def configured(cls, s: Settings, scoring: ScoringConfig, rules: RuleSet) -> Engine:
        """The engine as the settings shape it: the worker, evaluate and shadow fold alike."""
        return cls(scoring, rules, dedupe_window=s.dedupe_window, max_users=s.max_users_per_account)

    def card_at(self, as_of: int) -> ScoringConfig:
        """The card in force at event time ``as_of``: a function of event time, never of wall time."""
        return self.scoring if self.cards is None else self.cards.at(as_of)

    def apply(self, state: AccountState, event: BaseEvent, partition: int) -> bool:
        if state.partition != partition:  # a pydantic attribute write costs a microsecond, per event
            state.partition = partition
        return apply_event(
            state,
            event,
            key_features=self.key_features,
            dedupe_window=self.dedupe_window,
            max_users=self.max_users,
        )

    def evaluate(
        self,
        state: AccountState,
        as_of: int,
        portfolio: Portfolio | None = None,
        metrics: AccountMetrics | None = None,
    ) -> Evaluation:
        """Score the account at ``as_of`` and advance its rules; sets its next due time.

        ``portfolio``: the partition's portfolio in force (the driver freezes one per UTC day), for the
        portfolio-relative measures. ``metrics``: the account's raw metrics at ``as_of`` if the caller
        computed them already (used only if ``as_of`` stands).

        Transactional: if scoring or a rule raises, the state is left as it was (the caller keeps
        the folded events and retries at the next due time); rule states change only together with
        the alerts they imply."""
        if state.last_eval_at is not None and state.last_eval_at > as_of:
            as_of, metrics = state.last_eval_at, None  # an account's time never runs backwards
        card = self.card_at(as_of)
        changed_from = None  # per evaluation: only a schedule of promoted cards can change the card
        if self.cards is not None and state.last_eval_at is not None:
            before = self.cards.at(state.last_eval_at).card_version
            changed_from = before if before != card.card_version else None
        snapshot, change = assess(state, as_of, card, portfolio, metrics, card_changed_from=changed_from)
        rule_states, alerts = evaluate(self.rules, snapshot, state.rules, as_of)
        # Nothing below raises: commit.
        remember(state, snapshot, change)
        state.rules = rule_states
        state.last_eval_at = as_of
        if self.reached is None or as_of > self.reached:
            self.reached = as_of
        state.next_due = self.next_due(state, as_of)
        return Evaluation(snapshot, change, alerts)

    def preview(self, state: AccountState, as_of: int, portfolio: Portfolio | None = None) -> HealthSnapshot:
        """The snapshot an evaluation at ``as_of`` would publish, changing nothing (rules, trends):
        published while the account's evaluation slot is still open and no input is waiting."""
        at = max(as_of, state.last_eval_at or 0)
        snapshot, _ = assess(state, at, self.card_at(at), portfolio)
        return snapshot

    def next_due(self, state: AccountState, as_of: int) -> int | None:
        rule_due = next_rule_due(self.rules, state.rules, as_of)
        midnight: int | None = (as_of // DAY_S + 1) * DAY_S
        last = state.last_event_at
        if last is not None and as_of // DAY_S - last // DAY_S > HORIZON_DAYS:
            midnight = None  # dormant: every window is empty, nothing changes until the next event
        if midnight is None or (rule_due is not None and rule_due < midnight):
            return rule_due
        return midnight
