"""The changelog record of an account state: binary v1 round-trips exactly, old JSON still loads, and
its size on the simulator's mix is reported (and held against regressions)."""

from __future__ import annotations

import statistics
from array import array
from datetime import UTC, datetime

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rules.engine import DEFAULT_RULES, load_rules
from streams.engine import Engine
from streams.events import EVENT_ADAPTER
from streams.scoring import load_scoring
from streams.simulate import Simulator
from streams.state import (
    FORMAT_V1,
    FORMAT_V1_ZSTD,
    LAYOUT_V1,
    MAX_USERS,
    AccountState,
    Profile,
    StateBrief,
    bitmap_mark,
    decode_brief,
)


@pytest.fixture(scope="module")
def simulated() -> list[AccountState]:
    """A fixed simulated book: 120 accounts, 90 days of history folded in, evaluated at the end."""
    sim = Simulator(120, 90, seed=42, end=datetime(2026, 11, 1, tzinfo=UTC))
    engine = Engine(load_scoring(None), load_rules(DEFAULT_RULES))
    states: dict[str, AccountState] = {}
    for e in sim.events():
        ev = EVENT_ADAPTER.validate_python(e)
        s = states.get(ev.account_id) or states.setdefault(
            ev.account_id, AccountState(account_id=ev.account_id)
        )
        engine.apply(s, ev, 0)
    for s in states.values():
        engine.evaluate(s, int(sim.end))
    return list(states.values())


def test_every_field_has_a_place_in_the_layout() -> None:
    assert set(LAYOUT_V1) == set(AccountState.model_fields)
    assert len(LAYOUT_V1) == len(set(LAYOUT_V1))


def test_simulated_states_round_trip_exactly(simulated: list[AccountState]) -> None:
    for s in simulated:
        raw = s.dumps()
        assert raw[0] in (FORMAT_V1, FORMAT_V1_ZSTD)
        back = AccountState.loads(raw)
        # what the JSON format kept (it drops day buckets' trailing zeros, so does v1)
        assert back == AccountState.loads(s.dumps_json()), s.account_id
        assert back.dumps() == raw
        # insertion order decides ties (the user cap, the closed-ticket cap): it survives
        assert list(back.users) == list(s.users)
        assert list(back.closed_tickets) == list(s.closed_tickets)
        assert list(back.days) == list(s.days)


def test_old_json_records_still_load(simulated: list[AccountState]) -> None:
    for s in simulated[:20]:
        old = s.dumps_json()
        assert old[:1] == b"{"
        assert AccountState.loads(old) == AccountState.loads(s.dumps())
    assert AccountState.loads(b'{"account_id":"a"}') == AccountState(account_id="a")


def test_an_unknown_format_byte_is_refused() -> None:
    with pytest.raises(ValueError, match="format byte 0x7f"):
        AccountState.loads(b"\x7f\x90")
    with pytest.raises(ValueError, match="format byte 0x7f"):
        decode_brief(b"\x7f\x90")


def brief_of(s: AccountState) -> StateBrief:
    return StateBrief(*(getattr(s, name) for name in StateBrief._fields))


def test_a_brief_has_the_schedule_fields_of_every_format(simulated: list[AccountState]) -> None:
    """What a restart reads of each state (RocksStateStore.briefs): the same values as a full decode,
    from binary v1 (compressed or not), from old JSON, and from a record shorter than the layout."""
    formats = set()
    for i, s in enumerate(simulated):
        s = s.model_copy(update={"partition": i % 3, "owed": (None, s.last_eval_at)[i % 2]})
        raw = s.dumps()
        formats.add(raw[0])
        assert decode_brief(raw) == brief_of(AccountState.loads(raw)) == brief_of(s), s.account_id
        assert decode_brief(s.dumps_json()) == brief_of(s)
    small = AccountState(account_id="a", partition=1, next_due=86_400, last_change_band="red")
    formats.add(small.dumps()[0])
    assert decode_brief(small.dumps()) == StateBrief("a", 1, 86_400, None, "red")
    assert formats == {FORMAT_V1, FORMAT_V1_ZSTD}
    # A record from before the later fields existed: they read as their defaults.
    old = bytes((FORMAT_V1,)) + msgspec.msgpack.encode(["b", None])
    assert decode_brief(old) == StateBrief("b", None, None, None, None) == brief_of(AccountState.loads(old))


def test_size_on_the_simulated_mix(simulated: list[AccountState]) -> None:
    """A size, not a timing: deterministic for this fixed book. The goal is 2 KB at p95; v1 holds the
    median near it and the tail at a third of JSON's (see docs/processing.md)."""
    new = sorted(len(s.dumps()) for s in simulated)
    old = sorted(len(s.dumps_json()) for s in simulated)

    def pct(xs: list[int]) -> tuple[int, int, int]:
        return xs[len(xs) // 2], xs[int(len(xs) * 0.95)], xs[-1]

    p50, p95, top = pct(new)
    print(f"\nstate bytes, binary v1: p50 {p50}, p95 {p95}, max {top}; JSON: p50/p95/max {pct(old)}")
    assert p50 <= 2_400 and p95 <= 4_300 and top <= 7_500
    assert statistics.mean(new) < statistics.mean(old) / 2.5


profiles = st.builds(
    Profile,
    name=st.text(max_size=20),
    segment=st.sampled_from(["smb", "enterprise"]),
    csm_name=st.text(max_size=10),
    csm_email=st.just("a@example.com"),
    slack_channel=st.none() | st.text(max_size=10),
    signed_up_at=st.integers(0, 2**40),
    updated_at=st.integers(0, 2**40),
)
ints = st.integers(-(2**62), 2**62)
ids = st.text(min_size=0, max_size=24)


@st.composite
def states(draw: st.DrawFn) -> AccountState:
    users: dict[str, int] = {}
    for user, marks in draw(
        st.dictionaries(ids, st.lists(st.integers(19_000, 21_000), min_size=1, max_size=5))
    ).items():
        packed = 0
        for day in marks:
            packed = bitmap_mark(packed, day)
        users[user] = packed
    login_days = 0
    for day in draw(st.lists(st.integers(19_000, 21_000), max_size=5)):
        login_days = bitmap_mark(login_days, day)
    return AccountState(
        account_id=draw(ids),
        profile=draw(st.none() | profiles),
        counts=draw(st.dictionaries(ids, st.integers(0, 2**40))),
        last_seen=draw(st.dictionaries(ids, ints)),
        first_event_at=draw(st.none() | ints),
        recent_ids=array("Q", draw(st.lists(st.integers(0, 2**64 - 1), max_size=64))),
        days=draw(st.dictionaries(st.integers(0, 2**17 - 1), st.lists(ints, min_size=1, max_size=19))),
        users=users,
        login_days=login_days,
        features=draw(st.dictionaries(ids, st.integers(0, 2**17))),
        open_tickets=draw(st.dictionaries(ids, st.lists(ints, min_size=5, max_size=5))),
        closed_tickets=draw(st.dictionaries(ids, st.lists(ints, min_size=6, max_size=6))),
        nps=draw(st.dictionaries(ids, st.lists(ints, min_size=2, max_size=2))),
        mrr_history=draw(st.lists(st.tuples(ints, st.text(max_size=8)), max_size=4)),
        unpaid_invoices=draw(st.dictionaries(ids, st.tuples(ints, st.text(max_size=8)))),
        score_history=draw(st.dictionaries(st.integers(0, 2**17), st.integers(0, 1000))),
        last_change_score=draw(st.none() | st.floats(allow_nan=False, allow_infinity=False)),
        rules=draw(st.dictionaries(ids, st.lists(ints, max_size=6))),
        offsets=draw(st.lists(st.integers(-1, 2**62), min_size=5, max_size=5)),
        csm_sentiment=draw(st.none() | st.tuples(ints, st.floats(-1, 1))),
    )


@settings(max_examples=150, deadline=None)
@given(states())
def test_any_state_round_trips(s: AccountState) -> None:
    back = AccountState.loads(s.dumps())
    assert back == AccountState.loads(s.dumps_json())
    assert list(back.users) == list(s.users) and list(back.days) == list(s.days)
    assert decode_brief(s.dumps()) == brief_of(back)


def test_the_user_cap_bounds_a_huge_account() -> None:
    """10,000 active users: the map stops at the cap (the least recently active are forgotten), and
    the record stays a bounded size."""
    from streams import events as ev
    from streams.aggregate import apply_event

    s = AccountState(account_id="big")
    for i in range(10_000):
        e = ev.EVENT_ADAPTER.validate_python(
            {
                "event_id": f"e{i}",
                "account_id": "big",
                "type": "login",
                "user_id": f"user-{i:05d}@big.example",
                "occurred_at": datetime.fromtimestamp(1_780_000_000 + i * 60, UTC).isoformat(),
            }
        )
        apply_event(s, e)
    assert len(s.users) == MAX_USERS
    assert "user-09999@big.example" in s.users and "user-00000@big.example" not in s.users
    size = len(s.dumps())
    print(f"\n{MAX_USERS} users: {size} bytes (JSON {len(s.dumps_json())})")
    assert size < 64 * 1024
    assert AccountState.loads(s.dumps()) == AccountState.loads(s.dumps_json())


def test_a_busy_account_written_again_codes_its_current_users() -> None:
    """The coded user ids are reused only while the ids are the same, in the same order."""
    state = AccountState(account_id="busy")
    state.users = {f"busy-u{i:04d}": (1 << 17) | 20_000 for i in range(100)}
    for change in range(4):
        record = state.dumps()
        assert AccountState.loads(record).users == state.users
        assert AccountState.loads(state.dumps()).users == state.users  # from the cache
        if change == 0:
            state.users["busy-u9999"] = (1 << 17) | 20_001  # a new user
        elif change == 1:
            del state.users["busy-u0003"]  # a forgotten one
        else:  # the same ids in another order
            state.users = dict(reversed(state.users.items()))
