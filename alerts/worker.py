"""``healthmon deliver``: cs.alerts (+ task reminders and escalations) -> routing -> groups -> silence -> dedupe -> wait -> rate -> retry -> send.

Its own consumer group, so a slow or broken channel never stalls scoring, and any number of ``deliver``
processes share it: a rebalance listener lets each commit only the partitions it owns. A partition it
loses is let go only once none of its flushes runs any more: those still queued for the rate limit are
cancelled (nothing went out; the new owner re-reads them), those sending are awaited (bounded by the
channel's timeout), so an old owner never sends after the new one has read the same records.
At-least-once: an offset is committed only once every notification that needs its record has been
delivered (or deliberately dropped), so a restart re-reads what was pending; the notification log in
Redis keeps that from sending anything twice, except what a process killed between a send and its log
entry sent (the only duplicates left). A firing is marked notified before it is sent, so its resolution
is sent whoever reads it, after any crash. The rate limit per receiver is held in Redis across processes.

Task reminders and escalations (``cs.task-notices``, alerts/tasknotices.py) are read by the same
consumer and go the same way as alerts. Positions are (partition, offset) pairs: a notice's partition
is numbered ``NOTICE_PARTITIONS + p`` so that both topics share the dispatcher's bookkeeping.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import ValidationError
from redis.asyncio import Redis

from alerts.config import Receiver, RoutingConfig, load_routing
from alerts.dispatch import Dispatcher, Group, Position
from alerts.links import TaskLinks
from alerts.notifiers import Notifier, PermanentError
from alerts.notifiers.alertmanager import AlertmanagerNotifier
from alerts.notifiers.email import EmailNotifier, SmtpSettings
from alerts.notifiers.slack import SlackNotifier
from alerts.notifiers.webhook import WebhookNotifier
from alerts.pipeline import (
    Clock,
    Flush,
    LoopClock,
    ReceiverGate,
    backoff,
    dedupe_stage,
    retry_stage,
    silence_stage,
)
from alerts.ratelimit import RedisRateLimiter
from alerts.routing import (
    GROUP_INTERVAL_S,
    GROUP_WAIT_S,
    REPEAT_INTERVAL_S,
    RouteMatch,
    alert_labels,
    group_key,
    route_alert,
)
from alerts.store import DeliveryStore
from alerts.tasknotices import TASK_RULES, notice_alert
from rules.engine import load_rules
from rules.model import AlertEvent
from streams.broker import clients as kafka_clients
from streams.config import ConfigError
from streams.settings import Settings
from streams.tasks.model import TaskNotice

log = logging.getLogger("healthmon.delivery")
PROFILE_POLL_S = 1.0
#: How long a revocation waits for sends under way (each is bounded by its channel's own timeout).
REVOKE_WAIT_S = 20.0
#: Where the partitions of ``cs.task-notices`` are numbered from in positions (far above any real one).
NOTICE_PARTITIONS = 1_000_000


@dataclass
class DeliveryMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        labels = ["channel", "receiver"]
        r = self.registry
        self.sent = Counter("healthmon_notifications_sent", "Notifications delivered", labels, registry=r)
        self.failed = Counter(
            "healthmon_notifications_failed", "Delivery attempts that failed", labels, registry=r
        )
        self.retried = Counter(
            "healthmon_notifications_retried", "Delivery attempts scheduled again", labels, registry=r
        )
        self.deduplicated = Counter(
            "healthmon_notifications_deduplicated", "Notifications skipped: already sent", labels, registry=r
        )
        self.dead_lettered = Counter(
            "healthmon_notifications_dead_lettered", "Notifications given up", labels, registry=r
        )
        self.silenced = Counter(
            "healthmon_alerts_silenced", "Alerts held back by a silence", ["receiver"], registry=r
        )
        self.fallback = Counter(
            "healthmon_alerts_fallback", "Alerts sent to the fallback receiver: no CSM known", registry=r
        )
        self.expired = Counter("healthmon_alerts_expired", "Firing alerts forgotten unresolved", registry=r)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"{name}_total", labels) or 0.0


@dataclass
class Waiting:
    """An alert held until its account's CSM is known (bounded by ``profile_wait``)."""

    alert: AlertEvent
    pos: Position
    deadline: float


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, worker: DeliveryWorker) -> None:
        self.worker = worker

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        await self.worker.revoked({self.worker.part(tp) for tp in revoked})

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        log.info("delivery owns partitions %s", sorted(self.worker.part(tp) for tp in assigned))


class DeliveryWorker:
    def __init__(
        self, settings: Settings, routing: RoutingConfig | None = None, clock: Clock | None = None
    ) -> None:
        self.s = settings
        self.routing = routing or load_routing(settings.routing)
        self.clock: Clock = clock or LoopClock()
        try:
            ruleset = load_rules(settings.rules)
            self.rules = {r.id: r for r in ruleset.rules}
        except ConfigError as exc:
            log.warning("rules not loaded (%s): every rule is treated as sending resolutions", exc)
            self.rules = {}
        self.metrics = DeliveryMetrics()
        self.dispatcher = Dispatcher()
        self.consumed: dict[int, int] = {}
        self.waiting: list[Waiting] = []
        self.gates: dict[str, ReceiverGate] = {}
        self.tasks: dict[asyncio.Task, set[int]] = {}
        #: flushes past the rate limit, talking to the receiver: let finish, not cancelled, on revocation
        self.sending: set[asyncio.Task] = set()
        self._stop = asyncio.Event()
        self._next_profile_poll = 0.0
        self.task_links = TaskLinks.from_settings(settings)

    def part(self, tp: TopicPartition) -> int:
        """The partition number positions use: notices' partitions are numbered apart."""
        return tp.partition + (NOTICE_PARTITIONS if tp.topic == self.s.topic("task_notices") else 0)

    def topic_partition(self, part: int) -> TopicPartition:
        if part >= NOTICE_PARTITIONS:
            return TopicPartition(self.s.topic("task_notices"), part - NOTICE_PARTITIONS)
        return TopicPartition(self.s.topic("alerts"), part)

    def shows_tasks(self, receiver: Receiver) -> bool:
        """Whether the receiver's messages carry task links (email) or buttons (Slack)."""
        if receiver.slack is not None:
            return self.s.slack_signing_secret is not None
        return receiver.email is not None and self.task_links is not None

    def notifier_for(self, receiver: Receiver) -> Notifier:
        if receiver.slack is not None:
            # buttons only where serve can answer them (the signing secret)
            return SlackNotifier(
                receiver.slack, self.http, self.routing.link_base_url, self.shows_tasks(receiver)
            )
        if receiver.webhook is not None:
            return WebhookNotifier(receiver.webhook, self.http)
        if receiver.alertmanager is not None:
            return AlertmanagerNotifier(receiver.alertmanager, self.http, self.routing.link_base_url)
        assert receiver.email is not None
        s = self.s
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        smtp = SmtpSettings(s.smtp_host, s.smtp_port, s.smtp_starttls, s.smtp_tls, s.smtp_username, password)
        return EmailNotifier(receiver.email, smtp, self.routing.link_base_url, self.task_links)

    async def start(self) -> None:
        s = self.s
        self.http = aiohttp.ClientSession()
        self.redis = Redis.from_url(s.redis_url)
        self.store = DeliveryStore(self.redis, s.redis_prefix)
        self.notifiers = {r.name: self.notifier_for(r) for r in self.routing.receivers}
        self.gates = {
            r.name: ReceiverGate(
                RedisRateLimiter(self.redis, f"{s.redis_prefix}rate:{r.name}", r.rate_per_s, self.clock)
            )
            for r in self.routing.receivers
        }
        self.consumer = kafka_clients.consumer(
            s, group_id=f"{s.app_id}-delivery", enable_auto_commit=False, auto_offset_reset="earliest"
        )
        self.consumer.subscribe([s.topic("alerts"), s.topic("task_notices")], listener=_Rebalance(self))
        self.producer = kafka_clients.producer(s, acks="all")
        await self.consumer.start()
        await self.producer.start()
        if s.metrics_port:
            start_http_server(s.metrics_port, addr=s.metrics_bind, registry=self.metrics.registry)

    async def stop(self) -> None:
        self._stop.set()
        # let in-flight sends finish (bounded) so what they delivered is committed, not re-sent
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        for t in list(self.tasks):
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.commit()
        await self.consumer.stop()
        await self.producer.stop()
        await self.http.close()
        await self.redis.aclose()

    async def run(self) -> None:
        await self.start()
        try:
            while not self._stop.is_set():
                await self.step()
        finally:
            await self.stop()

    async def step(self, timeout_ms: int = 200) -> None:
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=1000)
        now = self.clock.time()
        for tp, records in batch.items():
            part = self.part(tp)
            for rec in records:
                if part >= NOTICE_PARTITIONS:
                    await self.accept_notice(part, rec.offset, rec.value, now)
                else:
                    await self.accept(part, rec.offset, rec.value, now)
                self.consumed[part] = rec.offset
        await self.poll_profiles(self.clock.time())
        expired = self.dispatcher.expire(self.clock.time(), self.routing.firing_ttl)
        if expired:
            self.metrics.expired.inc(expired)
        for g in self.dispatcher.due(self.clock.time()):
            g.inflight = True
            parts = {p for e in g.entries.values() for p, _ in e.positions} | {
                p
                for e in g.entries.values()
                if (p := self.dispatcher.account_partition.get(e.alert.account_id)) is not None
            }
            task = asyncio.create_task(self.flush(g))
            self.tasks[task] = parts
            task.add_done_callback(self._forget)
        await self.commit()

    def matches(self, alert: AlertEvent) -> list[tuple[RouteMatch, str, dict[str, str]]]:
        labels = alert_labels(alert)
        return [
            (m, group_key(m, labels), {k: labels.get(k, "") for k in m.group_by})
            for m in route_alert(self.routing, labels)
        ]

    async def accept(self, partition: int, offset: int, value: bytes | None, now: float) -> None:
        pos = (partition, offset)
        try:
            alert = AlertEvent.model_validate_json(value or b"")
        except ValidationError as exc:
            await self.dead_letter(
                {"raw": (value or b"")[:10000].decode(errors="replace")},
                f"not an alert: {exc.error_count()} errors",
            )
            self.dispatcher.add(None, [], pos, now)
            return
        self.route(alert, pos, now)

    async def accept_notice(self, partition: int, offset: int, value: bytes | None, now: float) -> None:
        """A task notice: reminders and escalations are routed like alerts, the rest is done at once."""
        pos = (partition, offset)
        try:
            notice = TaskNotice.model_validate_json(value or b"")
        except ValidationError as exc:
            await self.dead_letter(
                {"raw": (value or b"")[:10000].decode(errors="replace")},
                f"not a task notice: {exc.error_count()} errors",
            )
            self.dispatcher.add(None, [], pos, now)
            return
        alert = notice_alert(notice)
        if alert is None:
            self.dispatcher.add(None, [], pos, now)
            return
        self.route(alert, pos, now)

    def route(self, alert: AlertEvent, pos: Position, now: float) -> None:
        behind = any(w.alert.account_id == alert.account_id for w in self.waiting)
        if (not alert.account.csm_email or behind) and self.routing.profile_wait > 0:
            # the account's profile may not have arrived yet: hold the alert (and its offset) a while;
            # later alerts of the account queue behind it, so its events keep their order
            self.dispatcher.holds[pos] = self.dispatcher.holds.get(pos, 0) + 1
            self.waiting.append(Waiting(alert, pos, now + self.routing.profile_wait))
            self._next_profile_poll = 0.0
            return
        self.dispatcher.add(alert, self.matches(alert), pos, now)

    async def poll_profiles(self, now: float) -> None:
        """Route waiting alerts whose account's CSM is now known (read model); past the deadline, to
        the fallback receiver."""
        if not self.waiting or now < self._next_profile_poll:
            return
        self._next_profile_poll = now + PROFILE_POLL_S
        accounts = list(
            dict.fromkeys(w.alert.account_id for w in self.waiting if not w.alert.account.csm_email)
        )
        profiles: dict[str, tuple[str, str]] = {}
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for aid in accounts:
                    pipe.hmget(f"{self.s.redis_prefix}account:{aid}", ["csm", "csm_name"])
                got = await pipe.execute()
            for aid, (csm, name) in zip(accounts, got, strict=True):
                if csm:
                    profiles[aid] = (csm.decode(), (name or b"").decode())
        except Exception as exc:  # Redis down: keep waiting, the deadline still applies
            log.warning("profile lookup failed: %s", exc)
        keep: list[Waiting] = []
        blocked: set[str] = set()
        for w in self.waiting:
            aid = w.alert.account_id
            alert = w.alert
            if not alert.account.csm_email and aid in profiles:
                csm, csm_name = profiles[aid]
                account = alert.account.model_copy(update={"csm_email": csm, "csm_name": csm_name or None})
                alert = alert.model_copy(update={"account": account})
            if aid in blocked or (not alert.account.csm_email and now < w.deadline):
                w.alert = alert
                keep.append(w)
                blocked.add(aid)
                continue
            if alert.account.csm_email:
                matches = self.matches(alert)
            else:
                matches = self.fallback_matches(alert)
            self.dispatcher.add(alert, matches, w.pos, now)
            self.dispatcher.holds[w.pos] -= 1
        self.waiting = keep

    def fallback_matches(self, alert: AlertEvent) -> list[tuple[RouteMatch, str, dict[str, str]]]:
        name = self.routing.fallback_receiver
        if name is None:
            return self.matches(alert)
        self.metrics.fallback.inc()
        root = self.routing.route
        m = RouteMatch(
            receiver=name,
            group_by=("account",),
            group_wait=root.group_wait if root.group_wait is not None else GROUP_WAIT_S,
            group_interval=root.group_interval if root.group_interval is not None else GROUP_INTERVAL_S,
            repeat_interval=root.repeat_interval if root.repeat_interval is not None else REPEAT_INTERVAL_S,
        )
        return [(m, group_key(m, alert_labels(alert)), {"account": alert.account_id})]

    def _forget(self, task: asyncio.Task) -> None:
        self.tasks.pop(task, None)
        self.sending.discard(task)

    async def revoked(self, partitions: set[int]) -> None:
        """Before partitions move: stop their flushes (cancel the queued, let the sending finish),
        commit what was delivered, then forget them. Nothing of theirs runs after this returns."""
        busy = [t for t, parts in self.tasks.items() if parts & partitions]
        for t in busy:
            if t not in self.sending:
                t.cancel()
        if busy:
            await asyncio.wait(busy, timeout=REVOKE_WAIT_S)
            for t in busy:
                t.cancel()  # a send hanging past its timeout: its firing stays marked notified
            await asyncio.gather(*busy, return_exceptions=True)
        await self.commit(only=partitions)
        self.dispatcher.revoke(partitions)
        self.waiting = [w for w in self.waiting if w.pos[0] not in partitions]
        for p in partitions:
            self.consumed.pop(p, None)
        log.info("delivery released partitions %s", sorted(partitions))

    async def commit(self, only: set[int] | None = None) -> None:
        offsets = self.dispatcher.committable(self.consumed)
        owned = {self.part(tp) for tp in self.consumer.assignment()}
        todo = {
            self.topic_partition(p): off
            for p, off in offsets.items()
            if p in owned and (only is None or p in only)
        }
        if not todo:
            return
        try:
            await self.consumer.commit(todo)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # a rebalance is under way: what was not committed is re-read by the next owner
            log.warning("commit skipped: %s", exc)

    async def dead_letter(self, body: dict, reason: str) -> None:
        await self.producer.send_and_wait(
            self.s.topic("alerts_deadletter"),
            value=orjson.dumps({**body, "reason": reason, "failed_at": self.clock.time()}),
        )

    def once_keys(self, alerts: list[AlertEvent]) -> set[str]:
        """Firing alerts the rule engine will never resolve: notify once, do not repeat forever."""
        out = set()
        for a in alerts:
            rule = self.rules.get(a.rule_id)
            if a.rule_id in TASK_RULES or (self.rules and (rule is None or not rule.send_resolved)):
                out.add(a.alert_id)
        return out

    async def flush(self, g: Group) -> None:
        try:
            await self._flush(g)
        finally:
            g.inflight = False

    async def _flush(self, g: Group) -> None:
        receiver = self.routing.receiver(g.match.receiver)
        channel = receiver.channel
        labels = {"channel": channel, "receiver": receiver.name}
        snap = self.dispatcher.snapshot(g)
        f = Flush(snap, receiver, snap.firing, snap.resolved)
        once = self.once_keys(snap.firing)
        #: every resolution this flush handles, sent or not: the episode is over
        closed = [a.alert_id for a in snap.resolved]
        gate = self.gates[receiver.name]
        marked: list[str] = []
        me = asyncio.current_task()
        try:
            now = self.clock.time()
            for alert_id, silence_id in await silence_stage(f, await self.store.silences(now), now):
                await self.store.record_silenced(alert_id, silence_id, now)
                self.metrics.silenced.labels(receiver=receiver.name).inc()
            for key, until in f.silenced.items():
                if key in g.entries:
                    g.entries[key].silenced_until = until
            held = set(f.silenced)
            if not await dedupe_stage(f, self.store, g.match.repeat_interval, now):
                if f.firing or f.resolved:
                    self.metrics.deduplicated.labels(**labels).inc()
                await self.store.log(f.notification(), now, sent=False, closed=closed)
                self.dispatcher.done(snap, now, sent=set(), held=held, once=(once | set(f.stale)) - held)
                return
            try:
                f.accounts = await self.store.account_figures(list({a.account_id for a in f.firing}))
            except Exception as exc:  # the digest falls back to the alerts' own figures
                log.warning("account figures not read: %s", exc)
            f.tasks = {a.alert_id: a.labels["task_id"] for a in f.firing if "task_id" in a.labels}
            if self.shows_tasks(receiver):
                try:
                    f.tasks = {**await self.store.open_tasks(f.firing), **f.tasks}
                except Exception as exc:  # the message goes without the task links
                    log.warning("open tasks not read: %s", exc)
            n = f.notification()
            await gate.wait_stage(self.clock)
            await gate.rate_stage()
            await gate.wait_stage(self.clock)  # a 429 may have paused the receiver while we queued
            # from here on the receiver may get it: a revocation waits for this flush, and the firing
            # is marked notified first, so its resolution goes out even if this process dies mid-send
            if me is not None:
                self.sending.add(me)
            marked = await self.store.mark_pending(g.key, [a.alert_id for a in n.firing])
            failed = await retry_stage(
                gate, self.notifiers[receiver.name], n, self.clock, g.attempts, self.s.retry_max_delay_s
            )
            if failed is not None:
                if not failed.maybe_delivered:
                    await self.store.unmark(g.key, marked)
                self.dispatcher.failed(g, failed.at)
                self.metrics.failed.labels(**labels).inc()
                self.metrics.retried.labels(**labels).inc()
                log.warning(
                    "%s delivery to %s failed; retry in %.1fs", channel, receiver.name, failed.at - now
                )
                return
        except PermanentError as exc:
            await self.store.unmark(g.key, marked)
            self.metrics.failed.labels(**labels).inc()
            self.metrics.dead_lettered.labels(**labels).inc()
            log.error("%s delivery to %s failed for good: %s", channel, receiver.name, exc)
            await self.dead_letter(
                {"notification": orjson.loads(f.notification().model_dump_json())}, str(exc)
            )
            self.dispatcher.done(snap, self.clock.time(), sent=set(), once=once)
            return
        except asyncio.CancelledError:
            raise
        except Exception:  # a bug or Redis down must not lose the group: it is retried
            log.exception("delivery to %s crashed; will retry", receiver.name)
            self.dispatcher.failed(g, self.clock.time() + backoff(g.attempts + 1, self.s.retry_max_delay_s))
            return
        sent = {a.alert_id for a in n.alerts}
        try:
            await self.store.log(n, self.clock.time(), closed=closed)
        except Exception as exc:  # delivered all the same: release it (a restart may repeat it once)
            log.warning("notification log not written: %s", exc)
        self.metrics.sent.labels(**labels).inc()
        self.dispatcher.done(snap, self.clock.time(), sent=sent, held=held, once=(once | set(f.stale)) - held)
