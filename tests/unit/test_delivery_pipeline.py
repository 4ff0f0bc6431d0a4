"""Delivery stages on a fake clock (looptime fast-forwards the event loop: no real sleeps)."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from alerts.config import EmailConfig
from alerts.digest import ended_sections, rows
from alerts.model import Notification
from alerts.notifiers import RetryableError
from alerts.notifiers.alertmanager import postable
from alerts.notifiers.email import build_message
from alerts.notifiers.slack import render as slack_render
from alerts.pipeline import LoopClock, ReceiverGate, retry_stage
from alerts.ratelimit import reserve
from tests.alert_fixtures import make_alert

EPOCH = 1_770_000_000.0


@pytest.mark.looptime
async def test_the_rate_limit_holds_however_many_flushes_run_at_once():
    clock = LoopClock(EPOCH)
    # 4 a second: intervals exact in binary floating point (on a fast-forwarded loop, 0.2 s steps
    # leave aiolimiter a rounding residue it waits on forever; real time moves past it)
    gate = ReceiverGate.for_rate(4)
    sent: list[float] = []

    async def flush() -> None:
        await gate.wait_stage(clock)
        await gate.rate_stage()
        sent.append(clock.time() - EPOCH)

    await asyncio.gather(*(flush() for _ in range(60)))
    assert len(sent) == 60
    # a leaky bucket of 4 a second: by time t at most 4 (the bucket) + 4 t have gone out
    for i, t in enumerate(sorted(sent)):
        assert i + 1 <= 4 + 4 * t + 1e-6, (i, t)
    assert max(sent) >= (60 - 4) / 4 - 0.01


@pytest.mark.looptime
async def test_a_slow_rate_below_one_a_second():
    clock = LoopClock(EPOCH)
    gate = ReceiverGate.for_rate(0.5)
    times = []
    for _ in range(3):
        await gate.rate_stage()
        times.append(clock.time() - EPOCH)
    assert times[1] - times[0] >= 1.99 and times[2] - times[1] >= 1.99


class Flaky:
    """A channel that answers 429 with Retry-After a few times (a Notifier: the interface is one method)."""

    channel = "test"

    def __init__(self, failures: int, retry_after: float | None) -> None:
        self.failures = failures
        self.retry_after = retry_after
        self.calls: list[float] = []
        self.clock = LoopClock(EPOCH)

    async def notify(self, n: Notification) -> None:
        self.calls.append(self.clock.time() - EPOCH)
        if self.failures:
            self.failures -= 1
            raise RetryableError("429", retry_after=self.retry_after, maybe_delivered=False)


@pytest.mark.looptime
async def test_retry_after_pauses_the_whole_receiver():
    clock = LoopClock(EPOCH)
    gate = ReceiverGate.for_rate(100)
    notifier = Flaky(failures=1, retry_after=7)
    n = Notification(receiver="r", group_key="g", group_labels={}, firing=[make_alert()], resolved=[])
    failed = await retry_stage(gate, notifier, n, clock, attempt=0, cap=300)
    assert failed is not None and failed.at == pytest.approx(EPOCH + 7) and not failed.maybe_delivered
    await gate.wait_stage(clock)  # another group of the same receiver waits too
    assert clock.time() - EPOCH == pytest.approx(7)
    assert await retry_stage(gate, notifier, n, clock, attempt=1, cap=300) is None
    assert notifier.calls == pytest.approx([0, 7])


@pytest.mark.looptime
async def test_retry_after_is_capped_and_backoff_is_bounded():
    clock = LoopClock(EPOCH)
    gate = ReceiverGate.for_rate(100)
    n = Notification(receiver="r", group_key="g", group_labels={}, firing=[make_alert()], resolved=[])
    capped = await retry_stage(gate, Flaky(1, 3600), n, clock, 0, cap=60)
    assert capped is not None and capped.at == pytest.approx(EPOCH + 60)
    failed = await retry_stage(gate, Flaky(1, None), n, clock, 10, cap=60)
    assert failed is not None and EPOCH <= failed.at <= EPOCH + 60


def digest() -> Notification:
    a1 = make_alert(account="acme", name="Acme Corp", episode=1_770_000_000)
    a2 = make_alert(account="acme", rule="nps_detractor", name="Acme Corp", episode=1_770_086_400)
    b = make_alert(account="bolt", name="Bolt Ltd", episode=1_769_000_000)
    c = make_alert(account="cask", name="Cask Inc", status="resolved")
    return Notification(
        receiver="csm-email",
        group_key="csm-email|csm=ana@example.com",
        group_labels={"csm": "ana@example.com"},
        firing=[b, a1, a2],
        resolved=[c],
        new=[a2.alert_id],
        accounts={
            "acme": {"score": "38.4", "band": "red", "mrr": "1250.00", "renewal": "2026-03-01"},
            "bolt": {"score": "55", "band": "yellow", "mrr": "300"},
        },
    )


def test_digest_puts_new_first_one_line_per_account_with_latest_figures():
    n = digest()
    r = rows(n, n.firing, "https://cs.example.com")
    assert [x.name for x in r] == ["Acme Corp", "Bolt Ltd"]  # NEW first
    assert r[0].new and r[0].score == "38" and r[0].band == "red" and r[0].mrr == "$1,250"
    assert r[0].renewal == "renews 2026-03-01" and r[0].link == "https://cs.example.com/accounts/acme"
    assert [i.new for i in r[0].items] == [True, False]
    # acme's alerts fired while it was yellow; it is red now: each item says what held when it fired
    assert {i.at_firing for i in r[0].items} == {"health 42 (yellow) when it fired"}
    assert r[1].renewal == "" and {i.at_firing for i in r[1].items} == {""}  # bolt: still yellow


def test_a_passed_renewal_date_and_a_cancellation_are_never_written_as_coming_or_recovered():
    n = digest()
    n.accounts["acme"].update(renewal="2025-10-12", renewal_overdue="1")
    gone = make_alert(account="dune", name="Dune Co", status="resolved").model_copy(
        update={"ended_by": "cancelled"}
    )
    n.resolved.append(gone)
    assert rows(n, n.firing, "")[0].renewal == "renewal overdue since 2025-10-12"
    sections = {heading: [r.name for r in rs] for heading, rs in ended_sections(n)}
    assert sections == {"Closed: account cancelled": ["Dune Co"], "Recovered": ["Cask Inc"]}
    cfg = EmailConfig(to=["account_csm"], sender="healthmon@example.com")
    text = build_message(cfg, n, ["ana@example.com"]).get_body(("plain",)).get_content()
    closed, recovered = text.index("Closed: account cancelled:"), text.index("Recovered:")
    assert "Dune Co" in text[closed:recovered] and "Dune Co" not in text[recovered:]
    assert "renews 2025-10-12" not in text and "renewal overdue since 2025-10-12" in text
    blocks = slack_render(n)["blocks"]
    ended = [b["elements"][0]["text"] for b in blocks if b["type"] == "context"]
    assert any("*Closed: account cancelled:* Dune Co" in t for t in ended)
    assert not any("Recovered" in t and "Dune" in t for t in ended)


def test_plain_text_digest_has_one_item_per_line():
    n = digest()
    cfg = EmailConfig(to=["account_csm"], sender="healthmon@example.com")
    msg = build_message(cfg, n, ["ana@example.com"], "https://cs.example.com")
    text = msg.get_body(("plain",)).get_content()
    lines = text.splitlines()
    head = [ln for ln in lines if ln.startswith(("NEW ", "    Acme", "    Bolt"))]
    assert head[0].startswith("NEW Acme Corp: health 38 (red), MRR $1,250, renews 2026-03-01, since ")
    assert head[1].startswith("    Bolt Ltd: health 55 (yellow), MRR $300, since 2026-01-21")
    assert sum("Acme Corp" in ln for ln in lines) == 1  # one line per account
    assert "    * A user answered" not in text  # descriptions come from the alerts
    assert any(ln.strip() == "https://cs.example.com/accounts/acme" for ln in lines)
    assert "Recovered:" in lines and any(ln.startswith("    Cask Inc: ") for ln in lines)
    assert "(1 new)" in msg["Subject"]
    print(text)


def test_alertmanager_postable_alert():
    from datetime import UTC, datetime

    now = datetime(2026, 2, 1, tzinfo=UTC)
    body = postable(make_alert(), now, 86400, "https://cs.example.com")
    assert body["labels"]["alertname"] == "no_login_14d" and body["labels"]["account"] == "acme"
    assert body["endsAt"] == "2026-02-02T00:00:00Z" and body["generatorURL"].endswith("/accounts/acme")
    resolved = postable(make_alert(status="resolved"), now, 86400, "")
    assert resolved["endsAt"] <= "2026-02-01T00:00:00Z" and "generatorURL" not in resolved


def test_gcra_reserves_slots_one_interval_apart_whoever_asks():
    """The rate limit's arithmetic (the Lua script in alerts/ratelimit.py does the same in Redis)."""
    interval = 200_000  # 5 a second, in microseconds
    tat, waits = 0, []
    for now in [1_000_000, 1_000_000, 1_000_000, 1_050_000, 2_000_000, 5_000_000]:
        wait, tat = reserve(tat, now, interval)
        waits.append(wait)
    # three at once: now, +0.2 s, +0.4 s; one 50 ms later queues behind them (+0.6 s from the start);
    # after an idle second and more, the next goes at once
    assert waits == [0, 200_000, 400_000, 550_000, 0, 0]
    assert tat == 5_200_000
    starts = []
    tat = 0
    for i in range(100):  # a crowd asking at random times: every start is an interval after the last
        now = 1_000_000 + i * 37_000
        wait, tat = reserve(tat, now, interval)
        starts.append(now + wait)
    assert all(b - a >= interval for a, b in itertools.pairwise(starts))
