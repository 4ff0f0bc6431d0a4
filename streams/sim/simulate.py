"""A synthetic SaaS customer base, for demos, tests and benchmarks.

Accounts belong to a segment (MRR and seat ranges, CSM pool) and a persona that shapes their usage,
tickets, surveys and billing over time; some personas drift towards cancellation and cancel at the end.
Users work weekdays in their account's time zone, mostly in working hours. Every event follows contract
v1 and the stream comes out in event-time order.

Deterministic: the output depends only on the parameters. Each account draws from its own random
generator seeded with (seed, account number), so adding accounts does not change the existing ones.
The simulator also writes the ground truth (persona, churn and when) that ``healthmon evaluate`` scores
the health score against.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta, timezone

from pydantic import BaseModel

DAY_S = 86_400
KEY_FEATURES = ("dashboards", "reports", "integrations", "automation")
OTHER_FEATURES = ("search", "export", "settings", "api", "alerts", "comments", "sharing", "mobile")
#: UTC offsets (hours) accounts are spread over; events carry the account's local offset.
TIME_ZONES = (-8, -5, -5, -3, 0, 1, 1, 2, 5.5, 9, 10)


#: Makes one event: (time, kind, fields) -> (epoch seconds, contract-v1 object).
Emit = Callable[..., tuple[int, dict]]

#: What detractors and promoters write beside their score (passives leave it empty); chosen by the score,
#: not drawn, so the simulated stream is the same as before apart from the comment.
_NPS_COMMENTS = {
    "detractor": (
        "Too slow since the last release.",
        "Support takes days to answer.",
        "We are looking at alternatives.",
        "Hard to get the team to use it.",
    ),
    "promoter": (
        "The reports save us hours every week.",
        "Great support, quick answers.",
        "Easy to roll out.",
    ),
}


#: What an unhappy ticket's requester writes beside a CSAT of 1 or 2.
_CSAT_COMMENTS = {1: "Still not fixed after three replies.", 2: "The answer did not help."}


def _nps_comment(score: int) -> str | None:
    if score <= 6:
        words = _NPS_COMMENTS["detractor"]
    elif score >= 9:
        words = _NPS_COMMENTS["promoter"]
    else:
        return None
    return words[score % len(words)]


@dataclass(frozen=True)
class Segment:
    share: float
    seats: tuple[int, int]
    price_per_seat: tuple[int, int]
    plans: tuple[str, ...]
    csms: tuple[str, ...]


SEGMENTS: dict[str, Segment] = {
    "smb": Segment(0.6, (3, 15), (25, 45), ("starter", "team"), ("Priya Shah", "Dan Ortiz", "Ana Lima")),
    "mid_market": Segment(0.3, (15, 60), (40, 70), ("team", "business"), ("Mei Chen", "Tom Berg")),
    "enterprise": Segment(0.1, (60, 180), (60, 110), ("enterprise",), ("Sara Kim",)),
}


@dataclass(frozen=True)
class Persona:
    """How an account behaves. ``churn`` is the chance it cancels inside the simulated window;
    ``warning`` how strongly its behaviour changes before it does (1 = obvious, 0 = a surprise)."""

    share: float
    churn: float
    warning: float
    utilization: tuple[float, float]  # share of seats that are real users
    activity: float  # chance a user works on a given weekday
    features: int  # key features the account adopts
    tickets_per_week: float  # per 20 seats
    sentiment: float  # mean ticket-message sentiment
    csat: float  # mean CSAT answer, 1-5
    nps: float  # mean NPS answer, 0-10
    payment_failure: float  # chance an invoice fails
    trend: str = "flat"  # flat | decline | rise | onboard_then_silent


PERSONAS: dict[str, Persona] = {
    "power": Persona(0.12, 0.01, 0.3, (0.85, 1.0), 0.85, 4, 0.8, 0.3, 4.6, 9.2, 0.01),
    "steady": Persona(0.30, 0.04, 0.3, (0.6, 0.85), 0.6, 3, 0.7, 0.15, 4.2, 7.8, 0.02),
    "declining": Persona(0.12, 0.45, 0.8, (0.5, 0.75), 0.5, 2, 0.8, -0.05, 3.5, 6.0, 0.03, "decline"),
    "silent_after_onboarding": Persona(
        0.08, 0.55, 0.8, (0.4, 0.7), 0.55, 1, 0.4, 0.0, 3.8, 6.5, 0.02, "onboard_then_silent"
    ),
    "support_heavy": Persona(0.10, 0.30, 0.7, (0.55, 0.8), 0.55, 3, 4.0, -0.45, 2.4, 5.0, 0.02),
    "payment_trouble": Persona(0.08, 0.35, 0.6, (0.55, 0.8), 0.55, 2, 0.7, 0.05, 4.0, 7.0, 0.45),
    "expanding": Persona(0.12, 0.0, 0.0, (0.7, 0.9), 0.7, 3, 0.8, 0.2, 4.4, 8.6, 0.01, "rise"),
    "churning": Persona(0.08, 1.0, 1.0, (0.5, 0.75), 0.55, 2, 1.5, -0.3, 3.0, 4.0, 0.08, "decline"),
}

_NAME_A = (
    "North",
    "Blue",
    "Iron",
    "Silver",
    "Bright",
    "Red",
    "Green",
    "Stone",
    "Swift",
    "Clear",
    "High",
    "Lake",
)
_NAME_B = (
    "wind",
    "field",
    "bridge",
    "peak",
    "river",
    "forge",
    "light",
    "path",
    "works",
    "gate",
    "line",
    "wave",
)
_NAME_C = ("Labs", "Inc", "GmbH", "Group", "Systems", "Health", "Logistics", "Studio", "Partners", "Retail")


class AccountTruth(BaseModel):
    """What the simulator knows and healthmon must infer: the persona and whether the account churns."""

    account_id: str
    name: str
    segment: str
    persona: str
    csm_name: str
    csm_email: str
    seats: int
    mrr: float
    churns: bool
    canceled_at: datetime | None = None


class GroundTruth(BaseModel):
    seed: int
    start: datetime
    end: datetime
    accounts: list[AccountTruth]


@dataclass
class _Account:
    rng: random.Random
    truth: AccountTruth
    persona: Persona
    tz: timezone
    signed_up_at: int
    start_day: int  # first simulated UTC day of activity
    cancel_day: int | None
    decay_days: int
    users: list[tuple[str, float]]  # (user_id, propensity)
    features: list[str]
    price: int
    seats: int
    renewal: date
    billing_dom: int
    seq: int = 0
    unpaid: dict[str, tuple[int, float]] = field(default_factory=dict)
    #: Renewals draw from their own stream, so that they leave every other event of the account as it was.
    renew_rng: random.Random = field(default_factory=random.Random)
    plan: str = ""  # the plan of the latest subscription event
    relationship: _Relationship | None = None  # meetings and CSM touches (Simulator._relationship)

    def next_id(self) -> str:
        self.seq += 1
        return f"{self.truth.account_id}-{self.seq:06d}"


@dataclass(frozen=True)
class Cadence:
    """A segment's relationship rhythm: days between business reviews (None: none), between check-ins
    and between CSM e-mails or calls on average, and the share of accounts with an executive sponsor."""

    qbr_days: int | None
    check_in_days: float
    touch_days: float
    sponsor_share: float


#: The simulator's cadences; the scorecard's ``metrics.qbr_cadence_days`` has the same reviews.
RELATIONSHIP: dict[str, Cadence] = {
    "smb": Cadence(None, 60, 30, 0.3),
    "mid_market": Cadence(180, 30, 14, 0.7),
    "enterprise": Cadence(90, 14, 7, 1.0),
}
_SPONSOR_FIRST = ("Alex", "Jordan", "Morgan", "Riley", "Casey", "Jamie")
_SPONSOR_LAST = ("Novak", "Patel", "Garcia", "Okafor", "Larsen", "Moreau")


@dataclass
class _Relationship:
    rng: random.Random
    sponsor: bool
    qbr_due: int | None  # the day the next business review is held (or tried)
    seq: int = 0


def _cancel_ts(day: int) -> int:
    return day * DAY_S + 15 * 3600  # cancellations come in the afternoon (UTC)


def _anniversary_after(signup: date, after: date) -> date:
    """The first anniversary of ``signup`` after ``after`` (a 29 February signup renews on the 28th)."""
    day = 28 if (signup.month, signup.day) == (2, 29) else signup.day
    year = signup.year + 1
    while (renewal := signup.replace(year=year, day=day)) <= after:
        year += 1
    return renewal


def _fmt(ts: float, tz: timezone) -> str:
    return datetime.fromtimestamp(int(ts), tz).isoformat()


def _pick(rng: random.Random, table: dict) -> str:
    names = list(table)
    return rng.choices(names, weights=[table[n].share for n in names])[0]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


class Simulator:
    """Builds the accounts up front (cheap) and generates their events day by day (streamed)."""

    def __init__(self, accounts: int, days: int, seed: int, end: datetime) -> None:
        if accounts < 1 or days < 7:
            raise ValueError("simulate at least 1 account over at least 7 days")
        if end.tzinfo is None:
            raise ValueError("end must carry a time zone")
        self.seed, self.days = seed, days
        self.end = int(end.timestamp())
        self.start = self.end - days * DAY_S
        self.n_accounts = accounts
        #: The accounts as they start; every ``events()`` run works on fresh copies of them.
        self.accounts = [self._make_account(i) for i in range(accounts)]

    # --- accounts -----------------------------------------------------------------------------

    def _make_account(self, i: int) -> _Account:
        rng = random.Random(f"{self.seed}:{i}")
        seg_name = _pick(rng, SEGMENTS)
        seg = SEGMENTS[seg_name]
        persona_name = _pick(rng, PERSONAS)
        persona = PERSONAS[persona_name]
        seats = rng.randint(*seg.seats)
        price = rng.randint(*seg.price_per_seat)
        account_id = f"acct-{i:05d}"
        csm_name = rng.choice(seg.csms)
        csm_email = csm_name.split()[0].lower() + "@example.com"
        name = f"{rng.choice(_NAME_A)}{rng.choice(_NAME_B)} {rng.choice(_NAME_C)}"
        first_day = self.start // DAY_S
        last_day = self.end // DAY_S - 1
        if persona.trend == "onboard_then_silent" or rng.random() < 0.1:
            # A new customer: signs up inside the first third of the window.
            signed_up_at = (
                self.start + rng.randint(0, max(1, self.days // 3)) * DAY_S + rng.randint(0, DAY_S - 1)
            )
        else:
            signed_up_at = self.start - rng.randint(60, 900) * DAY_S
        start_day = max(first_day, signed_up_at // DAY_S)
        cancel_day = None
        if rng.random() < persona.churn:
            # Late enough to have a history before it; the simulated window's last day at the latest.
            earliest = min(last_day, max(start_day + 45, first_day + self.days * 2 // 5))
            cancel_day = rng.randint(earliest, last_day)
        n_users = max(1, round(seats * rng.uniform(*persona.utilization)))
        users = [(f"{account_id}-u{u:03d}", min(1.0, rng.uniform(0.5, 1.4))) for u in range(n_users)]
        features = list(KEY_FEATURES[: persona.features]) + rng.sample(OTHER_FEATURES, 3)
        renewal = _anniversary_after(
            datetime.fromtimestamp(signed_up_at, UTC).date(), datetime.fromtimestamp(self.start, UTC).date()
        )
        truth = AccountTruth(
            account_id=account_id,
            name=name,
            segment=seg_name,
            persona=persona_name,
            csm_name=csm_name,
            csm_email=csm_email,
            seats=seats,
            mrr=float(seats * price),
            churns=cancel_day is not None,
            canceled_at=None if cancel_day is None else datetime.fromtimestamp(_cancel_ts(cancel_day), UTC),
        )
        return _Account(
            rng=rng,
            truth=truth,
            persona=persona,
            tz=timezone(timedelta(hours=rng.choice(TIME_ZONES))),
            signed_up_at=signed_up_at,
            start_day=start_day,
            cancel_day=cancel_day,
            decay_days=rng.randint(25, 60),
            users=users,
            features=features,
            price=price,
            seats=seats,
            renewal=renewal,
            billing_dom=rng.randint(1, 28),
            renew_rng=random.Random(f"{self.seed}:{i}:renewal"),
        )

    def truth(self) -> GroundTruth:
        return GroundTruth(
            seed=self.seed,
            start=datetime.fromtimestamp(self.start, UTC),
            end=datetime.fromtimestamp(self.end, UTC),
            accounts=[a.truth for a in self.accounts],
        )

    # --- behaviour over time --------------------------------------------------------------------

    def _mood(self, a: _Account, day: int) -> float:
        """How engaged the account is on ``day``: 1 normal, towards 0 disengaged."""
        p = a.persona
        elapsed = day - a.start_day
        m = 1.0
        if p.trend == "decline":
            m = max(0.25, 1.0 - 0.6 * (day - self.start // DAY_S) / self.days)
        elif p.trend == "rise":
            m = min(1.3, 0.8 + 0.5 * (day - self.start // DAY_S) / self.days)
        elif p.trend == "onboard_then_silent":
            m = 1.0 if elapsed < 21 else max(0.05, 1.0 - (elapsed - 21) / 14)
        if a.cancel_day is not None:
            ahead = a.cancel_day - day
            if ahead < a.decay_days:
                m *= 1.0 - p.warning * 0.9 * (1 - ahead / a.decay_days)
        return max(0.0, m)

    def _events_for_day(self, a: _Account, day: int) -> Iterator[tuple[int, dict]]:
        events = self._day(a, day)
        if day != a.start_day:
            return events
        # Nothing happens before the account exists (its profile comes first on its first day).
        opened = max(a.signed_up_at, self._local_midnight(a, day), self.start)
        return (e for e in events if e[0] >= opened)

    @staticmethod
    def _local_midnight(a: _Account, day: int) -> int:
        return day * DAY_S - int(a.tz.utcoffset(None).total_seconds())

    def _day(self, a: _Account, day: int) -> Iterator[tuple[int, dict]]:
        rng, p = a.rng, a.persona
        if day < a.start_day or (a.cancel_day is not None and day > a.cancel_day):
            return
        aid = a.truth.account_id
        day_start = self._local_midnight(a, day)
        weekday = datetime.fromtimestamp(day * DAY_S, UTC).weekday()
        mood = self._mood(a, day)

        def ev(ts: float, kind: str, **fields: object) -> tuple[int, dict]:
            t = int(ts)
            return t, {
                "event_id": a.next_id(),
                "account_id": aid,
                "type": kind,
                "occurred_at": _fmt(t, a.tz),
                **fields,
            }

        if day == a.start_day:
            at = max(a.signed_up_at, day_start, self.start)
            seg = SEGMENTS[a.truth.segment]
            yield ev(
                at,
                "account",
                name=a.truth.name,
                segment=a.truth.segment,
                csm_name=a.truth.csm_name,
                csm_email=a.truth.csm_email,
                slack_channel=None if a.truth.segment == "smb" else f"#cs-{aid}",
                signed_up_at=_fmt(a.signed_up_at, a.tz),
                **self._sponsor(a),
            )
            yield self._subscription(a, at + 60, rng.choice(seg.plans), ev)

        # Usage: each user may work today, in working hours, with a few features and one session.
        work = (0.1 if weekday >= 5 else 1.0) * mood * p.activity
        for user_id, propensity in a.users:
            if rng.random() >= work * propensity:
                continue
            t = day_start + rng.gauss(9.5, 1.5) * 3600
            yield ev(t, "login", user_id=user_id)
            for _ in range(1 + _poisson(rng, 1.2 * mood)):
                t += rng.randint(60, 3600)
                yield ev(t, "feature_used", user_id=user_id, feature=rng.choice(a.features))
            duration = rng.randint(600, 5 * 3600)
            yield ev(t + 300, "session", user_id=user_id, duration_s=duration)

        # Support: tickets arrive in working hours; unhappy accounts write more and more negatively.
        unhappy = 1.0 - mood
        lam = p.tickets_per_week / 7 * math.sqrt(a.seats / 20) * (0.3 if weekday >= 5 else 1.0)
        lam *= 1 + 2 * unhappy * p.warning
        for _ in range(_poisson(rng, lam)):
            yield from self._ticket(a, day_start + rng.uniform(8, 18) * 3600, unhappy, ev)

        # Surveys: NPS about twice a year per user; detractors grow as the account sours.
        for user_id, _ in a.users:
            if rng.random() < 1 / 180:
                score = round(rng.gauss(p.nps - 4 * unhappy * p.warning, 1.5))
                score = max(0, min(10, score))
                comment = _nps_comment(score)
                yield ev(
                    day_start + rng.uniform(9, 17) * 3600,
                    "nps",
                    user_id=user_id,
                    score=score,
                    **({"comment": comment} if comment else {}),
                )

        yield from self._billing(a, day, day_start, mood, ev)
        yield from self._relationship(a, day, day_start, weekday, mood)

    def _subscription(self, a: _Account, at: float, plan: str, ev: Emit) -> tuple[int, dict]:
        a.plan = plan
        return ev(
            at,
            "subscription",
            mrr=str(a.seats * a.price),
            plan=plan,
            seats=a.seats,
            renewal_date=a.renewal.isoformat(),
        )

    def _ticket(self, a: _Account, opened: float, unhappy: float, ev: Emit) -> Iterator[tuple[int, dict]]:
        rng, p = a.rng, a.persona
        tid = f"{a.truth.account_id}-t{a.seq + 1:06d}"
        sentiment = p.sentiment - 0.6 * unhappy * p.warning

        def feel() -> float:
            return round(max(-1.0, min(1.0, rng.gauss(sentiment, 0.3))), 2)

        priority = rng.choices(("low", "normal", "high", "urgent"), weights=(3, 6, 2, 0.5 + 2 * unhappy))[0]
        yield ev(opened, "ticket_opened", ticket_id=tid, priority=priority, sentiment=feel())
        t = opened + rng.uniform(0.2, 8 if priority != "urgent" else 1) * 3600
        yield ev(t, "ticket_replied", ticket_id=tid, author="agent", sentiment=0.3)
        for _ in range(_poisson(rng, 0.8)):
            t += rng.uniform(0.5, 20) * 3600
            yield ev(t, "ticket_replied", ticket_id=tid, author="customer", sentiment=feel())
        t += rng.uniform(1, 60) * 3600
        yield ev(t, "ticket_resolved", ticket_id=tid)
        if rng.random() < 0.1 + 0.2 * unhappy:
            t += rng.uniform(2, 48) * 3600
            yield ev(t, "ticket_reopened", ticket_id=tid)
            t += rng.uniform(2, 48) * 3600
            yield ev(t, "ticket_resolved", ticket_id=tid)
        if rng.random() < 0.35:
            score = round(rng.gauss(p.csat - 1.5 * unhappy * p.warning, 0.8))
            score = max(1, min(5, score))
            said = {"comment": _CSAT_COMMENTS[score]} if score in _CSAT_COMMENTS else {}
            yield ev(t + rng.uniform(0.1, 24) * 3600, "csat", ticket_id=tid, score=score, **said)
        if rng.random() < 0.15:
            score = round(rng.gauss(2.5 + 3 * unhappy * p.warning, 1.0))
            user = rng.choice(a.users)[0]
            yield ev(t + rng.uniform(0.1, 24) * 3600, "ces", user_id=user, score=max(1, min(7, score)))

    def _billing(
        self, a: _Account, day: int, day_start: int, mood: float, ev: Emit
    ) -> Iterator[tuple[int, dict]]:
        rng, p = a.rng, a.persona
        today = datetime.fromtimestamp(day * DAY_S, UTC).date()
        at = day_start + 6 * 3600
        for invoice_id, (failed_day, amount) in list(a.unpaid.items()):
            # A failed invoice is retried after a few days; a souring account may not pay at all.
            if day - failed_day >= 4 and rng.random() < 0.5 * (mood if a.cancel_day is not None else 1.0):
                del a.unpaid[invoice_id]
                yield ev(at, "invoice_paid", invoice_id=invoice_id, amount=f"{amount:.2f}")
        if today.day == a.billing_dom and day > a.start_day:
            invoice_id = f"inv-{a.truth.account_id}-{today:%Y%m}"
            amount = float(a.seats * a.price)
            fail = p.payment_failure * (1 + 2 * (1 - mood) * p.warning)
            if rng.random() < fail:
                a.unpaid[invoice_id] = (day, amount)
                yield ev(at, "payment_failed", invoice_id=invoice_id, amount=f"{amount:.2f}")
            else:
                yield ev(at, "invoice_paid", invoice_id=invoice_id, amount=f"{amount:.2f}")
        # Seat changes: expanding accounts grow, declining ones trim seats before they leave.
        change = 0
        if p.trend == "rise" and rng.random() < 1 / 30:
            change = max(1, round(a.seats * rng.uniform(0.1, 0.3)))
        elif mood < 0.6 and a.seats > 3 and rng.random() < 1 / 40:
            change = -max(1, round(a.seats * rng.uniform(0.1, 0.3)))
        if change:
            a.seats += change
            if change > 0:
                n = len(a.users)
                a.users.extend(
                    (f"{a.truth.account_id}-u{n + u:03d}", rng.uniform(0.5, 1.0)) for u in range(change)
                )
            yield self._subscription(a, at + 3600, SEGMENTS[a.truth.segment].plans[-1], ev)
        if today >= a.renewal:
            yield from self._renew(a, day, today, day_start, mood)
        if a.cancel_day == day:
            reason = rng.choice(("budget", "switched to a competitor", "not enough value", "company closed"))
            yield ev(_cancel_ts(day), "subscription_canceled", reason=reason)

    def _renew(
        self, a: _Account, day: int, today: date, day_start: int, mood: float
    ) -> Iterator[tuple[int, dict]]:
        """The renewal, as docs/portfolio.md defines it: a subscription event moving the renewal date a year
        on, the subscription paid. Healthy accounts renew on the day; souring ones (``mood``) and those
        bound to cancel seldom, and an account with an unpaid invoice only once it has paid; one that has
        not renewed may still do so late, a little each day (meanwhile it is overdue)."""
        if a.unpaid or (a.cancel_day is not None and day >= a.cancel_day):
            return
        late = today > a.renewal
        if a.cancel_day is not None:
            chance = (0.02 if late else 0.15) * mood
        else:
            chance = 0.1 * mood if late else min(1.0, 0.3 + 0.7 * mood)
        if a.renew_rng.random() >= chance:
            return
        due, signup = a.renewal, datetime.fromtimestamp(a.signed_up_at, UTC).date()
        a.renewal = _anniversary_after(signup, max(today, due))
        t = day_start + 10 * 3600
        aid = a.truth.account_id
        yield (
            t,
            {
                "event_id": f"{aid}-renewal-{due:%Y%m%d}",
                "account_id": aid,
                "type": "subscription",
                "occurred_at": _fmt(t, a.tz),
                "mrr": str(a.seats * a.price),
                "plan": a.plan,
                "seats": a.seats,
                "renewal_date": a.renewal.isoformat(),
            },
        )

    # --- relationship: meetings and CSM touches (contract 1.1) ------------------------------------
    #
    # Drawn from a generator of their own and numbered apart (``-r`` ids), so the rest of the stream
    # is the same event for event as before they existed. Meetings follow the segment's cadence
    # (RELATIONSHIP); an account heading to churn meets less, cancels more and sees its executive less.

    def _rel_rng(self, a: _Account, what: str) -> random.Random:
        return random.Random(f"{self.seed}:{a.truth.account_id}:{what}")

    def _sponsor(self, a: _Account) -> dict[str, str]:
        """The account's executive sponsor, if it has one (on its profile event)."""
        rng = self._rel_rng(a, "sponsor")
        if rng.random() >= RELATIONSHIP[a.truth.segment].sponsor_share:
            return {}
        return {"executive_sponsor": f"{rng.choice(_SPONSOR_FIRST)} {rng.choice(_SPONSOR_LAST)}"}

    def _relationship(
        self, a: _Account, day: int, day_start: int, weekday: int, mood: float
    ) -> Iterator[tuple[int, dict]]:
        cad = RELATIONSHIP[a.truth.segment]
        r = a.relationship
        if r is None:
            rng = self._rel_rng(a, "meetings")
            # The last review before the window (not emitted) sets when the next one is due.
            qbr_due = day + rng.randint(1, cad.qbr_days) if cad.qbr_days else None
            r = a.relationship = _Relationship(rng, bool(self._sponsor(a)), qbr_due)
        if weekday >= 5:
            return
        rng, p = r.rng, a.persona
        unhappy = (1.0 - mood) * p.warning
        aid = a.truth.account_id

        def emit(hour: float, type_: str, **fields: object) -> tuple[int, dict]:
            r.seq += 1
            t = int(day_start + hour * 3600)
            return t, {
                "event_id": f"{aid}-r{r.seq:05d}",
                "account_id": aid,
                "type": type_,
                "occurred_at": _fmt(t, a.tz),
                **fields,
            }

        def meeting(kind: str, exec_chance: float, extra_cancel: float = 0.0) -> tuple[int, dict]:
            held = rng.random() >= min(0.9, 0.08 + extra_cancel + 0.7 * unhappy)
            attendees = [{"role": "champion"}] + [{"role": "user"}] * rng.randint(0, 3)
            if held and r.sponsor and rng.random() < exec_chance * (1.0 - 0.9 * unhappy):
                attendees.append({"role": "executive"})
            return emit(
                rng.uniform(10, 16),
                "meeting",
                meeting_id=f"{aid}-m{r.seq + 1:05d}",
                kind=kind,
                status="held" if held else "cancelled",
                attendees=attendees,
                **({"duration_min": rng.choice((30, 45, 60))} if held else {}),
            )

        tenure = day - a.signed_up_at // DAY_S
        if tenure in (2, 9):
            yield meeting("onboarding", 0.3)
        elif tenure == 23:
            yield meeting("training", 0.0)
        if r.qbr_due is not None and day >= r.qbr_due:
            t, m = meeting("qbr", 0.85, extra_cancel=0.05)
            yield t, m
            # Held: the next one a cadence later; cancelled: rescheduled in one to three weeks.
            r.qbr_due = day + (cad.qbr_days or 0) if m["status"] == "held" else day + rng.randint(7, 21)
        elif rng.random() < 7 / 5 / cad.check_in_days * (0.3 + 0.7 * mood):
            yield meeting("check_in", 0.1)
        if rng.random() < 7 / 5 / cad.touch_days * (0.5 + 0.5 * mood):
            executive = r.sponsor and rng.random() < 0.2 * (1.0 - 0.9 * unhappy)
            yield emit(
                rng.uniform(9, 18),
                "csm_touch",
                channel=rng.choice(("email", "email", "call")),
                contact_role="executive" if executive else "champion",
                csm_email=a.truth.csm_email,
            )

    # --- the stream ---------------------------------------------------------------------------

    def events(self, days_after: int = 0) -> Iterator[dict]:
        """All events in event-time order, up to ``end`` (plus ``days_after`` days, for ``--follow``).

        Days are generated one at a time; an event can only be released once no later day can
        produce an earlier one (time zones and tickets that stay open for days push events ahead).
        """
        first = self.start // DAY_S
        last = self.end // DAY_S + days_after
        stop = self.end + days_after * DAY_S
        heap: list[tuple[int, int, dict]] = []
        n = 0

        def release(before: float) -> Iterator[dict]:
            while heap and heap[0][0] < before:
                ts, _, event = heapq.heappop(heap)
                if self.start <= ts < stop:
                    yield event

        # A run changes its accounts (seats, users, unpaid invoices): it works on fresh ones, so the
        # same simulator gives the same events every time.
        accounts = [self._make_account(i) for i in range(self.n_accounts)]
        for day in range(first - 1, last + 1):
            for a in accounts:
                for ts, event in self._events_for_day(a, day):
                    n += 1
                    heapq.heappush(heap, (ts, n, event))
            yield from release((day + 1) * DAY_S - 14 * 3600)  # local days start <= 14 h before UTC's
        yield from release(math.inf)
