"""Per-account state kept in the changelogged ``accounts`` table.

The state is compact and its size does not grow with history: counters live in per-day buckets
(UTC days since the epoch) that are pruned after ``HORIZON_DAYS``, and distinct users are kept as one
activity bitmap per user (``USER_HORIZON_DAYS`` bits) instead of a set per day, for at most
``HEALTHMON_MAX_USERS_PER_ACCOUNT`` users.
"""

from __future__ import annotations

import base64
import functools
import struct
import sys
from array import array
from collections.abc import Iterable, Sequence
from enum import IntEnum
from itertools import accumulate, chain, zip_longest
from pathlib import Path
from typing import Annotated, Any, NamedTuple

import cramjam
import msgspec
import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    field_serializer,
    field_validator,
)

DAY_S = 86_400
#: Days of per-day buckets and of the account's login bits that are kept.
HORIZON_DAYS = 90
#: Days of each user's activity bits that are kept: the longest per-user window the metrics read
#: (the 30 days before the last 30, for the 30-day usage trend; metrics.compute_metrics). A user
#: with no activity in them counts in no metric at any later evaluation, and is forgotten.
USER_HORIZON_DAYS = 60
#: Days an NPS answer counts for the account NPS.
NPS_HORIZON_DAYS = 180
_DAY_BITS = 17  # a packed bitmap is (bits << 17) | last_day; day numbers fit 17 bits until 2328
_DAY_MASK = (1 << _DAY_BITS) - 1
_BITS_MASK = (1 << HORIZON_DAYS) - 1
_USER_BITS_MASK = (1 << USER_HORIZON_DAYS) - 1
MAX_OPEN_TICKETS = 500
MAX_CLOSED_TICKETS = 100
MAX_FEATURES = 200
#: Caps on per-account maps, so that one huge or hostile account cannot grow a state without bound:
#: past them the least recently active user (or the oldest NPS answer) is forgotten. The user cap is
#: the default of ``HEALTHMON_MAX_USERS_PER_ACCOUNT`` (docs/processing.md, "Very large accounts").
MAX_USERS = 5_000
MAX_NPS_ANSWERS = 1_000
MAX_MEETINGS = 200
#: The input topics in a fixed order: the index of an event's topic in ``AccountState.offsets`` and
#: the tie-break when two topics hold events with the same time (a profile before the usage it names).
INPUT_KINDS = ("accounts", "usage", "tickets", "billing", "surveys")


class C(IntEnum):
    """Index of each counter in a day bucket."""

    LOGINS = 0
    SESSIONS = 1
    SESSION_SECONDS = 2
    FEATURE_USES = 3
    TICKETS_OPENED = 4
    URGENT_OPENED = 5
    SENTIMENT_N = 6
    SENTIMENT_SUM_MILLI = 7
    SENTIMENT_NEGATIVE = 8
    CSAT_N = 9
    CSAT_SATISFIED = 10
    CES_N = 11
    CES_SUM = 12
    RESOLVED = 13
    RESOLVED_FCR = 14
    FIRST_RESPONSE_N = 15
    FIRST_RESPONSE_SUM_S = 16
    RESOLUTION_N = 17
    RESOLUTION_SUM_S = 18


N_COUNTERS = len(C)
USAGE_COUNTERS = C.FEATURE_USES + 1  # the usage counters come first

#: Days each counter is kept in the day buckets: the longest window a metric reads it over
#: (metrics.compute_metrics: 7 and 30 days; TICKETS_OPENED also over the 4 weeks before the last 7,
#: for the ticket spike; FCR, CSAT and CES over 90 days). A counter no metric reads (0) is not
#: counted. The fold drops a counter from a bucket once the bucket's day is that many days behind the
#: account's newest event day (aggregate._prune_counters): no evaluation after that reads it (an
#: evaluation is never earlier than the events folded into the state), so no metric changes.
COUNTER_HORIZON_DAYS: dict[C, int] = {
    C.LOGINS: 30,
    C.SESSIONS: 30,
    C.SESSION_SECONDS: 30,
    C.FEATURE_USES: 0,  # features are counted in ``features`` (last day used), not here
    C.TICKETS_OPENED: 35,
    C.URGENT_OPENED: 0,  # open urgent tickets are counted from ``open_tickets``
    C.SENTIMENT_N: 30,
    C.SENTIMENT_SUM_MILLI: 30,
    C.SENTIMENT_NEGATIVE: 30,
    C.CSAT_N: 90,
    C.CSAT_SATISFIED: 90,
    C.CES_N: 90,
    C.CES_SUM: 90,
    C.RESOLVED: 90,
    C.RESOLVED_FCR: 90,
    C.FIRST_RESPONSE_N: 30,
    C.FIRST_RESPONSE_SUM_S: 30,
    C.RESOLUTION_N: 30,
    C.RESOLUTION_SUM_S: 30,
}
assert set(COUNTER_HORIZON_DAYS) == set(C) and max(COUNTER_HORIZON_DAYS.values()) <= HORIZON_DAYS
#: The shortest horizon of a counter that is counted: buckets this many days old lose counters.
COUNTER_MIN_HORIZON_DAYS = min(h for h in COUNTER_HORIZON_DAYS.values() if h)
#: By a bucket's age in days (0 .. HORIZON_DAYS - 1): the counters it no longer keeps.
COUNTERS_DROPPED_AT_AGE: tuple[tuple[int, ...], ...] = tuple(
    tuple(int(c) for c, h in COUNTER_HORIZON_DAYS.items() if h <= age) for age in range(HORIZON_DAYS)
)


# --- packed per-day activity bitmaps: bit k set = active on day (last_day - k) ------------------


def bitmap_mark(packed: int, day: int, horizon: int = HORIZON_DAYS, mask: int = _BITS_MASK) -> int:
    """Mark ``day`` active in a packed bitmap (0 = empty) that keeps ``horizon`` days (``mask``: that
    many bits); late days inside the horizon count."""
    if packed == 0:
        return (1 << _DAY_BITS) | day
    last = packed & _DAY_MASK
    bits = packed >> _DAY_BITS
    if day >= last:
        bits = ((bits << (day - last)) | 1) & mask
        last = day
    elif last - day < horizon:
        bits |= 1 << (last - day)
    return (bits << _DAY_BITS) | last


def user_mark(packed: int, day: int) -> int:
    """:func:`bitmap_mark` for a user's bitmap, which keeps :data:`USER_HORIZON_DAYS` days."""
    return bitmap_mark(packed, day, USER_HORIZON_DAYS, _USER_BITS_MASK)


def user_keep_after(packed: int, oldest_day: int) -> int:
    """A user's bitmap with the days up to ``oldest_day`` cleared (0: none left): what the fold keeps,
    so a state does not depend on whether a user's old days came before or after a later day."""
    last = packed & _DAY_MASK
    if last <= oldest_day:
        return 0
    keep = last - oldest_day  # bits 0 .. keep-1 are the days after oldest_day
    if packed >> (_DAY_BITS + keep) == 0:
        return packed
    return packed & ((((1 << keep) - 1) << _DAY_BITS) | _DAY_MASK)


def bitmap_window(packed: int, as_of_day: int, days: int, offset: int = 0) -> int:
    """The bits of days ``(as_of_day - offset - days, as_of_day - offset]``, newest in bit 0."""
    if packed == 0:
        return 0
    last = packed & _DAY_MASK
    bits = packed >> _DAY_BITS
    shift = as_of_day - offset - last  # how far the window's newest day is past our newest bit
    if shift >= 0:
        bits <<= shift
    else:
        bits >>= -shift
    return bits & ((1 << days) - 1)


def bitmap_aligned(packed: int, as_of_day: int) -> int:
    """All the bits up to ``as_of_day``, with that day in bit 0: the window of ``days`` days ending
    ``offset`` days earlier is ``(aligned >> offset) & ((1 << days) - 1)``, exactly what
    :func:`bitmap_window` gives, for one call per bitmap instead of one per window."""
    shift = as_of_day - (packed & _DAY_MASK)
    bits = packed >> _DAY_BITS
    return bits << shift if shift >= 0 else bits >> -shift


def bitmap_last_day(packed: int) -> int | None:
    return (packed & _DAY_MASK) if packed else None


#: Bits of an event-id hash kept in the de-duplication window (aggregate.event_hash). Records written
#: when hashes had 64 bits load with their low 48 bits, which is what the same event id hashes to now.
EVENT_HASH_BITS = 48
EVENT_HASH_MASK = (1 << EVENT_HASH_BITS) - 1
_HASH_BYTES = EVENT_HASH_BITS // 8


def _fit_ids(ids: array) -> array:
    """Hashes of up to :data:`EVENT_HASH_BITS` bits (older records kept 64)."""
    if ids and max(ids) > EVENT_HASH_MASK:
        return array("Q", [h & EVENT_HASH_MASK for h in ids])
    return ids


def _to_ids(value: object) -> array:
    if isinstance(value, array):
        return _fit_ids(value)
    if isinstance(value, str):
        ids = array("Q")
        ids.frombytes(base64.b64decode(value))
        return _fit_ids(ids)
    if isinstance(value, list):
        return _fit_ids(array("Q", value))
    raise ValueError("recent_ids is base64 of 64-bit words")


def _pack_ids(ids: array) -> str:
    return base64.b64encode(ids.tobytes()).decode()


#: The de-duplication ring as a C array: 64 hashes take 576 bytes, not 2.9 KB of Python ints.
Ids = Annotated[array, PlainValidator(_to_ids), PlainSerializer(_pack_ids, return_type=str)]


def trimmed(bucket: list[int]) -> list[int]:
    """A day bucket without its trailing zeros (most days only have the usage counters, first)."""
    # any() runs in C and settles the usual case: nothing past the usage counters.
    end = len(bucket) if any(bucket[USAGE_COUNTERS:]) else min(len(bucket), USAGE_COUNTERS)
    while end and not bucket[end - 1]:
        end -= 1
    return bucket if end == len(bucket) else bucket[:end]


class Profile(BaseModel):
    model_config = ConfigDict(frozen=True)

    name: str
    segment: str
    csm_name: str
    csm_email: str
    slack_channel: str | None = None
    signed_up_at: int
    updated_at: int
    time_zone: str | None = None
    #: The account names an executive sponsor (contract 1.1; the name is in the event, not kept here).
    has_executive_sponsor: bool = False


def _profile_tail(p: Profile) -> list[object]:
    """The profile's optional entries, written only when set (a profile without them encodes as
    before they existed): the time zone, then 1 when the account names an executive sponsor."""
    if p.has_executive_sponsor:
        return [p.time_zone, 1]
    return [] if p.time_zone is None else [p.time_zone]


class AccountState(BaseModel):
    """Everything healthmon remembers about one account. Timestamps are epoch seconds (event time)."""

    model_config = ConfigDict(validate_assignment=False, ser_json_bytes="base64")

    account_id: str
    profile: Profile | None = None
    #: Lifetime number of valid, de-duplicated events by type, and the latest event time of each.
    counts: dict[str, int] = Field(default_factory=dict)
    last_seen: dict[str, int] = Field(default_factory=dict)
    first_event_at: int | None = None
    last_event_at: int | None = None
    #: Hashes (48-bit, EVENT_HASH_BITS) of the most recent event ids, oldest first (the de-duplication
    #: window).
    recent_ids: Ids = Field(default_factory=lambda: array("Q"))
    #: Day number -> counters indexed by :class:`C`.
    days: dict[int, list[int]] = Field(default_factory=dict)
    #: user_id -> packed activity bitmap (any usage event, USER_HORIZON_DAYS bits), and the account's
    #: login-day bitmap (HORIZON_DAYS bits).
    users: dict[str, int] = Field(default_factory=dict)
    login_days: int = 0
    last_login_at: int | None = None
    #: feature -> last day it was used; first time a key feature was used (time to first value).
    features: dict[str, int] = Field(default_factory=dict)
    first_value_at: int | None = None
    #: ticket_id -> [opened_at, urgent(0/1), agent_replies, first_response_at or 0, reopened(0/1)]
    open_tickets: dict[str, list[int]] = Field(default_factory=dict)
    #: ticket_id -> [resolved_at, opened_at, urgent, agent_replies, first_response_at, was_fcr]; the
    #: reducer keeps 0 replies and the sign of the first response (aggregate._closed_row): all a reopen
    #: reads back.
    closed_tickets: dict[str, list[int]] = Field(default_factory=dict)
    #: user_id -> [answered_at, score]: each user's latest NPS answer.
    nps: dict[str, list[int]] = Field(default_factory=dict)
    nps_latest: list[int] | None = None  # [answered_at, score]
    nps_latest_user: str | None = None
    csat_latest: list[int] | None = None  # [answered_at, score]
    #: Billing: current subscription and its history of MRR changes [[at, mrr], ...] (oldest first).
    mrr: str | None = None
    mrr_history: list[tuple[int, str]] = Field(default_factory=list)
    subscription_at: int | None = None
    plan: str | None = None
    seats: int | None = None
    renewal_date: int | None = None  # day number
    #: invoice_id -> [failed_at, amount]: failed invoices not paid since.
    unpaid_invoices: dict[str, tuple[int, str]] = Field(default_factory=dict)
    canceled_at: int | None = None
    cancel_reason: str | None = None
    #: Scoring output kept for trends: day -> last score of that day x 10, and the last change event.
    score_history: dict[int, int] = Field(default_factory=dict)
    last_change_score: float | None = None
    last_change_band: str | None = None
    #: Trigger-rule state by rule id (see rules.engine.RuleState) and when the account is next due.
    rules: dict[str, list[int]] = Field(default_factory=dict)
    next_due: int | None = None
    last_eval_at: int | None = None
    #: The input partition this account's events come from (to rebuild the due schedule on recovery).
    partition: int | None = None
    #: Per input topic (in INPUT_KINDS order), the offset of the last record folded into this state:
    #: a record redelivered after a crash or a rebalance is skipped exactly, however many there are.
    offsets: list[int] = Field(default_factory=lambda: [-1] * len(INPUT_KINDS))
    #: Event time of an evaluation owed for events already folded in (written with the state, so a
    #: crash between folding and evaluating cannot lose the evaluation).
    owed: int | None = None
    #: The last published (stabilised) score and its event time (scoring.stabilise).
    score_published: float | None = None
    score_published_at: int | None = None
    #: The CSM's latest read of the account: (event time, -1..1).
    csm_sentiment: tuple[int, float] | None = None
    #: When the account completed onboarding: the event time of the use that made every key feature
    #: used (each within the features' 90-day memory); kept for good once set (docs/portfolio.md).
    onboarded_at: int | None = None
    #: Relationship (meetings and CSM touches, contract 1.1; metrics.engagement_metrics), as UTC day
    #: numbers: the latest held meeting, held QBR/EBR, executive touch (a held meeting an executive
    #: attended, or a touch with one) and CSM touch, and the day of the first of these events (what
    #: "no meeting yet" is counted from).
    last_meeting_day: int | None = None
    last_qbr_day: int | None = None
    last_exec_day: int | None = None
    last_touch_day: int | None = None
    engaged_since_day: int | None = None
    #: The meetings of the last HORIZON_DAYS days, each ``day << 1 | held``, sorted (at most
    #: MAX_MEETINGS): held vs cancelled over 90 days.
    meetings: list[int] = Field(default_factory=list)

    @field_serializer("days")
    def _trim_days(self, days: dict[int, list[int]]) -> dict[int, list[int]]:
        return {day: trimmed(bucket) for day, bucket in days.items()}

    @field_validator("days", mode="after")
    @classmethod
    def _fit_days(cls, days: dict[int, list[int]]) -> dict[int, list[int]]:
        # At most one slot per counter (states written before a counter was dropped had more) and,
        # in memory as on disk, no trailing zeros (see aggregate._bucket).
        return {day: trimmed(bucket[:N_COUNTERS]) for day, bucket in days.items()}

    def dumps(self) -> bytes:
        """The changelog record: the compact binary layout (see :func:`encode_state`)."""
        return encode_state(self)

    def dumps_json(self) -> bytes:
        """The JSON form (the format before binary v1; readable, for debugging)."""
        return self.model_dump_json(exclude_defaults=True).encode()

    @classmethod
    def loads(cls, data: bytes) -> AccountState:
        """A record in any format ever written: binary (leading format byte) or JSON (``{``)."""
        if data[:1] == b"{":
            return cls.model_validate_json(data)
        return decode_state(data)


# --- the changelog record: a versioned binary layout ------------------------------------------
#
# JSON of the model above costs ~6 KB per account on the simulator's mix (12 KB at p95): dict keys
# and 10-digit timestamps repeated, bitmaps as decimal text. Binary layout v1 is msgpack of one
# positional list (no field names), day buckets as rows keyed by day deltas, user and ticket ids
# front-coded against the previous id, user bitmaps as fixed 12-byte words, all zstd-compressed
# when that pays. Layout v2 (below; what is written now) puts the integers into columns. Dicts keep
# their insertion order (it decides ties, e.g. which user the cap evicts), so a worker that reloaded
# a state behaves like one that kept it in memory. Every format ever written still loads.

#: Leading byte of a record. JSON records begin with ``{`` (0x7B) and still load.
FORMAT_V1 = 0x01  # layout v1, msgpack
FORMAT_V1_ZSTD = 0x02  # layout v1, msgpack, zstd frame
_ZSTD_MIN = 160  # shorter bodies gain nothing from compression
_BITS_BYTES = (HORIZON_DAYS + 7) // 8
#: Fields in layout order. Append-only: a record from before a field was added is shorter, and the
#: missing fields take their defaults. Removing or reordering one needs a new format byte.
LAYOUT_V1 = (
    "account_id", "profile", "counts", "last_seen", "first_event_at", "last_event_at", "recent_ids",
    "days", "users", "login_days", "last_login_at", "features", "first_value_at", "open_tickets",
    "closed_tickets", "nps", "nps_latest", "nps_latest_user", "csat_latest", "mrr", "mrr_history",
    "subscription_at", "plan", "seats", "renewal_date", "unpaid_invoices", "canceled_at",
    "cancel_reason", "score_history", "last_change_score", "last_change_band", "rules", "next_due",
    "last_eval_at", "partition", "offsets", "owed", "score_published", "score_published_at",
    "csm_sentiment", "onboarded_at",
    # relationship (contract 1.1): all in one entry in the first one's place, and only when the account
    # has any (:func:`_engagement_tail`)
    "last_meeting_day", "last_qbr_day", "last_exec_day", "last_touch_day", "engaged_since_day", "meetings",
)  # fmt: skip
_ENCODER = msgspec.msgpack.Encoder()
_DECODER = msgspec.msgpack.Decoder()


def _bitmap_bytes(packed: int) -> bytes:
    """A packed bitmap as (little-endian) bytes: msgpack integers stop at 64 bits, bitmaps need 107."""
    return packed.to_bytes((packed.bit_length() + 7) // 8, "little")


def _ids_bytes(ids: array) -> bytes:
    if sys.byteorder == "little":
        return ids.tobytes()
    swapped = array("Q", ids)
    swapped.byteswap()
    return swapped.tobytes()


def _ids_from(raw: bytes, v2: bool) -> array:
    """The de-duplication window from a record: v2 writes 6 bytes a hash, v1 wrote 8 (cut to 48 bits)."""
    if v2:
        words = np.zeros((len(raw) // _HASH_BYTES, 8), np.uint8)
        words[:, :_HASH_BYTES] = np.frombuffer(raw, np.uint8).reshape(-1, _HASH_BYTES)
        raw = words.tobytes()
    ids = array("Q")
    ids.frombytes(raw)
    if sys.byteorder != "little":
        ids.byteswap()
    return ids if v2 else _fit_ids(ids)


def _ids_bytes_v2(ids: array) -> bytes:
    """Each hash's low 6 bytes (see :data:`EVENT_HASH_BITS`)."""
    words = np.frombuffer(_ids_bytes(ids), np.uint8).reshape(-1, 8)
    return words[:, :_HASH_BYTES].tobytes()


def _front_code(keys: Iterable[str]) -> list[list]:
    """Ids as (length shared with the previous id, the rest): ``acct-00195-t000442`` then
    ``acct-00195-t001095`` costs 5 bytes, not 18. Order is kept."""
    shared: list[int] = []
    rests: list[str] = []
    prev = ""
    n = 0
    for key in keys:
        # start from the previous pair's shared length (ids of one account share most of it)
        limit = min(len(prev), len(key))
        n = min(n, limit)
        if prev[:n] == key[:n]:
            while n < limit and prev[n] == key[n]:
                n += 1
        else:
            while prev[:n] != key[:n]:
                n -= 1
        shared.append(n)
        rests.append(key[n:])
        prev = key
    return [shared, rests]


def _front_decode(coded: list[list]) -> list[str]:
    keys: list[str] = []
    prev = ""
    for n, rest in zip(coded[0], coded[1], strict=True):
        prev = prev[:n] + rest
        keys.append(prev)
    return keys


def _encode_days(days: dict[int, list[int]]) -> list[list[int]]:
    """Rows of (day minus the previous row's day, counters without trailing zeros), in dict order."""
    rows, prev = [], 0
    for day, bucket in days.items():
        rows.append([day - prev, *trimmed(bucket)])
        prev = day
    return rows


def _decode_days(rows: list[list[int]]) -> dict[int, list[int]]:
    days: dict[int, list[int]] = {}
    day = 0
    for row in rows:
        day += row[0]
        days[day] = row[1:]
    return days


def _pack_map(d: dict[str, list[int]]) -> list[object]:
    """A map keyed by ids (tickets, users): front-coded ids, then the values in the same order."""
    return [_front_code(d), list(d.values())]


def _unpack_map(packed: list) -> dict[str, list[int]]:
    return dict(zip(_front_decode(packed[0]), packed[1], strict=True))


#: The front-coded user ids of recently written accounts: account -> (ids, coded). A worker writes a
#: busy account's state at every step while its users rarely change, and coding thousands of ids is
#: most of the write. Bounded; an entry is used only when the ids are the same, in the same order.
_CODED_USERS: dict[str, tuple[list[str], list[list]]] = {}
_CODED_USERS_MAX = 1024


def _remember(cache: dict[str, Any], account_id: str, ids: list[str], value: Any) -> None:
    """Keep a coding of ``ids`` for the account, if they are many (small maps code fast enough);
    at most ``_CODED_USERS_MAX`` accounts, the oldest entry going first."""
    if len(ids) >= 32 and account_id:
        if account_id not in cache and len(cache) >= _CODED_USERS_MAX:
            del cache[next(iter(cache))]
        cache[account_id] = (ids, value)


def _front_code_users(account_id: str, users: dict[str, int]) -> list[list]:
    ids = list(users)
    cached = _CODED_USERS.get(account_id)
    if cached is not None and cached[0] == ids:
        return cached[1]
    coded = _front_code(ids)
    _remember(_CODED_USERS, account_id, ids, coded)
    return coded


def _encode_users(users: dict[str, int], account_id: str = "") -> list[object]:
    """Front-coded ids, last active days as distances from the newest, and the 90 activity bits as
    one 12-byte word per user."""
    packed = list(users.values())
    lasts = [p & _DAY_MASK for p in packed]
    newest = max(lasts, default=0)
    ages = [newest - d for d in lasts]
    words = b"".join([(p >> _DAY_BITS).to_bytes(_BITS_BYTES, "little") for p in packed])
    coded = _front_code_users(account_id, users) if account_id else _front_code(users)
    return [newest, coded, ages, words]


def _decode_users(row: list) -> dict[str, int]:
    newest, coded, ages, words = row
    users: dict[str, int] = {}
    for i, user in enumerate(_front_decode(coded)):
        bits = int.from_bytes(words[i * _BITS_BYTES : (i + 1) * _BITS_BYTES], "little")
        users[user] = (bits << _DAY_BITS) | (newest - ages[i])
    return users


def encode_state_v1(state: AccountState) -> bytes:
    """The state as a binary v1 record (format byte, then msgpack, zstd-compressed when smaller): what
    v2 and v3 write for a small state or one their columns cannot hold, and HEALTHMON_STATE_FORMAT=1."""
    s = state
    p = s.profile
    values: list[object] = [
        s.account_id,
        None if p is None else [p.name, p.segment, p.csm_name, p.csm_email, p.slack_channel, p.signed_up_at, p.updated_at, *_profile_tail(p)],
        s.counts,
        s.last_seen,
        s.first_event_at,
        s.last_event_at,
        _ids_bytes(s.recent_ids),
        _encode_days(s.days),
        _encode_users(s.users, s.account_id),
        _bitmap_bytes(s.login_days),
        s.last_login_at,
        s.features,
        s.first_value_at,
        _pack_map(s.open_tickets),
        _pack_map(s.closed_tickets),
        _pack_map(s.nps),
        s.nps_latest,
        s.nps_latest_user,
        s.csat_latest,
        s.mrr,
        s.mrr_history,
        s.subscription_at,
        s.plan,
        s.seats,
        s.renewal_date,
        s.unpaid_invoices,
        s.canceled_at,
        s.cancel_reason,
        s.score_history,
        s.last_change_score,
        s.last_change_band,
        s.rules,
        s.next_due,
        s.last_eval_at,
        s.partition,
        s.offsets,
        s.owed,
        s.score_published,
        s.score_published_at,
        s.csm_sentiment,
        s.onboarded_at,
        *_engagement_tail(s),
    ]  # fmt: skip
    body = _ENCODER.encode(values)
    if len(body) >= _ZSTD_MIN:
        packed = bytes(cramjam.zstd.compress(body, level=1))
        if len(packed) < len(body):
            return bytes((FORMAT_V1_ZSTD,)) + packed
    return bytes((FORMAT_V1,)) + body


_ENGAGEMENT_DAYS = (
    "last_meeting_day",
    "last_qbr_day",
    "last_exec_day",
    "last_touch_day",
    "engaged_since_day",
)


def _engagement_tail(s: AccountState) -> list[object]:
    """The relationship fields as one entry (none when the account has no meeting or touch, so such a
    state is written exactly as before they existed): a list of small integers, each day as a distance
    back from the newest event's day (None where unset), then each meeting as ``2 * that day + 1``
    minus its ``day << 1 | held``. Kept small: a few bytes where the fields would take ~50, on a
    state budget of 2 KB at p95."""
    if s.engaged_since_day is None and not s.meetings:
        return []
    base = _safe_base(s.last_event_at) // DAY_S
    days = [None if d is None else base - d for d in (getattr(s, n) for n in _ENGAGEMENT_DAYS)]
    top = 2 * base + 1
    return [[*days, *(top - m for m in s.meetings)]]


def _engagement_from(f: dict[str, Any]) -> None:
    """Unpack :func:`_engagement_tail`'s entry in ``f`` (the record's fields by name) in place."""
    packed = f.pop("last_meeting_day", None)
    if packed is None:
        return
    base = _safe_base(f.get("last_event_at")) // DAY_S
    for name, d in zip(_ENGAGEMENT_DAYS, packed, strict=False):
        f[name] = None if d is None else base - d
    top = 2 * base + 1
    f["meetings"] = [top - m for m in packed[len(_ENGAGEMENT_DAYS) :]]


#: The newest layout written (HEALTHMON_STATE_FORMAT, set once at start-up): during a rolling upgrade
#: from a release that reads only v1 (or only up to v2, v3), 1 (or 2, 3), so its workers can read
#: every record; then 4.
_write_format = 4


def set_write_format(version: int) -> None:
    global _write_format
    if version not in (1, 2, 3, 4):
        raise ValueError(f"unknown account state layout {version} (1, 2, 3 or 4)")
    _write_format = version


def encode_state(state: AccountState) -> bytes:
    """The state as a changelog record: binary layout v4 (see :func:`encode_state_v4`), or v3, v2 or v1
    when :func:`set_write_format` says so."""
    if _write_format == 4:
        return encode_state_v4(state)
    if _write_format == 3:
        return encode_state_v3(state)
    return encode_state_v2(state) if _write_format == 2 else encode_state_v1(state)


def _record_body(data: bytes) -> tuple[int, bytes]:
    """A binary record's format byte and its msgpack body (out of its zstd frame if it has one)."""
    fmt = data[0]
    if fmt == FORMAT_V4_ZSTD:
        return fmt, _zstd_v4()[1].decompress(data[1:])
    if fmt == FORMAT_V3_ZSTD:
        return fmt, _zstd_v3()[1].decompress(data[1:])
    if fmt in (FORMAT_V2_ZSTD, FORMAT_V1_ZSTD):
        return fmt, bytes(cramjam.zstd.decompress(data[1:]))
    if fmt in (FORMAT_V4, FORMAT_V3, FORMAT_V2, FORMAT_V1):
        return fmt, data[1:]
    raise ValueError(f"unknown account state format byte 0x{fmt:02x}")


def decode_state(data: bytes) -> AccountState:
    """A binary record (v1, v2 or v3) back into the state, without re-validating what was written."""
    fmt, body = _record_body(data)
    values = _DECODER.decode(body)
    if not isinstance(values, list) or not values:
        raise ValueError("account state record: not a positional layout")
    v3 = fmt in (FORMAT_V3, FORMAT_V3_ZSTD, FORMAT_V4, FORMAT_V4_ZSTD)  # v4: v3's layout, another dictionary
    v2 = v3 or fmt in (FORMAT_V2, FORMAT_V2_ZSTD)  # v2 and v3 keep hashes and known strings alike
    f = _decode_v2(values, v3) if v2 else _decode_v1(values)
    if (raw_ids := f.get("recent_ids")) is not None:
        f["recent_ids"] = _ids_from(raw_ids, v2)
    if (login_days := f.get("login_days")) is not None:
        f["login_days"] = int.from_bytes(login_days, "little")
    if (hist := f.get("mrr_history")) is not None:
        f["mrr_history"] = [(at, mrr) for at, mrr in hist]
    if (unpaid := f.get("unpaid_invoices")) is not None:
        f["unpaid_invoices"] = {k: (at, amount) for k, (at, amount) in unpaid.items()}
    if (sentiment := f.get("csm_sentiment")) is not None:
        f["csm_sentiment"] = (sentiment[0], sentiment[1])
    _engagement_from(f)
    return AccountState.model_construct(**f)


def _decode_v1(values: list) -> dict[str, Any]:
    f = dict(zip(LAYOUT_V1, values, strict=False))
    if (p := f.get("profile")) is not None:
        f["profile"] = Profile.model_construct(
            name=p[0], segment=p[1], csm_name=p[2], csm_email=p[3], slack_channel=p[4],
            signed_up_at=p[5], updated_at=p[6], time_zone=p[7] if len(p) > 7 else None,
            has_executive_sponsor=len(p) > 8 and bool(p[8]),
        )  # fmt: skip
    if (rows := f.get("days")) is not None:
        f["days"] = _decode_days(rows)
    for name in ("open_tickets", "closed_tickets", "nps"):
        if (packed := f.get(name)) is not None:
            f[name] = _unpack_map(packed)
    if (users := f.get("users")) is not None:
        f["users"] = _decode_users(users)
    return f


# --- layout v2: one stream of small integers --------------------------------------------------
#
# v1 spends most of a record on integers msgpack writes at 5 bytes (epoch seconds, session seconds),
# on 8-byte event-id hashes, and on strings every account repeats (event types, rule ids). v2 keeps a
# positional list in v1's field order, but every map of integer rows (day buckets, users' last days,
# tickets, NPS answers, rule states, the score history, counters by event type) goes into integer
# columns: times as distances from a base (the account's latest event time) or from the previous
# row, the rows of a map column by column. All the columns of a record are then written at once, each
# value zigzag-coded and cut into byte planes as wide as its column's widest value (a column of zeros
# costs nothing, counters under 128 one byte a value), low planes first, and zstd compresses the
# whole record. Event types, default rule ids, bands and segments are indices into a fixed table; NPS
# answers name their user by position in ``users``. A state v2 cannot hold (a row of another length,
# an integer past 64 bits; none that the reducer builds) is written in v1, so every state round-trips.

FORMAT_V2 = 0x03  # layout v2, msgpack
FORMAT_V2_ZSTD = 0x04  # layout v2, msgpack, zstd frame
#: zstd level of v2 records: on a 2-4 KB record level 3 is as fast as 1 and ~1 % smaller; 19 is
#: another ~3 % smaller for twice the encoding time.
ZSTD_LEVEL_V2 = 3
#: Strings written as their index here. Frozen with the format byte: never reorder or remove an entry
#: (an index in a stored record must keep its meaning); any other string is written as text.
KNOWN_STRINGS_V2 = (
    # event types (events.TYPE_TOPIC)
    "account", "login", "feature_used", "session", "ticket_opened", "ticket_replied", "ticket_resolved",
    "ticket_reopened", "csat", "subscription", "invoice_paid", "payment_failed", "subscription_canceled",
    "nps", "ces", "csm_sentiment",
    # the default rule pack's ids (rules/default; "payment_failed" is above)
    "mrr_contraction", "account_canceled", "health_below_60", "band_red", "nps_detractor", "csat_1_2",
    "ticket_spike", "negative_sentiment", "no_login_14d", "daily_user_silent_7d", "low_adoption",
    "usage_decline", "renewal_low_adoption",
    # bands and segments
    "green", "yellow", "red", "smb", "mid_market", "enterprise",
)  # fmt: skip
_KNOWN_INDEX = {text: i for i, text in enumerate(KNOWN_STRINGS_V2)}
_SUPPORT_COUNTERS = N_COUNTERS - USAGE_COUNTERS
_PLANES = np.arange(8, dtype=np.uint64)
#: A value at or above 256**k needs k + 1 bytes.
_PLANE_FLOORS = np.array([1 << (8 * k) for k in range(8)], dtype=np.uint64)


class _Unfit(Exception):
    """A state layout v2 cannot hold (it is written in v1)."""


def _key(text: str) -> int | str:
    return _KNOWN_INDEX.get(text, text)


#: Coded key lists by the keys they code: every account has the same rule ids, and event types in
#: one of a few orders. Bounded (cleared when full).
_CODED_KEYS: dict[tuple[str, ...], list[int | str]] = {}


def _keys(keys: Iterable[str]) -> list[int | str]:
    names = tuple(keys)
    coded = _CODED_KEYS.get(names)
    if coded is None:
        if len(_CODED_KEYS) >= 256:
            _CODED_KEYS.clear()
        coded = _CODED_KEYS[names] = [_KNOWN_INDEX.get(k, k) for k in names]
    return coded


def _unkey(key: int | str) -> str:
    return KNOWN_STRINGS_V2[key] if isinstance(key, int) else key


def _unkeys(keys: list[int | str]) -> list[str]:
    known = KNOWN_STRINGS_V2
    return [known[k] if isinstance(k, int) else k for k in keys]


def _rows(d: dict[str, list[int]], arity: int) -> list[tuple[int, ...]]:
    """The columns of a map's rows (each ``arity`` long, or the state is unfit for v2)."""
    if not d:
        return [()] * arity
    try:
        cols = list(zip(*d.values(), strict=True))
    except ValueError:  # rows of different lengths
        raise _Unfit from None
    if len(cols) != arity:
        raise _Unfit
    return cols


def _deltas(values: Iterable[int], first: int) -> list[int]:
    """Each value minus the previous one (the first minus ``first``)."""
    values = list(values)
    return [v - prev for prev, v in zip([first, *values], values, strict=False)]


def _undeltas(deltas: list[int], first: int) -> list[int]:
    return list(accumulate(deltas, initial=first))[1:]


def _pack_columns(cols: list[Sequence[int]]) -> tuple[list[int], bytes, bytes]:
    """All the integer columns of a record: (their lengths, their byte widths, the byte planes). A
    value is zigzag-coded (0, -1, 1, -2... -> 0, 1, 2, 3...), a column is as many bytes wide as its
    widest code needs (0 to 8), and the planes are byte 0 of every value of every column at least 1
    wide, then byte 1 of every value of every column at least 2 wide, and so on."""
    lens = [len(c) for c in cols]
    flat = list(chain.from_iterable(cols))
    n = len(flat)
    try:
        a = np.frombuffer(struct.pack(f"<{n}q", *flat), dtype="<i8")
    except struct.error:  # past 64 bits
        raise _Unfit from None
    z = np.zeros(n + 1, dtype=np.uint64)  # one more: a column may be empty, even the last one
    z[:n] = ((a << 1) ^ (a >> 63)).view(np.uint64)
    n_per = np.array(lens, dtype=np.intp)
    tops = np.maximum.reduceat(z, np.cumsum(n_per) - n_per)
    tops[n_per == 0] = 0
    widths = np.searchsorted(_PLANE_FLOORS, tops, side="right").astype(np.uint8)
    planes = z[:n].astype("<u8", copy=False).view(np.uint8).reshape(n, 8).T  # plane, value
    keep = _PLANES[:, None] < np.repeat(widths, n_per)
    return lens, widths.tobytes(), planes[keep].tobytes()


class _ColumnReader:
    """The columns of a v2 record, taken in the order the fields wrote them: one at a time
    (``take``), or several of the same length as rows (``take_rows``)."""

    __slots__ = ("col", "ends", "flat", "ints", "lens")

    def __init__(self, lens: list[int], widths: bytes, data: bytes) -> None:
        n = sum(lens)
        keep = _PLANES[:, None] < np.repeat(np.frombuffer(widths, np.uint8), lens)
        planes = np.zeros((8, n), dtype=np.uint8)
        planes[keep] = np.frombuffer(data, np.uint8)
        z = planes.T.copy().view("<u8").reshape(n)
        self.ints = (z >> 1).view(np.int64) ^ -(z & 1).view(np.int64)
        self.flat: list[int] = self.ints.tolist()
        self.lens = lens
        self.ends = list(accumulate(lens))
        self.col = 0

    def take(self) -> list[int]:
        end = self.ends[self.col]
        start = end - self.lens[self.col]
        self.col += 1
        return self.flat[start:end]

    def take_rows(self, k: int) -> list[list[int]]:
        """The next ``k`` columns (of one length) as rows."""
        n = self.lens[self.col]
        start = self.ends[self.col] - n
        self.col += k
        return self.ints[start : start + k * n].reshape(k, n).T.tolist()


def _encode_kinds(counts: dict[str, int], last_seen: dict[str, int], base: int, cols: list) -> list:
    """counts and last_seen (nearly always the same keys in the same order: written once): counts, and
    each last-seen time as a distance back from ``base``."""
    cols.append(list(counts.values()))
    cols.append([base - t for t in last_seen.values()])
    same = list(counts) == list(last_seen)
    return [_keys(counts), None if same else _keys(last_seen)]


def _decode_kinds(part: list, base: int, r: _ColumnReader) -> tuple[dict[str, int], dict[str, int]]:
    ckeys = _unkeys(part[0])
    lkeys = ckeys if part[1] is None else _unkeys(part[1])
    counts = dict(zip(ckeys, r.take(), strict=True))
    return counts, dict(zip(lkeys, [base - d for d in r.take()], strict=True))


def _encode_days_v2(days: dict[int, list[int]], base_day: int, cols: list) -> int:
    """Day buckets: the day (a delta from the previous row's) and the usage counters, a column each
    for every day; then which days have a longer bucket (row numbers, as deltas) and their support
    and survey counters (zero on most days, absent on the others). A bucket's length is not written:
    it ends at its last non-zero counter. RESOLUTION_N is written as its difference from RESOLVED (the
    reducer counts both together: a column of zeros)."""
    rows = list(days.values())
    n = len(rows)
    cols.append(_deltas(days, base_day))
    usage = list(zip_longest(*[r[:USAGE_COUNTERS] for r in rows], fillvalue=0))
    cols.extend(usage + [(0,) * n] * (USAGE_COUNTERS - len(usage)))
    which = [i for i, r in enumerate(rows) if len(r) > USAGE_COUNTERS]
    cols.append(_deltas(which, 0))
    longer = [rows[i][USAGE_COUNTERS:] for i in which]
    if longer and max(map(len, longer)) > _SUPPORT_COUNTERS:
        raise _Unfit
    support = list(zip_longest(*longer, fillvalue=0))
    support += [(0,) * len(which)] * (_SUPPORT_COUNTERS - len(support))
    res_n, resolved = C.RESOLUTION_N - USAGE_COUNTERS, C.RESOLVED - USAGE_COUNTERS
    support[res_n] = tuple(a - b for a, b in zip(support[res_n], support[resolved], strict=True))
    cols.extend(support)
    return n


def _decode_days_v2(n: int, base_day: int, r: _ColumnReader) -> dict[int, list[int]]:
    days = _undeltas(r.take(), base_day)
    rows = r.take_rows(USAGE_COUNTERS)
    which = _undeltas(r.take(), 0)
    res_n, resolved = C.RESOLUTION_N - USAGE_COUNTERS, C.RESOLVED - USAGE_COUNTERS
    for i, extra in zip(which, r.take_rows(_SUPPORT_COUNTERS), strict=True):
        extra[res_n] += extra[resolved]
        rows[i] += extra
    for row in rows:  # each bucket ends at its last non-zero counter (what trimmed() keeps)
        if row and not row[-1]:
            while row and not row[-1]:
                row.pop()
    return dict(zip(days, rows, strict=True))


def _encode_users_v2(users: dict[str, int], account_id: str, cols: list, v3: bool = False) -> list:
    """Each user's last active day (days before the newest), ids front-coded (v3: as
    :func:`_code_ids`, their columns after the last days'), and the activity bits as byte planes (byte
    0 of every user, then byte 1, ...), as many as the widest bitmap needs: 8 for USER_HORIZON_DAYS
    bits, 12 for the 90 of states written before it."""
    packed = list(users.values())
    lasts = [p & _DAY_MASK for p in packed]
    newest = max(lasts, default=0)
    cols.append([newest - d for d in lasts])
    if v3:
        coded: list = _code_users_v3(users, account_id, cols)
    else:
        coded = _front_code_users(account_id, users) if account_id else _front_code(users)
    bits = [p >> _DAY_BITS for p in packed]
    width = (max(bits, default=0).bit_length() + 7) // 8
    words = b"".join([b.to_bytes(width, "little") for b in bits])
    planes = np.frombuffer(words, np.uint8).reshape(len(packed), width).T.tobytes()
    return [newest, coded, width, planes]


def _decode_users_v2(part: list, r: _ColumnReader, v3: bool = False) -> dict[str, int]:
    newest, coded, width, planes = part
    ages = r.take()
    ids = _decode_ids(coded, r) if v3 else _front_decode(coded)
    words = np.frombuffer(planes, np.uint8).reshape(width, len(ids)).T.tobytes()
    return {
        user: (int.from_bytes(words[i * width : (i + 1) * width], "little") << _DAY_BITS) | (newest - age)
        for i, (user, age) in enumerate(zip(ids, ages, strict=True))
    }


def _encode_features(features: dict[str, int], base_day: int, cols: list) -> list[str]:
    """feature -> last day used: the names, and the days back from ``base_day``."""
    cols.append([base_day - d for d in features.values()])
    return list(features)


def _encode_open(tickets: dict[str, list[int]], base: int, cols: list, v3: bool = False) -> list:
    """[opened_at, urgent, agent_replies, first_response_at or 0, reopened]: opened_at from ``base``,
    the first response from the opening (0 stays 0: a column of which are set). v3: the ids as
    :func:`_code_ids`, their columns first."""
    coded = _code_ids(tickets, cols) if v3 else _front_code(tickets)
    opened, urgent, replies, first, reopened = _rows(tickets, 5)
    cols.append([o - base for o in opened])
    cols.extend((urgent, replies, reopened))
    cols.append([f - o if f else 0 for f, o in zip(first, opened, strict=True)])
    cols.append([1 if f else 0 for f in first])
    return coded


def _decode_open(part: list, base: int, r: _ColumnReader, v3: bool = False) -> dict[str, list[int]]:
    ids = _decode_ids(part, r) if v3 else _front_decode(part)
    opened = [base + d for d in r.take()]
    urgent, replies, reopened, first, has_first = r.take(), r.take(), r.take(), r.take(), r.take()
    first = [f + o if h else 0 for f, o, h in zip(first, opened, has_first, strict=True)]
    rows = zip(opened, urgent, replies, first, reopened, strict=True)
    return dict(zip(ids, map(list, rows), strict=True))


def _encode_closed(tickets: dict[str, list[int]], base: int, cols: list, v3: bool = False) -> list:
    """[resolved_at, opened_at, urgent, agent_replies, first_response_at, was_fcr]: resolved_at from
    the previous ticket's (the first from ``base``), opened_at back from resolved_at, the first
    response from the opening (0 stays 0: a column of which are set). v3: the ids as
    :func:`_code_ids` (their columns first), and the first response as it is when it is -1, 0 or 1
    (the sign the reducer keeps), from the opening otherwise (a column of which are times)."""
    coded = _code_ids(tickets, cols) if v3 else _front_code(tickets)
    resolved, opened, urgent, replies, first, fcr = _rows(tickets, 6)
    cols.append(_deltas(resolved, base))
    cols.append([a - b for a, b in zip(resolved, opened, strict=True)])
    cols.extend((urgent, replies, fcr))
    if v3:
        cols.append([f if -1 <= f <= 1 else f - o for f, o in zip(first, opened, strict=True)])
        cols.append([0 if -1 <= f <= 1 else 1 for f in first])
    else:
        cols.append([f - o if f else 0 for f, o in zip(first, opened, strict=True)])
        cols.append([1 if f else 0 for f in first])
    return coded


def _decode_closed(part: list, base: int, r: _ColumnReader, v3: bool = False) -> dict[str, list[int]]:
    ids = _decode_ids(part, r) if v3 else _front_decode(part)
    resolved = _undeltas(r.take(), base)
    opened = [a - d for a, d in zip(resolved, r.take(), strict=True)]
    urgent, replies, fcr, first, is_time = r.take(), r.take(), r.take(), r.take(), r.take()
    # the flag column: v2, a first response is set (a time); v3, it is a time, not a sign
    first = [f + o if t else f for f, o, t in zip(first, opened, is_time, strict=True)]
    rows = zip(resolved, opened, urgent, replies, first, fcr, strict=True)
    return dict(zip(ids, map(list, rows), strict=True))


def _encode_nps(nps: dict[str, list[int]], base: int, index: dict[str, int], cols: list) -> list:
    """user -> [answered_at, score]: times as deltas from the previous answer's; a user who is in
    ``users`` is written as their position there."""
    at, score = _rows(nps, 2)
    cols.append(_deltas(at, base))
    cols.append(score)
    return [index.get(u, u) for u in nps]


def _decode_nps(part: list, base: int, ids: list[str], r: _ColumnReader) -> dict[str, list[int]]:
    users = [ids[u] if isinstance(u, int) else u for u in part]
    rows = zip(_undeltas(r.take(), base), r.take(), strict=True)
    return dict(zip(users, map(list, rows), strict=True))


_RULE_TIMES = (1, 2, 3, 4)  # rules.engine: [status, active_since, fired_at, last_true, resolved_at, episode]


def _encode_rules_v2(rules: dict[str, list[int]], base: int, cols: list) -> list:
    """Rule states by rule id. Only rules whose state is not all zeros (few) have rows: their row
    numbers (deltas), then status, the four times (from ``base``, 0 stays 0), episode, which times
    are set."""
    which, rows = [], []
    for i, st in enumerate(rules.values()):
        if len(st) != 6:
            raise _Unfit
        if any(st):
            which.append(i)
            rows.append(st)
    cols.append(_deltas(which, 0))
    cols.append([st[0] for st in rows])
    for c in _RULE_TIMES:
        cols.append([st[c] - base if st[c] else 0 for st in rows])
    cols.append([st[5] for st in rows])
    cols.append([sum(1 << b for b, c in enumerate(_RULE_TIMES) if st[c]) for st in rows])
    return _keys(rules)


def _decode_rules_v2(part: list, base: int, r: _ColumnReader) -> dict[str, list[int]]:
    keys = _unkeys(part)
    states = [[0] * 6 for _ in keys]
    which = _undeltas(r.take(), 0)
    status, times, episode, flags = r.take(), [r.take() for _ in _RULE_TIMES], r.take(), r.take()
    for j, i in enumerate(which):
        st = states[i]
        st[0], st[5] = status[j], episode[j]
        for b, c in enumerate(_RULE_TIMES):
            if flags[j] >> b & 1:
                st[c] = times[b][j] + base
    return dict(zip(keys, states, strict=True))


def _encode_score_history(history: dict[int, int], base_day: int, cols: list) -> object:
    """day -> score x 10: days as deltas (consecutive days: 1), scores as changes from the day before.
    All in the columns: the record's entry for the field is None."""
    cols.append(_deltas(history, base_day))
    cols.append(_deltas(history.values(), 0))
    return None


def _decode_score_history(base_day: int, r: _ColumnReader) -> dict[int, int]:
    return dict(zip(_undeltas(r.take(), base_day), _undeltas(r.take(), 0), strict=True))


def values_v2(state: AccountState, v3: bool = False) -> list[object]:
    """The v2 positional list: the column stream (lengths, widths, planes), then one entry per
    :data:`LAYOUT_V1` field, in that order (an entry is None where the field is all in the columns).
    ``v3``: the v3 list (the same but for ids and closed tickets: see :func:`encode_state_v3`)."""
    s = state
    base = _safe_base(s.last_event_at)
    base_day = base // DAY_S
    index = {u: i for i, u in enumerate(s.users)} if s.nps or s.nps_latest_user else {}
    cols: list[Sequence[int]] = []
    p = s.profile
    fields = [
        s.account_id,
        None if p is None else [p.name, _key(p.segment), p.csm_name, p.csm_email, p.slack_channel, p.signed_up_at, p.updated_at, *_profile_tail(p)],
        _encode_kinds(s.counts, s.last_seen, base, cols),
        None,  # last_seen: with counts
        s.first_event_at,
        s.last_event_at,
        _ids_bytes_v2(s.recent_ids),
        _encode_days_v2(s.days, base_day, cols),
        _encode_users_v2(s.users, s.account_id, cols, v3),
        _bitmap_bytes(s.login_days),
        s.last_login_at,
        _encode_features(s.features, base_day, cols),
        s.first_value_at,
        _encode_open(s.open_tickets, base, cols, v3),
        _encode_closed(s.closed_tickets, base, cols, v3),
        _encode_nps(s.nps, base, index, cols),
        s.nps_latest,
        None if s.nps_latest_user is None else index.get(s.nps_latest_user, s.nps_latest_user),
        s.csat_latest,
        s.mrr,
        s.mrr_history,
        s.subscription_at,
        s.plan,
        s.seats,
        s.renewal_date,
        s.unpaid_invoices,
        s.canceled_at,
        s.cancel_reason,
        _encode_score_history(s.score_history, base_day, cols),
        s.last_change_score,
        None if s.last_change_band is None else _key(s.last_change_band),
        _encode_rules_v2(s.rules, base, cols),
        s.next_due,
        s.last_eval_at,
        s.partition,
        s.offsets,
        s.owed,
        s.score_published,
        s.score_published_at,
        s.csm_sentiment,
        s.onboarded_at,
        *_engagement_tail(s),
    ]  # fmt: skip
    return [*_pack_columns(cols), *fields]


def _safe_base(value: int | None) -> int:
    return value if value is not None and -(2**62) < value < 2**62 else 0


#: A state with fewer rows than this in its maps (day buckets, users, tickets, NPS answers, score
#: history) is written in v1: v2's columns gain it little (a few bytes) and cost twice the time to
#: write and read, mostly fixed costs (a new account, an import of profiles: many such states).
V2_FROM_ROWS = 24


def encode_state_v2(state: AccountState) -> bytes:
    """The state as a binary v2 record (format byte, then msgpack, zstd-compressed when smaller); a
    small state, or one v2 cannot hold, is written as v1."""
    return _encode_columnar(state, v3=False)


def _encode_columnar(state: AccountState, v3: bool, v4: bool = False) -> bytes:
    s = state
    rows = len(s.days) + len(s.users) + len(s.open_tickets) + len(s.closed_tickets) + len(s.nps)
    if rows + len(s.score_history) < V2_FROM_ROWS:
        return encode_state_v1(state)
    try:
        values = values_v2(state, v3)
    except (_Unfit, OverflowError):
        return encode_state_v1(state)
    body = _ENCODER.encode(values)
    if len(body) >= _ZSTD_MIN:
        if v4:
            packed, fmt = _zstd_v4()[0].compress(body), FORMAT_V4_ZSTD
        elif v3:
            packed, fmt = _zstd_v3()[0].compress(body), FORMAT_V3_ZSTD
        else:
            packed, fmt = bytes(cramjam.zstd.compress(body, level=ZSTD_LEVEL_V2)), FORMAT_V2_ZSTD
        if len(packed) < len(body):
            return bytes((fmt,)) + packed
    return bytes((FORMAT_V4 if v4 else FORMAT_V3 if v3 else FORMAT_V2,)) + body


_V2_HEAD = 3  # column lengths, widths, planes


def _decode_v2(values: list, v3: bool = False) -> dict[str, Any]:
    r = _ColumnReader(*values[:_V2_HEAD])
    f = dict(zip(LAYOUT_V1, values[_V2_HEAD:], strict=False))
    base = _safe_base(f.get("last_event_at"))
    base_day = base // DAY_S
    if (p := f["profile"]) is not None:
        f["profile"] = Profile.model_construct(
            name=p[0], segment=_unkey(p[1]), csm_name=p[2], csm_email=p[3], slack_channel=p[4],
            signed_up_at=p[5], updated_at=p[6], time_zone=p[7] if len(p) > 7 else None,
            has_executive_sponsor=len(p) > 8 and bool(p[8]),
        )  # fmt: skip
    # in the order values_v2 wrote their columns
    f["counts"], f["last_seen"] = _decode_kinds(f["counts"], base, r)
    f["days"] = _decode_days_v2(f["days"], base_day, r)
    f["users"] = _decode_users_v2(f["users"], r, v3)
    ids = list(f["users"])
    f["features"] = dict(zip(f["features"], [base_day - d for d in r.take()], strict=True))
    f["open_tickets"] = _decode_open(f["open_tickets"], base, r, v3)
    f["closed_tickets"] = _decode_closed(f["closed_tickets"], base, r, v3)
    f["nps"] = _decode_nps(f["nps"], base, ids, r)
    if (latest_user := f["nps_latest_user"]) is not None:
        f["nps_latest_user"] = ids[latest_user] if isinstance(latest_user, int) else latest_user
    f["score_history"] = _decode_score_history(base_day, r)
    if (band := f["last_change_band"]) is not None:
        f["last_change_band"] = _unkey(band)
    f["rules"] = _decode_rules_v2(f["rules"], base, r)
    return f


# --- layout v3: layout v2 with numbered ids, thinner closed tickets and a zstd dictionary -------
#
# v3 is v2's positional list with three changes. Ids (users, open and closed tickets) are split into a
# stem and their trailing digits: the distinct stems once, then columns of each id's stem, number and
# digit count (``acct-00037-t000078`` costs a byte or two, not a 5-byte rest of a front-coded string).
# A closed ticket's first response is written as it is when it is the sign the reducer keeps
# (aggregate._ticket_resolved), from the opening only when it is a time (a state from before). And
# the zstd frame uses a dictionary trained on simulated states (``data/state_dict_v3.zdict``, frozen
# with the format byte: a new dictionary needs a new format byte), without a checksum.

FORMAT_V3 = 0x05  # layout v3, msgpack
FORMAT_V3_ZSTD = 0x06  # layout v3, msgpack, zstd frame with the v3 dictionary
ZSTD_LEVEL_V3 = 3
#: Trailing digits of an id read as its number, at most (past them, digits stay in the stem).
_ID_DIGITS = 18
_DIGITS = "0123456789"


def _code_ids(keys: Iterable[str], cols: list) -> list[str]:
    """Ids as the distinct stems (an id without its trailing digits), in order of first use, and
    three columns: each id's stem (its index), number (its trailing digits) and digit count (leading
    zeros are kept). Order is kept."""
    stems: dict[str, int] = {}
    which: list[int] = []
    numbers: list[int] = []
    widths: list[int] = []
    for key in keys:
        stem = key.rstrip(_DIGITS)
        digits = len(key) - len(stem)
        if digits > _ID_DIGITS:
            digits = _ID_DIGITS
            stem = key[:-digits]
        which.append(stems.setdefault(stem, len(stems)))
        numbers.append(int(key[len(stem) :]) if digits else 0)
        widths.append(digits)
    cols.extend((which, numbers, widths))
    return list(stems)


def _decode_ids(stems: list[str], r: _ColumnReader) -> list[str]:
    which, numbers, widths = r.take(), r.take(), r.take()
    return [
        stems[i] + str(n).zfill(w) if w else stems[i] for i, n, w in zip(which, numbers, widths, strict=True)
    ]


#: :func:`_code_ids` of the users of recently written accounts: account -> (ids, (stems, columns));
#: bounded like :data:`_CODED_USERS`, and used only for the same ids in the same order.
_CODED_USERS_V3: dict[str, tuple[list[str], tuple[list[str], list[list[int]]]]] = {}


def _code_users_v3(users: dict[str, int], account_id: str, cols: list) -> list[str]:
    """:func:`_code_ids` of the user ids, from the cache when the account's ids have not changed."""
    ids = list(users)
    cached = _CODED_USERS_V3.get(account_id)
    if cached is not None and cached[0] == ids:
        stems, id_cols = cached[1]
        cols.extend(id_cols)
        return stems
    start = len(cols)
    stems = _code_ids(ids, cols)
    _remember(_CODED_USERS_V3, account_id, ids, (stems, cols[start:]))
    return stems


_DICT_V3_PATH = Path(__file__).with_name("data") / "state_dict_v3.zdict"


@functools.cache
def _zstd_with(path: Path) -> tuple[Any, Any]:
    """The compressor and decompressor of frames with the dictionary at ``path`` (read once, when
    first needed)."""
    import zstandard

    zdict = zstandard.ZstdCompressionDict(path.read_bytes())
    zdict.precompute_compress(level=ZSTD_LEVEL_V3)
    compressor = zstandard.ZstdCompressor(
        level=ZSTD_LEVEL_V3, dict_data=zdict, write_checksum=False, write_dict_id=False
    )
    return compressor, zstandard.ZstdDecompressor(dict_data=zdict)


def _zstd_v3() -> tuple[Any, Any]:
    return _zstd_with(_DICT_V3_PATH)


def encode_state_v3(state: AccountState) -> bytes:
    """The state as a binary v3 record (format byte, then msgpack, in a zstd frame with the v3
    dictionary when smaller); a small state, or one the columns cannot hold, is written as v1."""
    return _encode_columnar(state, v3=True)


# --- layout v4: layout v3 with a dictionary trained on states with relationship data -----------
#
# Contract 1.1's relationship events put new strings (``meeting``, ``csm_touch``, the ``qbr_overdue``
# rule) and a relationship entry into most states; v3's dictionary, trained before them, cannot help
# with those, and the simulated p95 went from 2,011 to 2,091 bytes. v4 is v3's list exactly, in a zstd
# frame with a dictionary trained the same way (bench/train_state_dict.py --v4) on the simulator as it
# is now: 2,024 bytes at p95. Frozen with its format byte like v3's.

FORMAT_V4 = 0x07  # layout v4 (= v3), msgpack
FORMAT_V4_ZSTD = 0x08  # layout v4 (= v3), msgpack, zstd frame with the v4 dictionary
_DICT_V4_PATH = Path(__file__).with_name("data") / "state_dict_v4.zdict"


def _zstd_v4() -> tuple[Any, Any]:
    return _zstd_with(_DICT_V4_PATH)


def encode_state_v4(state: AccountState) -> bytes:
    """The state as a binary v4 record (v3's list, in a zstd frame with the v4 dictionary when
    smaller); a small state, or one the columns cannot hold, is written as v1."""
    return _encode_columnar(state, v3=True, v4=True)


class StateBrief(NamedTuple):
    """What rebuilding a partition's due schedule after a restart reads of a state (see
    :func:`decode_brief`); an :class:`AccountState` has the same attributes."""

    account_id: str
    partition: int | None
    next_due: int | None
    owed: int | None
    last_change_band: str | None


_BRIEF_AT = tuple(LAYOUT_V1.index(name) for name in StateBrief._fields)
_RAW_FIELDS = msgspec.msgpack.Decoder(list[msgspec.Raw])  # a layout's entries, each left undecoded


def decode_brief(data: bytes) -> StateBrief:
    """The :class:`StateBrief` fields of a state record (any format), without building the state:
    the record's list is split into its entries undecoded and only these five are decoded (v2's
    column stream is not read at all). A RocksDB worker reads every state of its partitions this way
    when it (re)starts: on the simulator's states 17 us instead of 113 (v2) or 19 instead of 64 (v1),
    most of what is left being the zstd frame."""
    if data[:1] == b"{":
        s = AccountState.model_validate_json(data)
        return StateBrief(s.account_id, s.partition, s.next_due, s.owed, s.last_change_band)
    fmt, body = _record_body(data)
    entries = _RAW_FIELDS.decode(body)
    if not entries:
        raise ValueError("account state record: not a positional layout")
    v2 = fmt in (FORMAT_V2, FORMAT_V2_ZSTD, FORMAT_V3, FORMAT_V3_ZSTD, FORMAT_V4, FORMAT_V4_ZSTD)
    skip = _V2_HEAD if v2 else 0  # v2, v3: the column stream comes first, then v1's field order
    n = len(entries)  # a record from before a field was added is shorter: its default (None)
    brief = StateBrief._make(_DECODER.decode(entries[skip + i]) if skip + i < n else None for i in _BRIEF_AT)
    if v2 and brief.last_change_band is not None:  # v2 writes known strings as their index
        brief = brief._replace(last_change_band=_unkey(brief.last_change_band))
    return brief
