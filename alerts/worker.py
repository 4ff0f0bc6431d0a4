"""``healthmon deliver``: cs.alerts -> routing -> groups -> silences -> dedupe -> retry -> channels.

Its own consumer group, so a slow or broken channel never stalls scoring. At-least-once: offsets are
committed only up to the oldest alert not yet delivered (or deliberately dropped), so a restart re-reads
what was pending; the notification log in Redis keeps that from sending anything twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field

import aiohttp
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, start_http_server
from pydantic import ValidationError
from redis.asyncio import Redis

from rules.model import AlertEvent
from streams.settings import Settings

from .config import Receiver, RoutingConfig, load_routing
from .dispatch import Dispatcher, Group
from .notifiers import Notifier, PermanentError, RetryableError
from .notifiers.email import EmailNotifier, SmtpSettings
from .notifiers.slack import SlackNotifier
from .notifiers.webhook import WebhookNotifier
from .routing import alert_labels, group_key, route_alert
from .store import DeliveryStore

log = logging.getLogger("healthmon.delivery")


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

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(f"{name}_total", labels) or 0.0


def backoff(attempt: int, cap: float, base: float = 1.0) -> float:
    """Exponential backoff with full jitter."""
    return random.uniform(0, min(cap, base * 2**attempt))


class DeliveryWorker:
    def __init__(self, settings: Settings, routing: RoutingConfig | None = None) -> None:
        self.s = settings
        self.routing = routing or load_routing(settings.routing)
        self.metrics = DeliveryMetrics()
        self.dispatcher = Dispatcher()
        self.consumed: dict[int, int] = {}
        self.next_send: dict[str, float] = {}
        self.tasks: set[asyncio.Task] = set()
        self._stop = asyncio.Event()

    def notifier_for(self, receiver: Receiver) -> Notifier:
        if receiver.slack is not None:
            return SlackNotifier(receiver.slack, self.http)
        if receiver.webhook is not None:
            return WebhookNotifier(receiver.webhook, self.http)
        assert receiver.email is not None
        s = self.s
        password = s.smtp_password.get_secret_value() if s.smtp_password else None
        smtp = SmtpSettings(s.smtp_host, s.smtp_port, s.smtp_starttls, s.smtp_tls, s.smtp_username, password)
        return EmailNotifier(receiver.email, smtp)

    async def start(self) -> None:
        s = self.s
        self.http = aiohttp.ClientSession()
        self.redis = Redis.from_url(s.redis_url)
        self.store = DeliveryStore(self.redis, s.redis_prefix)
        self.notifiers = {r.name: self.notifier_for(r) for r in self.routing.receivers}
        self.consumer = AIOKafkaConsumer(
            s.topic("alerts"),
            bootstrap_servers=s.kafka_bootstrap,
            group_id=f"{s.app_id}-delivery",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
        )
        self.producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap, acks="all")
        await self.consumer.start()
        await self.producer.start()
        if s.metrics_port:
            start_http_server(s.metrics_port, registry=self.metrics.registry)

    async def stop(self) -> None:
        self._stop.set()
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
        now = time.time()
        for tp, records in batch.items():
            for rec in records:
                await self.accept(tp.partition, rec.offset, rec.value, now)
                self.consumed[tp.partition] = rec.offset
        for g in self.dispatcher.due(time.time()):
            g.inflight = True
            task = asyncio.create_task(self.flush(g))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        await self.commit()

    async def accept(self, partition: int, offset: int, value: bytes | None, now: float) -> None:
        try:
            alert = AlertEvent.model_validate_json(value or b"")
        except ValidationError as exc:
            await self.dead_letter(
                {"raw": (value or b"")[:10000].decode(errors="replace")},
                f"not an alert: {exc.error_count()} errors",
            )
            self.dispatcher.add(None, [], (partition, offset), now)
            return
        labels = alert_labels(alert)
        matches = [
            (m, group_key(m, labels), {k: labels.get(k, "") for k in m.group_by})
            for m in route_alert(self.routing, labels)
        ]
        self.dispatcher.add(alert, matches, (partition, offset), now)

    async def commit(self) -> None:
        offsets = self.dispatcher.committable(self.consumed)
        if offsets:
            topic = self.s.topic("alerts")
            await self.consumer.commit({TopicPartition(topic, p): off for p, off in offsets.items()})

    async def dead_letter(self, body: dict, reason: str) -> None:
        await self.producer.send_and_wait(
            self.s.topic("alerts_deadletter"),
            value=orjson.dumps({**body, "reason": reason, "failed_at": time.time()}),
        )

    async def flush(self, g: Group) -> None:
        receiver = self.routing.receiver(g.match.receiver)
        channel = receiver.channel
        labels = {"channel": channel, "receiver": receiver.name}
        try:
            now = time.time()
            silences = await self.store.silences(now)
            for alert_id, alert in list(g.alerts.items()):
                hit = next((s for s in silences if s.matches(alert_labels(alert), now)), None)
                if hit is not None:
                    del g.alerts[alert_id]
                    await self.store.record_silenced(alert_id, hit.id, now)
                    self.metrics.silenced.labels(receiver=receiver.name).inc()
            n = self.dispatcher.notification(g, receiver)
            if not n.alerts:
                self.dispatcher.done(g, now)
                return
            if not await self.store.needs_update(n, g.match.repeat_interval, now):
                self.metrics.deduplicated.labels(**labels).inc()
                self.dispatcher.done(g, now)
                return
            wait = self.next_send.get(receiver.name, 0) - time.monotonic()
            if wait > 0:  # the receiver's rate limit
                await asyncio.sleep(wait)
            self.next_send[receiver.name] = time.monotonic() + 1 / receiver.rate_per_s
            await self.notifiers[receiver.name].notify(n)
        except RetryableError as exc:
            g.attempts += 1
            delay = (
                exc.retry_after
                if exc.retry_after is not None
                else backoff(g.attempts, self.s.retry_max_delay_s)
            )
            g.next_attempt = time.time() + min(delay, self.s.retry_max_delay_s)
            self.metrics.failed.labels(**labels).inc()
            self.metrics.retried.labels(**labels).inc()
            log.warning("%s delivery to %s failed (%s); retry in %.1fs", channel, receiver.name, exc, delay)
        except PermanentError as exc:
            self.metrics.failed.labels(**labels).inc()
            self.metrics.dead_lettered.labels(**labels).inc()
            log.error("%s delivery to %s failed for good: %s", channel, receiver.name, exc)
            await self.dead_letter({"notification": orjson.loads(n.model_dump_json())}, str(exc))
            self.dispatcher.done(g, time.time())
        except Exception:  # a bug must not lose the group: it is retried
            log.exception("delivery to %s crashed; will retry", receiver.name)
            g.attempts += 1
            g.next_attempt = time.time() + backoff(g.attempts, self.s.retry_max_delay_s)
        else:
            await self.store.log(n, time.time())
            self.metrics.sent.labels(**labels).inc()
            self.dispatcher.done(g, time.time())
        finally:
            g.inflight = False
