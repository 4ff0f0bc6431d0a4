"""Per-account metrics at an event time ``as_of``, computed from :class:`AccountState`.

Pure: no I/O and no clock. A window of N days is the N UTC days ending with ``as_of``'s day, so a silent
account keeps ageing as the engine's event time moves on. Formulas follow the seed documents; each is
written next to its field (and in docs/metrics.md). ``None`` means "no data", never zero.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from itertools import zip_longest
from types import SimpleNamespace
from typing import Any

import cramjam
import msgspec
from pydantic import BaseModel, Field

from streams.core.state import (
    _DAY_BITS,
    _DAY_MASK,
    DAY_S,
    HORIZON_DAYS,
    NPS_HORIZON_DAYS,
    AccountState,
    C,
    bitmap_window,
)

#: The baseline of ``usage_vs_baseline_pct``: the days before the last 7, at most 28, at least 7.
BASELINE_MAX_DAYS = 28
BASELINE_MIN_DAYS = 7
#: Times from sign-up (time to first value, to onboard) are measured only for an account healthmon knew
#: within this many days of its sign-up: one first seen years later has its first use here, not its first.
KNOWN_SINCE_SIGNUP_DAYS = 31


#: The seed's review cadences (seed 001: QBRs for the larger accounts); small businesses have none.
_QBR_CADENCE_DAYS: dict[str, int | None] = {"enterprise": 90, "mid_market": 180}


class MetricsConfig(BaseModel):
    """Metric definitions that are the customer's choice, not ours."""

    key_features: list[str] = Field(default_factory=list)
    #: "Used to log in daily": logins on at least this many of the 14 days before the last login.
    daily_habit_days: int = Field(default=10, ge=1, le=14)
    #: Days of silence after which a daily-login account counts as gone silent.
    silent_after_days: int = Field(default=7, ge=1)
    #: A ticket spike: at least this many tickets in 7 days and this many times the prior weekly mean.
    spike_min_tickets: int = Field(default=3, ge=1)
    spike_factor: float = Field(default=2.0, gt=1)
    #: The CSM's read counts half as much after this many days, and not at all after csm_sentiment_max_days.
    csm_sentiment_half_life_days: float = Field(default=30, gt=0)
    csm_sentiment_max_days: int = Field(default=180, ge=1)
    #: Days between business reviews (QBR/EBR) by segment; a segment not named (or null) has no cadence.
    qbr_cadence_days: dict[str, int | None] = Field(default_factory=lambda: dict(_QBR_CADENCE_DAYS))
    #: An executive touch counts for this many days (at most the state's HORIZON_DAYS of meetings).
    exec_touch_days: int = Field(default=90, ge=1, le=HORIZON_DAYS)


class AccountMetrics(BaseModel):
    # --- usage
    logins_7d: int = 0
    logins_30d: int = 0
    active_users_1d: int = 0
    active_users_7d: int = 0
    active_users_30d: int = 0
    dau_mau: float | None = None  # mean daily distinct users over 30 d / distinct users in 30 d
    adoption_rate: float | None = None  # active users 30 d / seats, capped at 1
    adoption_rate_7d: float | None = None  # active users 7 d / seats, capped at 1
    feature_breadth: float | None = None  # key features used in 30 d / key features
    avg_session_minutes_30d: float | None = None  # session seconds / sessions, in minutes
    usage_trend_7d_pct: float | None = None  # active user-days, last 7 d vs the 7 d before, in %
    usage_trend_30d_pct: float | None = None  # the same for 30 d vs the 30 d before
    days_since_last_login: int | None = None
    daily_login_lapsed: bool = False  # logged in daily, then silent for silent_after_days
    ttfv_days: float | None = None  # sign-up to first key-feature use
    onboarded: bool | None = None  # every key feature used (None: the scorecard names no key features)
    onboarding_days: float | None = None  # sign-up to onboarding completed
    # --- usage measures that carry signal in any product (docs/metrics.md, "Product-neutral measures")
    tenure_days: int | None = None  # days since sign-up (or since the first event without a profile)
    active_days_30d: int = 0  # days in the last 30 with any usage event
    active_user_days_30d: int = 0  # sum over users of their active days in 30 d
    usage_vs_baseline_pct: float | None = None  # last 7 d vs the account's own daily rate before them
    features_used_30d: int = 0  # distinct features used in 30 d
    feature_breadth_own: float | None = None  # features used in 30 d / features the account used in 90 d
    feature_breadth_catalog: float | None = None  # features used in 30 d / features seen in the portfolio
    usage_percentile: float | None = None  # active user-days 30 d, percentile within the portfolio (0-1)
    logins_percentile: float | None = None  # logins 30 d, percentile within the portfolio (0-1)
    breadth_percentile: float | None = None  # features used 30 d, percentile within the portfolio (0-1)
    # --- support
    tickets_opened_7d: int = 0
    tickets_opened_30d: int = 0
    open_tickets: int = 0
    open_urgent_tickets: int = 0
    first_response_hours_30d: float | None = None
    resolution_hours_30d: float | None = None
    fcr_rate_90d: float | None = None  # resolved with <= 1 agent reply and not reopened / resolved
    sentiment_mean_30d: float | None = None
    negative_sentiment_share_30d: float | None = None
    csat_90d: float | None = None  # % of CSAT answers that are 4 or 5
    csat_responses_90d: int = 0  # answers behind csat_90d (portfolio CSAT weighs accounts by it)
    ticket_spike_ratio: float | None = None  # tickets last 7 d / weekly mean of the 4 weeks before
    ticket_spike: bool = False
    has_tickets: bool = False
    # --- outcomes
    nps: float | None = None  # % promoters (9-10) - % detractors (0-6), each user's latest in 180 d
    nps_responses: int = 0
    nps_latest_score: int | None = None
    nps_latest_days_ago: int | None = None
    csat_latest_score: int | None = None
    csat_latest_days_ago: int | None = None
    ces_mean_90d: float | None = None
    ces_responses_90d: int = 0  # answers behind ces_mean_90d
    csm_sentiment: float | None = None  # the CSM's latest read (-1..1) x 0.5 ** (age days / half-life)
    csm_sentiment_days_ago: int | None = None
    # --- relationship and engagement (meetings and CSM touches; all null without any such event)
    has_engagement: bool = False  # any meeting or CSM touch recorded
    days_since_last_meeting: int | None = None  # last held meeting (or since the first record if none)
    days_since_qbr: int | None = None  # last held QBR/EBR
    qbr_cadence_days: int | None = None  # the segment's cadence (metrics.qbr_cadence_days)
    qbr_overdue_days: int | None = None  # days past the cadence since the last QBR (0 = not overdue)
    exec_touch_90d: bool = False  # an executive attended a held meeting or was contacted, in 90 d
    days_since_exec_touch: int | None = None
    days_since_csm_touch: int | None = None
    meetings_held_90d: int = 0
    meetings_cancelled_90d: int = 0
    meeting_cancel_rate_90d: float | None = None  # cancelled / (held + cancelled) over 90 d
    has_executive_sponsor: bool | None = None  # the profile names one (null without a profile)
    # --- financial
    mrr: Decimal | None = None
    mrr_30d_ago: Decimal | None = None
    mrr_change_30d: Decimal | None = None  # expansion (> 0) or contraction (< 0)
    mrr_change_30d_pct: float | None = None
    seats: int | None = None
    plan: str | None = None
    days_to_renewal: int | None = None
    unpaid_invoices: int = 0
    unpaid_amount: Decimal = Decimal(0)
    days_past_due: int | None = None  # since the oldest unpaid failed invoice; 0 when all paid
    canceled: bool = False
    has_billing: bool = False


def ratio(num: float, den: float) -> float | None:
    return num / den if den else None


def _pct_change(now: float, before: float) -> float | None:
    return (now - before) / before * 100 if before else None


def _last_active_day(packed: int, today: int) -> int | None:
    """The latest active day on or before ``today`` (later days may already be in the state)."""
    bits = bitmap_window(packed, today, 90)
    return None if not bits else today - ((bits & -bits).bit_length() - 1)


def _mrr_at(history: list[tuple[int, str]], ts: int) -> Decimal | None:
    value = None
    for at, mrr in history:
        if at > ts:
            break
        value = Decimal(mrr)
    return value


#: Field defaults, to start each computation from (every default is an immutable scalar).
_DEFAULTS = {name: f.default for name, f in AccountMetrics.model_fields.items()}


def compute_metrics(state: AccountState, as_of: int, cfg: MetricsConfig) -> AccountMetrics:
    # Filled in as a plain namespace and built once at the end: a validated pydantic attribute
    # assignment costs about a microsecond, and there are ~60 of them per evaluation.
    m: Any = SimpleNamespace(**_DEFAULTS)
    today = as_of // DAY_S

    # Windowed counters: column sums over the day buckets in each window (zip/sum run in C).
    ages = [(today - day, b) for day, b in state.days.items()]
    zero = [0] * len(C)

    def window(days: int) -> list[int]:
        rows = [b for age, b in ages if 0 <= age < days]
        if not rows:
            return zero
        # Buckets are as long as their last counter in use: pad the sums to every counter.
        sums = [sum(col) for col in zip_longest(*rows, fillvalue=0)]
        return sums + zero[len(sums) :]

    w7, w30, w90 = window(7), window(30), window(90)
    prior_4w_tickets = sum(
        b[C.TICKETS_OPENED] for age, b in ages if 7 <= age < 35 and len(b) > C.TICKETS_OPENED
    )

    # --- usage
    m.logins_7d, m.logins_30d = w7[C.LOGINS], w30[C.LOGINS]
    # A trend needs history for the whole earlier window, or a new account's first weeks look like growth.
    known_since = state.first_event_at // DAY_S if state.first_event_at is not None else today
    # Against the account's own baseline: the 7 days before this week, up to 28, as far as history goes.
    base_days = min(BASELINE_MAX_DAYS, today - 6 - known_since)
    base_mask = (1 << base_days) - 1 if base_days >= BASELINE_MIN_DAYS else 0
    # One pass over the users, each bitmap aligned once (bit 0 = today) and every window a shift and
    # a mask of it: a big account has thousands of users and is evaluated every hour it is active.
    active_30 = active_7 = active_1 = 0
    user_days_30 = user_days_7 = user_days_prev_7 = user_days_prev_30 = base = any_day = 0
    for packed in state.users.values():
        shift = today - (packed & _DAY_MASK)  # bitmap_aligned(packed, today), inline: per user
        aligned = packed >> _DAY_BITS << shift if shift >= 0 else packed >> _DAY_BITS >> -shift
        bits30 = aligned & 0x3FFFFFFF
        if bits30:
            active_30 += 1
            user_days_30 += bits30.bit_count()
            any_day |= bits30
            bits7 = bits30 & 0x7F
            if bits7:
                active_7 += 1
                user_days_7 += bits7.bit_count()
                active_1 += bits7 & 1
        user_days_prev_7 += ((aligned >> 7) & 0x7F).bit_count()
        user_days_prev_30 += ((aligned >> 30) & 0x3FFFFFFF).bit_count()
        if base_mask:
            base += ((aligned >> 7) & base_mask).bit_count()
    m.active_users_30d, m.active_users_7d, m.active_users_1d = active_30, active_7, active_1
    if m.active_users_30d:
        m.dau_mau = (user_days_30 / 30) / m.active_users_30d
    if state.seats:
        m.adoption_rate = min(1.0, m.active_users_30d / state.seats)
        m.adoption_rate_7d = min(1.0, m.active_users_7d / state.seats)
    if cfg.key_features and (state.users or state.features):
        used = sum(1 for f in cfg.key_features if 0 <= today - state.features.get(f, -(10**9)) < 30)
        m.feature_breadth = used / len(cfg.key_features)
    if w30[C.SESSIONS]:
        m.avg_session_minutes_30d = w30[C.SESSION_SECONDS] / w30[C.SESSIONS] / 60
    if known_since <= today - 13:
        m.usage_trend_7d_pct = _pct_change(user_days_7, user_days_prev_7)
    if known_since <= today - 59:
        m.usage_trend_30d_pct = _pct_change(user_days_30, user_days_prev_30)
    if base_mask and base:
        m.usage_vs_baseline_pct = ((user_days_7 / 7) / (base / base_days) - 1) * 100
    m.active_user_days_30d = user_days_30
    m.active_days_30d = any_day.bit_count()
    signed_up = state.profile.signed_up_at if state.profile is not None else state.first_event_at
    if signed_up is not None and signed_up <= as_of:
        m.tenure_days = today - signed_up // DAY_S
    m.features_used_30d = sum(1 for d in state.features.values() if 0 <= today - d < 30)
    own = sum(1 for d in state.features.values() if 0 <= today - d < HORIZON_DAYS)
    if own:
        m.feature_breadth_own = m.features_used_30d / own
    last_login_day = _last_active_day(state.login_days, today)
    if last_login_day is not None:
        # Calendar days, so that the value (and every rule on it) changes only at UTC midnight.
        m.days_since_last_login = today - last_login_day
        habit = bitmap_window(state.login_days, last_login_day, 14).bit_count()
        m.daily_login_lapsed = (
            habit >= cfg.daily_habit_days and m.days_since_last_login >= cfg.silent_after_days
        )
    elif state.last_login_at is not None and state.last_login_at // DAY_S <= today:
        m.days_since_last_login = today - state.last_login_at // DAY_S  # beyond the bitmap's 90 days
    signup = state.profile.signed_up_at if state.profile is not None else None
    known = (
        signup is not None
        and state.first_event_at is not None
        and state.first_event_at - signup <= KNOWN_SINCE_SIGNUP_DAYS * DAY_S
    )
    if known and state.first_value_at is not None and state.first_value_at <= as_of:
        assert signup is not None
        m.ttfv_days = max(0.0, (state.first_value_at - signup) / DAY_S)
    if cfg.key_features:
        done = state.onboarded_at is not None and state.onboarded_at <= as_of
        m.onboarded = done
        if done and known:
            assert state.onboarded_at is not None and signup is not None
            m.onboarding_days = max(0.0, (state.onboarded_at - signup) / DAY_S)

    # --- support
    m.has_tickets = bool(state.counts.get("ticket_opened") or state.open_tickets)
    m.tickets_opened_7d, m.tickets_opened_30d = w7[C.TICKETS_OPENED], w30[C.TICKETS_OPENED]
    opened = [t for t in state.open_tickets.values() if t[0] <= as_of]
    m.open_tickets = len(opened)
    m.open_urgent_tickets = sum(t[1] for t in opened)
    if w30[C.FIRST_RESPONSE_N]:
        m.first_response_hours_30d = w30[C.FIRST_RESPONSE_SUM_S] / w30[C.FIRST_RESPONSE_N] / 3600
    if w30[C.RESOLUTION_N]:
        m.resolution_hours_30d = w30[C.RESOLUTION_SUM_S] / w30[C.RESOLUTION_N] / 3600
    m.fcr_rate_90d = ratio(w90[C.RESOLVED_FCR], w90[C.RESOLVED])
    if w30[C.SENTIMENT_N]:
        m.sentiment_mean_30d = w30[C.SENTIMENT_SUM_MILLI] / 1000 / w30[C.SENTIMENT_N]
        m.negative_sentiment_share_30d = w30[C.SENTIMENT_NEGATIVE] / w30[C.SENTIMENT_N]
    if w90[C.CSAT_N]:
        m.csat_90d = w90[C.CSAT_SATISFIED] / w90[C.CSAT_N] * 100
        m.csat_responses_90d = w90[C.CSAT_N]
    prior_mean = prior_4w_tickets / 4
    m.ticket_spike_ratio = ratio(m.tickets_opened_7d, prior_mean)
    m.ticket_spike = m.tickets_opened_7d >= cfg.spike_min_tickets and (
        m.tickets_opened_7d >= cfg.spike_factor * prior_mean
    )

    # --- outcomes
    cutoff = as_of - NPS_HORIZON_DAYS * DAY_S
    answers = [score for at, score in state.nps.values() if cutoff < at <= as_of]
    if answers:
        m.nps_responses = len(answers)
        promoters = sum(1 for a in answers if a >= 9)
        detractors = sum(1 for a in answers if a <= 6)
        m.nps = (promoters - detractors) / len(answers) * 100
    if state.nps_latest is not None and state.nps_latest[0] <= as_of:
        m.nps_latest_score = state.nps_latest[1]
        m.nps_latest_days_ago = today - state.nps_latest[0] // DAY_S
    if state.csat_latest is not None and state.csat_latest[0] <= as_of:
        m.csat_latest_score = state.csat_latest[1]
        m.csat_latest_days_ago = today - state.csat_latest[0] // DAY_S
    if w90[C.CES_N]:
        m.ces_mean_90d = w90[C.CES_SUM] / w90[C.CES_N]
        m.ces_responses_90d = w90[C.CES_N]
    if state.csm_sentiment is not None and state.csm_sentiment[0] <= as_of:
        age = (as_of - state.csm_sentiment[0]) / DAY_S
        if age < cfg.csm_sentiment_max_days:
            m.csm_sentiment = state.csm_sentiment[1] * 0.5 ** (age / cfg.csm_sentiment_half_life_days)
            m.csm_sentiment_days_ago = int(age)

    if state.profile is not None:
        m.has_executive_sponsor = state.profile.has_executive_sponsor
    if state.engaged_since_day is not None and state.engaged_since_day <= today:
        vars(m).update(engagement_metrics(state, today, cfg))

    # --- financial (from the MRR history, so late billing events and cancellations count)
    if state.mrr_history:
        m.mrr = _mrr_at(state.mrr_history, as_of)
        m.mrr_30d_ago = _mrr_at(state.mrr_history, as_of - 30 * DAY_S)
        if m.mrr is not None and m.mrr_30d_ago is not None:
            m.mrr_change_30d = m.mrr - m.mrr_30d_ago
            if m.mrr_30d_ago:
                m.mrr_change_30d_pct = float(m.mrr_change_30d / m.mrr_30d_ago * 100)
        m.days_past_due = 0
    m.seats, m.plan = state.seats, state.plan
    if state.renewal_date is not None:
        m.days_to_renewal = state.renewal_date - today
    unpaid = [(at, amount) for at, amount in state.unpaid_invoices.values() if at <= as_of]
    if unpaid:
        m.unpaid_invoices = len(unpaid)
        m.unpaid_amount = sum((Decimal(a) for _, a in unpaid), Decimal(0))
        oldest = min(at for at, _ in unpaid)
        m.days_past_due = max(0, (as_of - oldest) // DAY_S)
    m.canceled = state.canceled_at is not None and state.canceled_at <= as_of
    m.has_billing = bool(state.mrr_history or state.unpaid_invoices or state.canceled_at is not None)
    return AccountMetrics(**vars(m))


def _days_since(day: int | None, today: int) -> int | None:
    return None if day is None or day > today else today - day


def engagement_metrics(state: AccountState, today: int, cfg: MetricsConfig) -> dict[str, Any]:
    """The relationship measures on ``today`` (a UTC day number) of an account that has any meeting or
    CSM touch (the caller checks ``engaged_since_day``; without one they stay null, so a book without
    these events drops them from the score). Reads ``engaged_since_day``, ``last_meeting_day``,
    ``last_qbr_day``, ``last_exec_day``, ``last_touch_day``, ``meetings`` and the profile's sign-up and
    segment. A QBR is owed from the last one held or, when none was recorded, from the later of sign-up
    and the first relationship record (the book's history of reviews starts there)."""
    since = state.engaged_since_day if state.engaged_since_day is not None else today
    out: dict[str, Any] = {"has_engagement": True}
    last_meeting = _days_since(state.last_meeting_day, today)
    out["days_since_last_meeting"] = last_meeting if last_meeting is not None else today - since
    out["days_since_qbr"] = _days_since(state.last_qbr_day, today)
    p = state.profile
    cadence = cfg.qbr_cadence_days.get(p.segment) if p is not None else None
    if p is not None and cadence:
        out["qbr_cadence_days"] = cadence
        owed_for = out["days_since_qbr"]
        if owed_for is None:
            owed_for = today - max(since, p.signed_up_at // DAY_S)
        out["qbr_overdue_days"] = max(0, owed_for - cadence)
    exec_days = _days_since(state.last_exec_day, today)
    out["days_since_exec_touch"] = exec_days
    out["exec_touch_90d"] = exec_days is not None and exec_days < cfg.exec_touch_days
    out["days_since_csm_touch"] = _days_since(state.last_touch_day, today)
    held = cancelled = 0
    for entry in state.meetings:
        if 0 <= today - (entry >> 1) < 90:
            if entry & 1:
                held += 1
            else:
                cancelled += 1
    out["meetings_held_90d"], out["meetings_cancelled_90d"] = held, cancelled
    out["meeting_cancel_rate_90d"] = ratio(cancelled, held + cancelled)
    return out


# --- the portfolio: where an account stands among the others -------------------------------------


class Percentiles:
    """Each account's latest value of one metric, kept sorted: an account's rank among all of them.

    Updating one account costs a bisect and a list insert/delete (O(n) memory moves, about a microsecond
    per thousand accounts), so it can be kept live. Pure: the caller owns it and passes it in.
    """

    def __init__(self, values: Iterable[float] = ()) -> None:
        """``values``: a frozen set of ranks, no account behind them (the stream engine's daily
        portfolio, rebuilt or read back whole, never updated)."""
        self._by_account: dict[str, float] = {}
        self._sorted: list[float] = sorted(float(v) for v in values)

    def __len__(self) -> int:
        return len(self._sorted)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Percentiles) and self._sorted == other._sorted

    def values(self) -> list[float]:
        """Every account's value, sorted."""
        return list(self._sorted)

    def update(self, account_id: str, value: float | None) -> None:
        old = self._by_account.pop(account_id, None)
        if old is not None:
            del self._sorted[bisect.bisect_left(self._sorted, old)]
        if value is not None:
            self._by_account[account_id] = value
            bisect.insort(self._sorted, value)

    def rank(self, value: float) -> float | None:
        """Share of the accounts below ``value``, ties counting half: 0 = lowest, 1 = highest."""
        n = len(self._sorted)
        if n < PORTFOLIO_MIN_ACCOUNTS:
            return None
        lo = bisect.bisect_left(self._sorted, value)
        hi = bisect.bisect_right(self._sorted, value)
        return (lo + 0.5 * (hi - lo)) / n


#: Below this many accounts a percentile says little: it stays null.
PORTFOLIO_MIN_ACCOUNTS = 10
#: metric in AccountMetrics -> the percentile field it feeds.
PERCENTILE_OF = {
    "active_user_days_30d": "usage_percentile",
    "logins_30d": "logins_percentile",
    "features_used_30d": "breadth_percentile",
}


#: The metrics only a portfolio can give (null where none is passed in).
PORTFOLIO_METRICS = frozenset([*PERCENTILE_OF.values(), "feature_breadth_catalog"])


@dataclass
class Portfolio:
    """Cross-account context for the portfolio-relative measures.

    ``features``: every feature seen in the portfolio and the last day it was used (the product's feature
    catalogue, learned from the stream); ``stats``: one :class:`Percentiles` per metric in PERCENTILE_OF.
    """

    features: dict[str, int] = field(default_factory=dict)
    stats: dict[str, Percentiles] = field(default_factory=lambda: {k: Percentiles() for k in PERCENTILE_OF})
    #: The event time (s) it was frozen at (:func:`portfolio_at`); None for one kept live with ``observe``.
    as_of: int | None = None
    #: The information check's result at the freeze (``scoring.information_check``), by card name: one
    #: (component, measure, metric, reason, text) per measure set aside. Plain tuples: this layer does
    #: not know scorecards.
    set_aside: dict[str, list[tuple[str, str, str, str, str]]] = field(default_factory=dict)
    #: The ``as_of`` of the portfolio frozen before this one in the same partition (NO_PREVIOUS: none
    #: was; None: not known, a record written before this field), so a restart whose merge replays
    #: time before this one's midnight finds the portfolio that was in force then.
    previous: int | None = None

    def observe(self, account_id: str, metrics: AccountMetrics, state: AccountState) -> None:
        """Take in an account's latest raw metrics and the features it uses."""
        for name, stats in self.stats.items():
            stats.update(account_id, float(getattr(metrics, name)) if metrics.active_days_30d else None)
        for f, d in state.features.items():
            if d > self.features.get(f, -1):
                self.features[f] = d

    def catalog_size(self, today: int) -> int:
        return sum(1 for d in self.features.values() if 0 <= today - d < HORIZON_DAYS)

    def unavailable(self, today: int) -> frozenset[str]:
        """The portfolio measures it cannot give any account (fewer than PORTFOLIO_MIN_ACCOUNTS ranked,
        an empty catalogue): like a missing portfolio, they count neither in the score nor against
        ``confidence``, so a small partition scores as it did without one."""
        out = {t for name, t in PERCENTILE_OF.items() if len(self.stats[name]) < PORTFOLIO_MIN_ACCOUNTS}
        if not self.catalog_size(today):
            out.add("feature_breadth_catalog")
        return frozenset(out)

    def dumps(self) -> bytes:
        """A compact record (format byte, msgpack, zstd when it pays): each ranked metric as its
        distinct values and their counts, so the size follows the spread of values, not the number of
        accounts; the catalogue as (feature, last day) pairs."""
        stats = []
        for name in sorted(self.stats):
            distinct: list[float] = []
            counts: list[int] = []
            for v in self.stats[name].values():
                if distinct and distinct[-1] == v:
                    counts[-1] += 1
                else:
                    distinct.append(v)
                    counts.append(1)
            stats.append([name, [int(v) if v.is_integer() else v for v in distinct], counts])
        record: list[Any] = [self.as_of, stats, sorted(self.features.items())]
        if self.set_aside or self.previous is not None:  # absent from records written before them
            record.append(sorted((card, [list(t) for t in rows]) for card, rows in self.set_aside.items()))
        if self.previous is not None:
            record.append(self.previous)
        body = _ENCODER.encode(record)
        if len(body) >= 160:
            packed = bytes(cramjam.zstd.compress(body, level=3))
            if len(packed) < len(body):
                return bytes((PORTFOLIO_V1_ZSTD,)) + packed
        return bytes((PORTFOLIO_V1,)) + body

    @classmethod
    def loads(cls, data: bytes) -> Portfolio:
        fmt = data[0]
        if fmt == PORTFOLIO_V1_ZSTD:
            body = bytes(cramjam.zstd.decompress(data[1:]))
        elif fmt == PORTFOLIO_V1:
            body = data[1:]
        else:
            raise ValueError(f"unknown portfolio format byte 0x{fmt:02x}")
        as_of, stats, features, *more = _DECODER.decode(body)
        set_aside = {card: [tuple(t) for t in rows] for card, rows in more[0]} if more else {}
        previous = more[1] if len(more) > 1 else None
        out = cls(features={f: d for f, d in features}, as_of=as_of, set_aside=set_aside, previous=previous)  # type: ignore[arg-type]
        for name, distinct, counts in stats:
            if name in out.stats:
                out.stats[name] = Percentiles(
                    float(v) for v, n in zip(distinct, counts, strict=True) for _ in range(n)
                )
        return out


#: ``Portfolio.previous`` of a partition's first portfolio.
NO_PREVIOUS = -1
#: Format bytes of a portfolio record; an account state's are 0x01, 0x02 or ``{`` (streams/core/state.py).
PORTFOLIO_V1 = 0x10
PORTFOLIO_V1_ZSTD = 0x11
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def portfolio_member(state: AccountState, metrics: AccountMetrics, as_of: int) -> bool:
    """Whether the account is part of the portfolio at ``as_of``: signed up by then (a profile) and not
    cancelled, the accounts a CS team looks after (the same population ``healthmon validate`` ranks)."""
    p = state.profile
    return p is not None and p.signed_up_at <= as_of and not metrics.canceled


class PortfolioBuilder:
    """:func:`portfolio_at` one state at a time, so the driver can spread a partition's freeze over
    several steps (a worker holding 100k accounts must not stop its event loop for the whole pass).
    Pure; the result does not depend on the order states are added in."""

    def __init__(self, as_of: int, cfg: MetricsConfig) -> None:
        self.as_of = as_of
        self.cfg = cfg
        self._today = as_of // DAY_S
        self._values: dict[str, list[float]] = {name: [] for name in PERCENTILE_OF}
        self._features: dict[str, int] = {}
        self.raw: dict[str, AccountMetrics] = {}
        #: Each member's segment (which card scores it: the information check is per card).
        self.segments: dict[str, str | None] = {}

    def add(self, state: AccountState) -> None:
        """An account with no event in the last HORIZON_DAYS is skipped unread: it has no value to
        rank and no feature in the catalogue."""
        today = self._today
        last = state.last_event_at
        if last is None or today - last // DAY_S >= HORIZON_DAYS:
            return
        m = compute_metrics(state, self.as_of, self.cfg)
        if not portfolio_member(state, m, self.as_of):
            return
        self.raw[state.account_id] = m
        self.segments[state.account_id] = state.profile.segment if state.profile is not None else None
        if m.active_days_30d:
            for name, vs in self._values.items():
                vs.append(float(getattr(m, name)))
        features = self._features
        for f, d in state.features.items():
            if d <= today and d > features.get(f, -1):
                features[f] = d

    def build(self) -> tuple[Portfolio, dict[str, AccountMetrics]]:
        stats = {name: Percentiles(vs) for name, vs in self._values.items()}
        return Portfolio(features=self._features, stats=stats, as_of=self.as_of), self.raw


def portfolio_at(
    states: Iterable[AccountState], as_of: int, cfg: MetricsConfig
) -> tuple[Portfolio, dict[str, AccountMetrics]]:
    """The portfolio of ``states`` as of ``as_of``, frozen, and the members' raw metrics (to score
    them at the same moment without computing them again). Pure."""
    builder = PortfolioBuilder(as_of, cfg)
    for state in states:
        builder.add(state)
    return builder.build()


def with_portfolio(m: AccountMetrics, portfolio: Portfolio, as_of: int) -> AccountMetrics:
    """The portfolio-relative measures of ``m`` (a copy); the rest unchanged."""
    update: dict[str, Any] = {}
    if m.active_days_30d:
        for name, target in PERCENTILE_OF.items():
            update[target] = portfolio.stats[name].rank(float(getattr(m, name)))
    catalog = portfolio.catalog_size(as_of // DAY_S)
    if catalog and (m.features_used_30d or m.active_days_30d):
        update["feature_breadth_catalog"] = min(1.0, m.features_used_30d / catalog)
    return m.model_copy(update=update)
