"""Fold validated events into :class:`AccountState`.

A pure reducer: no I/O and no clock; every time comes from the event. It mutates the state it is
given (the state object lives in the Faust table; copying it per event would double the hot path).
Out-of-order events are placed on their own day, so a late event inside the window still counts.
"""

from __future__ import annotations

import bisect
import heapq
import weakref
from collections.abc import Callable
from hashlib import blake2b

from streams.core import events as ev
from streams.core.state import (
    _DAY_MASK,
    COUNTER_MIN_HORIZON_DAYS,
    COUNTERS_DROPPED_AT_AGE,
    DAY_S,
    EVENT_HASH_BITS,
    HORIZON_DAYS,
    MAX_CLOSED_TICKETS,
    MAX_FEATURES,
    MAX_MEETINGS,
    MAX_NPS_ANSWERS,
    MAX_OPEN_TICKETS,
    MAX_USERS,
    N_COUNTERS,
    NPS_HORIZON_DAYS,
    USAGE_COUNTERS,
    USER_HORIZON_DAYS,
    AccountState,
    C,
    Profile,
    bitmap_mark,
    trimmed,
    user_keep_after,
    user_mark,
)

EVENT_HASH_BYTES = EVENT_HASH_BITS // 8
NEGATIVE_SENTIMENT = -0.25  # a ticket message at or below this counts as negative


def event_hash(event_id: str) -> int:
    """The de-duplication key of an event id: the low 48 bits (``EVENT_HASH_BITS``) of its 64-bit
    BLAKE2b digest, the same bits a 64-bit hash of older records keeps (docs/processing.md: the
    chance that a new event is taken for a repeat)."""
    digest = blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest[:EVENT_HASH_BYTES], "little")


def _bucket(state: AccountState, day: int, size: int = N_COUNTERS) -> list[int]:
    """The day's counters, at least ``size`` long. Buckets stay as short as their last counter in
    use: most days only have the usage counters (which come first), and a 4-slot list is 120 bytes
    smaller than a full one, over 90 days per account."""
    bucket = state.days.get(day)
    if bucket is None:
        bucket = state.days[day] = [0] * size
    elif len(bucket) < size:
        bucket.extend([0] * (size - len(bucket)))
    return bucket


def _prune_counters(days: dict[int, list[int]], day: int, age: int) -> None:
    """Drop from ``day``'s bucket, ``age`` days behind the newest event day, the counters past their
    horizon (state.COUNTER_HORIZON_DAYS); a bucket that old is kept trimmed (no trailing zeros), and
    dropped when nothing is left. Called for every such bucket when the day moves on, and for the
    bucket a late event wrote to, so that the state does not depend on the order events came in."""
    bucket = days[day]
    n = len(bucket)
    for c in COUNTERS_DROPPED_AT_AGE[age]:
        if c < n and bucket[c]:
            bucket[c] = 0
    kept = trimmed(bucket)
    if not kept:
        del days[day]
    elif kept is not bucket:
        days[day] = kept


def _prune(state: AccountState, newest_day: int) -> None:
    """Forget what has left every window; runs once per new day, not per event."""
    oldest = newest_day - HORIZON_DAYS
    days = state.days
    for day in [d for d in days if d <= newest_day - COUNTER_MIN_HORIZON_DAYS]:
        if day <= oldest:
            del days[day]
        else:
            _prune_counters(days, day, newest_day - day)
    # A user inactive for USER_HORIZON_DAYS has no bit in any window of any later evaluation (an
    # evaluation is never earlier than the events folded into the state: the driver's merge order).
    # Days of a remaining user that old are cleared too, as a late event's would not be set.
    oldest_user = newest_day - USER_HORIZON_DAYS
    users = state.users
    for user, packed in list(users.items()):
        kept = user_keep_after(packed, oldest_user)
        if kept == 0:
            del users[user]
        elif kept != packed:
            users[user] = kept
    for feature in [f for f, d in state.features.items() if d <= oldest]:
        del state.features[feature]
    cutoff = oldest * DAY_S
    for tid in [t for t, c in state.closed_tickets.items() if c[0] <= cutoff]:
        del state.closed_tickets[tid]
    for d in [d for d in state.score_history if d <= oldest]:
        del state.score_history[d]
    nps_cutoff = (newest_day - NPS_HORIZON_DAYS) * DAY_S
    for user in [u for u, a in state.nps.items() if a[0] <= nps_cutoff]:
        del state.nps[user]
    if state.meetings and state.meetings[0] >> 1 <= oldest:
        state.meetings = [m for m in state.meetings if m >> 1 > oldest]
    # Keep MRR changes inside the horizon plus the last one before it (the baseline).
    hist = state.mrr_history
    while len(hist) > 1 and hist[1][0] <= cutoff:
        hist.pop(0)


def apply_event(
    state: AccountState,
    event: ev.BaseEvent,
    *,
    key_features: frozenset[str] = frozenset(),
    dedupe_window: int = 64,
    max_users: int = MAX_USERS,
) -> bool:
    """Fold ``event`` into ``state``; returns False (and changes nothing) for a repeated event_id.
    ``max_users``: the cap on the users remembered per account (see :func:`_active`)."""
    if dedupe_window:
        h = event_hash(event.event_id)
        if h in state.recent_ids:
            return False
        state.recent_ids.append(h)
        if len(state.recent_ids) > dedupe_window:
            del state.recent_ids[: len(state.recent_ids) - dedupe_window]

    ts = int(event.occurred_at.timestamp())
    day = ts // DAY_S
    kind: str = event.type  # type: ignore[attr-defined]
    state.counts[kind] = state.counts.get(kind, 0) + 1
    if ts > state.last_seen.get(kind, -1):
        state.last_seen[kind] = ts
    if state.first_event_at is None or ts < state.first_event_at:
        state.first_event_at = ts
    previous_last = state.last_event_at
    if previous_last is None or ts > previous_last:
        state.last_event_at = ts
        if previous_last is not None and day > previous_last // DAY_S:
            _prune(state, day)
    elif day <= previous_last // DAY_S - HORIZON_DAYS:
        # Older than every window: it counts in the lifetime totals only.
        return True
    _HANDLERS[kind](state, event, ts, day, key_features, max_users)
    # A late event's bucket keeps only the counters still inside their horizon, as if it had come in order.
    if previous_last is not None and (age := previous_last // DAY_S - day) >= COUNTER_MIN_HORIZON_DAYS:
        if day in state.days:
            _prune_counters(state.days, day, age)
    return True


# --- handlers, one per event type ---------------------------------------------------------------


def _account(s: AccountState, e: ev.Account, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    if s.profile is None or ts >= s.profile.updated_at:
        s.profile = Profile(
            name=e.name,
            segment=e.segment,
            csm_name=e.csm_name,
            csm_email=e.csm_email,
            slack_channel=e.slack_channel,
            signed_up_at=int(e.signed_up_at.timestamp()),
            updated_at=ts,
            time_zone=e.time_zone,
            has_executive_sponsor=bool(e.executive_sponsor),
        )


def _active(s: AccountState, user_id: str, day: int, cap: int) -> None:
    """Mark the user active on ``day``. A new user when ``cap`` users are remembered makes the least
    recently active one forgotten (the first in the map's order among those with the oldest last
    day)."""
    if s.last_event_at is not None and day <= s.last_event_at // DAY_S - USER_HORIZON_DAYS:
        return  # late, before every user window: in time order it would have been pruned
    users = s.users
    packed = users.get(user_id)
    if packed is not None:
        users[user_id] = user_mark(packed, day)
        return
    evictor = _EVICTORS.get(id(s))
    if evictor is not None and not evictor.serves(s):
        evictor = None
    if len(users) >= cap:
        if evictor is None:
            evictor = _UserEvictor(s)
        while users and len(users) >= cap:
            del users[evictor.pop()]
    users[user_id] = user_mark(0, day)
    if evictor is not None:
        evictor.added(user_id, day)


class _UserEvictor:
    """Who the user cap forgets next, found in O(log users) rather than a scan of the map per new
    user (at the cap, every event of a user not remembered adds one: 10,000 active users on a cap of
    5,000 made every such event cost a 5,000-user scan). Exactly the user a scan would pick: a heap
    of (last active day, position in the map, user), where a user's entry can only be behind its
    state (last days only grow; a user forgotten, pruned or added again is checked against its
    position), so a current entry on top is the least recently active. It lives beside the state
    object, not in it (nothing is written to the changelog), and is rebuilt if the state's user map
    is replaced; a state read again (RocksDB) builds a new one when it first needs it."""

    __slots__ = ("heap", "next_pos", "position", "state", "users")

    def __init__(self, state: AccountState) -> None:
        self.state = weakref.ref(state)
        self.users = state.users
        self.position = {u: i for i, u in enumerate(self.users)}
        self.heap = [(p & _DAY_MASK, i, u) for i, (u, p) in enumerate(self.users.items())]
        heapq.heapify(self.heap)
        self.next_pos = len(self.heap)
        key = id(state)
        _EVICTORS[key] = self
        weakref.finalize(state, _EVICTORS.pop, key, None)

    def serves(self, state: AccountState) -> bool:
        return self.state() is state and self.users is state.users

    def added(self, user: str, day: int) -> None:
        self.position[user] = self.next_pos
        heapq.heappush(self.heap, (day, self.next_pos, user))
        self.next_pos += 1

    def pop(self) -> str:
        """The least recently active user, taken out of the heap (the caller deletes it)."""
        heap, users, position = self.heap, self.users, self.position
        while True:
            day, pos, user = heap[0]
            packed = users.get(user)
            if packed is None or position.get(user) != pos:  # gone, or added again since
                heapq.heappop(heap)
                if packed is None and position.get(user) == pos:
                    del position[user]
                continue
            current = packed & _DAY_MASK
            if current != day:  # active since: back in at its current last day
                heapq.heapreplace(heap, (current, pos, user))
                continue
            heapq.heappop(heap)
            del position[user]
            return user


#: The evictors of the states that reached the user cap, by ``id`` of the state (each is dropped when
#: its state is garbage-collected).
_EVICTORS: dict[int, _UserEvictor] = {}


def _login(s: AccountState, e: ev.Login, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    _bucket(s, day, USAGE_COUNTERS)[C.LOGINS] += 1
    _active(s, e.user_id, day, cap)
    s.login_days = bitmap_mark(s.login_days, day)
    if s.last_login_at is None or ts > s.last_login_at:
        s.last_login_at = ts


def _feature(s: AccountState, e: ev.FeatureUsed, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    _active(s, e.user_id, day, cap)  # C.FEATURE_USES is not counted (COUNTER_HORIZON_DAYS)
    if day > s.features.get(e.feature, -1):
        if e.feature not in s.features and len(s.features) >= MAX_FEATURES:
            s.features.pop(min(s.features, key=s.features.__getitem__))
        s.features[e.feature] = day
    if (not kf or e.feature in kf) and (s.first_value_at is None or ts < s.first_value_at):
        s.first_value_at = ts
    if kf and e.feature in kf and s.onboarded_at is None and kf.issubset(s.features):
        s.onboarded_at = ts  # the key feature that completed the set: onboarding done


def _session(s: AccountState, e: ev.Session, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    bucket = _bucket(s, day, USAGE_COUNTERS)
    bucket[C.SESSIONS] += 1
    bucket[C.SESSION_SECONDS] += round(e.duration_s)
    _active(s, e.user_id, day, cap)


def _sentiment(s: AccountState, day: int, sentiment: float | None) -> None:
    if sentiment is None:
        return
    bucket = _bucket(s, day)
    bucket[C.SENTIMENT_N] += 1
    bucket[C.SENTIMENT_SUM_MILLI] += round(sentiment * 1000)
    if sentiment <= NEGATIVE_SENTIMENT:
        bucket[C.SENTIMENT_NEGATIVE] += 1


def _ticket_opened(
    s: AccountState, e: ev.TicketOpened, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    bucket = _bucket(s, day)
    bucket[C.TICKETS_OPENED] += 1  # C.URGENT_OPENED is not counted (COUNTER_HORIZON_DAYS)
    urgent = int(e.priority == "urgent")
    _sentiment(s, day, e.sentiment)
    if e.ticket_id in s.closed_tickets:
        return  # the open arrived after the resolution (out of order): already accounted for
    known = s.open_tickets.get(e.ticket_id)
    if known is not None:  # a reply arrived before the open: keep its replies
        known[0], known[1] = ts, urgent
        return
    if len(s.open_tickets) >= MAX_OPEN_TICKETS:
        s.open_tickets.pop(min(s.open_tickets, key=lambda t: s.open_tickets[t][0]))
    s.open_tickets[e.ticket_id] = [ts, urgent, 0, 0, 0]


def _ticket_replied(
    s: AccountState, e: ev.TicketReplied, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    if e.author == "customer":
        _sentiment(s, day, e.sentiment)
        return
    t = s.open_tickets.get(e.ticket_id)
    if t is None:
        if e.ticket_id in s.closed_tickets:
            return
        t = s.open_tickets[e.ticket_id] = [ts, 0, 0, 0, 0]
    t[2] += 1
    if t[3] == 0 or ts < t[3]:
        if t[3] == 0 and ts >= t[0]:
            bucket = _bucket(s, day)
            bucket[C.FIRST_RESPONSE_N] += 1
            bucket[C.FIRST_RESPONSE_SUM_S] += ts - t[0]
        t[3] = ts


def _ticket_resolved(
    s: AccountState, e: ev.TicketResolved, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    t = s.open_tickets.pop(e.ticket_id, None)
    if t is None:
        return
    opened_at, urgent, replies, first_response, reopened = t
    fcr = int(replies <= 1 and not reopened)
    bucket = _bucket(s, day)
    bucket[C.RESOLVED] += 1
    bucket[C.RESOLVED_FCR] += fcr
    bucket[C.RESOLUTION_N] += 1
    bucket[C.RESOLUTION_SUM_S] += max(0, ts - opened_at)
    if len(s.closed_tickets) >= MAX_CLOSED_TICKETS:
        s.closed_tickets.pop(next(iter(s.closed_tickets)))
    s.closed_tickets[e.ticket_id] = _closed_row(ts, opened_at, urgent, replies, first_response, fcr)


def _closed_row(
    resolved_at: int, opened_at: int, urgent: int, replies: int, first: int, fcr: int
) -> list[int]:
    """What a closed ticket keeps: only what a reopen reads back (_ticket_reopened, then
    _ticket_replied and _ticket_resolved). A reopened ticket is never resolved on first contact, so its
    agent replies are not kept (0); of its first response only the sign (1, or -1 for a time before
    1970; 0: none): _ticket_replied only asks whether it is 0, and a reply's time takes it to 0 (or
    below it) exactly when it would take the time itself there."""
    return [resolved_at, opened_at, urgent, 0, (first > 0) - (first < 0), fcr]


def _ticket_reopened(
    s: AccountState, e: ev.TicketReopened, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    closed = s.closed_tickets.pop(e.ticket_id, None)
    if closed is None:
        t = s.open_tickets.get(e.ticket_id)
        if t is not None:
            t[4] = 1
        return
    resolved_at, opened_at, urgent, replies, first_response, fcr = closed
    if fcr:  # it was counted as resolved on first contact: it was not
        bucket = s.days.get(resolved_at // DAY_S)
        if bucket is not None and len(bucket) > C.RESOLVED_FCR:
            bucket[C.RESOLVED_FCR] -= 1
    s.open_tickets[e.ticket_id] = [opened_at, urgent, replies, first_response, 1]


def _csat(s: AccountState, e: ev.Csat, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    bucket = _bucket(s, day)
    bucket[C.CSAT_N] += 1
    bucket[C.CSAT_SATISFIED] += int(e.score >= 4)
    if s.csat_latest is None or ts >= s.csat_latest[0]:
        s.csat_latest = [ts, e.score]


def _record_mrr(s: AccountState, ts: int, mrr: str) -> None:
    """Insert an MRR change in event-time order (late billing events are common)."""
    hist = s.mrr_history
    i = len(hist)
    while i and hist[i - 1][0] > ts:
        i -= 1
    hist.insert(i, (ts, mrr))


def _subscription(
    s: AccountState, e: ev.Subscription, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    mrr = str(e.mrr)
    _record_mrr(s, ts, mrr)
    if s.subscription_at is None or ts >= s.subscription_at:
        s.subscription_at = ts
        s.mrr, s.plan, s.seats = mrr, e.plan, e.seats
        s.renewal_date = e.renewal_date.toordinal() - 719_163  # day number since 1970-01-01
        if s.canceled_at is not None and ts > s.canceled_at:
            s.canceled_at = s.cancel_reason = None  # a new subscription after a cancellation


def _invoice_paid(
    s: AccountState, e: ev.InvoicePaid, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    failed = s.unpaid_invoices.get(e.invoice_id)
    if failed is not None and ts >= failed[0]:
        del s.unpaid_invoices[e.invoice_id]


def _payment_failed(
    s: AccountState, e: ev.PaymentFailed, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    prev = s.unpaid_invoices.get(e.invoice_id)
    if prev is None or ts < prev[0]:  # past due counts from the first failure
        s.unpaid_invoices[e.invoice_id] = (ts, str(e.amount))


def _canceled(
    s: AccountState, e: ev.SubscriptionCanceled, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    if s.canceled_at is None or ts > s.canceled_at:
        s.canceled_at = ts
        s.cancel_reason = e.reason
        _record_mrr(s, ts, "0")


def _nps(s: AccountState, e: ev.Nps, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    prev = s.nps.get(e.user_id)
    if prev is None and len(s.nps) >= MAX_NPS_ANSWERS:
        del s.nps[min(s.nps, key=lambda u: s.nps[u][0])]
    if prev is None or ts >= prev[0]:
        s.nps[e.user_id] = [ts, e.score]
    if s.nps_latest is None or ts >= s.nps_latest[0]:
        s.nps_latest = [ts, e.score]
        s.nps_latest_user = e.user_id


def _ces(s: AccountState, e: ev.Ces, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    bucket = _bucket(s, day)
    bucket[C.CES_N] += 1
    bucket[C.CES_SUM] += e.score


def _csm_sentiment(
    s: AccountState, e: ev.CsmSentiment, ts: int, day: int, kf: frozenset[str], cap: int
) -> None:
    # The latest read by event time wins; a re-sent older read (a nightly import) does not overwrite it.
    if s.csm_sentiment is None or ts >= s.csm_sentiment[0]:
        s.csm_sentiment = (ts, e.normalised())


def _latest(current: int | None, day: int) -> int:
    return day if current is None or day > current else current


def _engaged(s: AccountState, day: int) -> None:
    if s.engaged_since_day is None or day < s.engaged_since_day:
        s.engaged_since_day = day


def _meeting(s: AccountState, e: ev.Meeting, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    # Days are maxima and the meeting list is kept sorted, so the state does not depend on event order.
    _engaged(s, day)
    held = e.status == "held"
    bisect.insort(s.meetings, day << 1 | held)
    if len(s.meetings) > MAX_MEETINGS:
        del s.meetings[0]
    if not held:
        return
    s.last_meeting_day = _latest(s.last_meeting_day, day)
    if e.kind in ("qbr", "ebr"):
        s.last_qbr_day = _latest(s.last_qbr_day, day)
    if any(a.role == "executive" for a in e.attendees):
        s.last_exec_day = _latest(s.last_exec_day, day)


def _csm_touch(s: AccountState, e: ev.CsmTouch, ts: int, day: int, kf: frozenset[str], cap: int) -> None:
    _engaged(s, day)
    s.last_touch_day = _latest(s.last_touch_day, day)
    if e.contact_role == "executive":
        s.last_exec_day = _latest(s.last_exec_day, day)


_HANDLERS: dict[str, Callable[..., None]] = {
    "account": _account,
    "meeting": _meeting,
    "csm_touch": _csm_touch,
    "login": _login,
    "feature_used": _feature,
    "session": _session,
    "ticket_opened": _ticket_opened,
    "ticket_replied": _ticket_replied,
    "ticket_resolved": _ticket_resolved,
    "ticket_reopened": _ticket_reopened,
    "csat": _csat,
    "subscription": _subscription,
    "invoice_paid": _invoice_paid,
    "payment_failed": _payment_failed,
    "subscription_canceled": _canceled,
    "nps": _nps,
    "ces": _ces,
    "csm_sentiment": _csm_sentiment,
}
assert set(_HANDLERS) == set(ev.TYPE_TOPIC), "every contract type needs a handler"
