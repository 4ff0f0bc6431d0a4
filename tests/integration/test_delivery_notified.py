"""What decides whether a resolution is sent, through real Redis: the ``notified`` mark taken before a
send (so a process dying mid-send cannot lose the resolution) and the ``closed`` record of resolved
episodes (so a replayed firing is not news), read by another connection as another process would."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from alerts.config import Receiver
from alerts.dispatch import Dispatcher
from alerts.model import Notification
from alerts.pipeline import Flush, dedupe_stage
from alerts.routing import RouteMatch, alert_labels, group_key
from alerts.store import DeliveryStore
from tests.alert_fixtures import make_alert

pytestmark = [pytest.mark.redis]
M = RouteMatch("mail", ("account", "rule"), group_wait=1, group_interval=2, repeat_interval=3600)
MAIL = Receiver.model_validate({"name": "mail", "email": {"to": ["account_csm"]}})


def flush_of(d: Dispatcher, *alerts) -> Flush:
    key = group_key(M, alert_labels(alerts[0]))
    for i, a in enumerate(alerts):
        d.add(a, [(M, key, {})], (0, i), now=0)
    snap = d.snapshot(d.groups[key])
    return Flush(snap, MAIL, snap.firing, snap.resolved)


async def test_a_firing_marked_before_its_send_gets_its_resolution_from_another_process(settings):
    one, two = Redis.from_url(settings.redis_url), Redis.from_url(settings.redis_url)
    try:
        a, b = DeliveryStore(one, settings.redis_prefix), DeliveryStore(two, settings.redis_prefix)
        fired = make_alert()
        key = group_key(M, alert_labels(fired))
        assert await a.mark_pending(key, [fired.alert_id]) == [fired.alert_id]
        # process one dies here, after (or during) the send and before its log entry
        f = flush_of(Dispatcher(), make_alert(status="resolved"))
        assert await dedupe_stage(f, b, 3600, now=10)
        assert [x.alert_id for x in f.resolved] == [fired.alert_id]  # the resolution goes out

        other = make_alert(account="other")
        okey = group_key(M, alert_labels(other))
        marked = await a.mark_pending(okey, [other.alert_id])
        await a.unmark(okey, marked)  # the send certainly failed (no connection): not notified
        f = flush_of(Dispatcher(), make_alert(account="other", status="resolved"))
        assert not await dedupe_stage(f, b, 3600, now=10) and f.resolved == []

        n = Notification(receiver="mail", group_key=okey, group_labels={}, firing=[other], resolved=[])
        await a.log(n, now=5)
        assert await a.mark_pending(okey, [other.alert_id]) == []  # notified already: kept if it fails
        assert await b.notified(okey, [other.alert_id]) == {other.alert_id}
    finally:
        await one.aclose()
        await two.aclose()


async def test_a_firing_replayed_after_its_episode_closed_is_not_sent_again(settings):
    redis = Redis.from_url(settings.redis_url)
    try:
        store = DeliveryStore(redis, settings.redis_prefix)
        fired, resolved = make_alert(), make_alert(status="resolved")
        key = group_key(M, alert_labels(fired))
        await store.log(
            Notification(receiver="mail", group_key=key, group_labels={}, firing=[fired], resolved=[]), 1
        )
        n = Notification(receiver="mail", group_key=key, group_labels={}, firing=[], resolved=[resolved])
        await store.log(n, 2, closed=[resolved.alert_id])
        # a fresh process (no memory) reads the engine's replay of the firing
        f = flush_of(Dispatcher(), fired)
        assert not await dedupe_stage(f, store, 3600, now=3)
        assert f.firing == [] and f.stale == [fired.alert_id]
        # and of the resolution: told already, not sent twice
        f = flush_of(Dispatcher(), resolved)
        assert not await dedupe_stage(f, store, 3600, now=3) and f.resolved == []
    finally:
        await redis.aclose()
