"""Engine time: low watermark across topics, the hold, and the due schedule."""

from rules.engine import load_rules
from streams.engine import Engine, HeldWatermark, Watermarks
from streams.scoring import load_scoring
from streams.state import AccountState

TOPICS = ["usage", "billing", "surveys"]


def test_low_watermark_waits_for_topics_with_unread_messages():
    w = Watermarks()
    hw = {("usage", 0): 10, ("billing", 0): 2, ("surveys", 0): 0}
    w.seen("usage", 0, 5, 500)
    assert w.low(0, TOPICS, lambda t, p: hw[(t, p)]) is None  # billing has data we have not seen
    w.seen("billing", 0, 0, 100)
    assert w.low(0, TOPICS, lambda t, p: hw[(t, p)]) == 100  # billing lags: it holds time back
    w.seen("billing", 0, 1, 200)
    assert w.low(0, TOPICS, lambda t, p: hw[(t, p)]) == 500  # billing caught up; surveys is empty
    w.seen("usage", 0, 9, 700)
    assert w.low(0, TOPICS, lambda t, p: hw[(t, p)]) == 700  # all caught up: the latest event time


def test_a_rejected_message_still_counts_as_read():
    w = Watermarks()
    w.seen("usage", 0, 0, 300)
    w.seen("billing", 0, 0, None)
    assert w.low(0, ["usage", "billing"], lambda t, p: 1) == 300


def test_the_hold_releases_a_watermark_only_after_it_was_seen_long_enough():
    h = HeldWatermark(hold_s=2.0)
    h.offer(0, 100, now=10.0)
    h.offer(0, 200, now=11.0)
    h.offer(0, 150, now=11.5)  # never goes back
    assert h.effective(0, now=11.9) is None
    assert h.effective(0, now=12.0) == 100
    assert h.effective(0, now=13.5) == 200


def test_due_schedule_skips_stale_entries_and_rebuilds():
    engine = Engine(load_scoring(), load_rules())
    state = AccountState(account_id="a", partition=3)
    engine.evaluate(state, 86_400 * 10 + 5)
    first = state.next_due
    assert first == 86_400 * 11
    engine.evaluate(state, 86_400 * 10 + 50)  # re-evaluated: a second entry, same due
    due = list(engine.pop_due(3, first))
    assert [d for _, d in due] == [first, first]
    engine.rebuild([state, AccountState(account_id="b", partition=4, next_due=7)], {3})
    assert engine.next_due(3) == first and engine.next_due(4) is None
