"""``healthmon ingest``: the HTTP door for Segment-style calls and vendors' webhooks.

Every request goes the same way: rate limit (429) -> body size (413) -> the source's ``verify`` (401,
nothing written) -> its ``parse`` -> the events, and the raw request with the reason when part of it
breaks the contract, sent to Kafka in one go and acknowledged by all replicas -> 2xx. Kafka not
acknowledging in time is 503, so the sender retries. A retry of events already acknowledged is answered
2xx and not written again (:mod:`streams.ingest.dedupe`); the worker drops near repeats by ``event_id``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from aiolimiter import AsyncLimiter
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from redis.asyncio import Redis

from streams import compat
from streams.ingest.config import IngestConfig, load_config
from streams.ingest.dedupe import SeenIds
from streams.ingest.segment import CALLS, SegmentSource
from streams.ingest.sink import BrokerUnavailable, Sink, record
from streams.ingest.source import Parsed, Rejected, Source, Unauthorized
from streams.ingest.stripe_webhooks import StripeSource
from streams.ingest.webhook import WebhookSource
from streams.ingest.zendesk import ZendeskSource
from streams.settings import Settings

log = logging.getLogger("healthmon.ingest")


class IngestSetupError(ValueError):
    """The service cannot start as configured (a secret missing, a bad mapping file)."""


@dataclass
class Metrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.accepted = Counter(
            "healthmon_ingest_events_accepted",
            "Events acknowledged by Kafka, by source",
            ["source"],
            registry=r,
        )
        self.duplicates = Counter(
            "healthmon_ingest_events_duplicate",
            "Events a sender sent again after they were acknowledged, answered 2xx and not written again",
            ["source"],
            registry=r,
        )
        self.ignored = Counter(
            "healthmon_ingest_messages_ignored",
            "Verified messages the mapping does not turn into events (e.g. an unmapped track event)",
            ["source"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "healthmon_ingest_messages_dead_lettered",
            "Verified messages that break the contract, written to the dead-letter topic",
            ["source"],
            registry=r,
        )
        self.rejected = Counter(
            "healthmon_ingest_requests_rejected",
            "Requests refused, by reason (unauthorized, invalid, too_large, rate_limited, broker_unavailable)",
            ["source", "reason"],
            registry=r,
        )
        self.latency = Histogram(
            "healthmon_ingest_request_seconds",
            "Request latency, from arrival to the answer (Kafka's acknowledgement included)",
            ["source"],
            buckets=(0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
            registry=r,
        )


def _secret(value) -> str | None:
    return value.get_secret_value() if value is not None else None


def build_sources(cfg: IngestConfig, s: Settings) -> dict[str, Source]:
    """One source per route, each with its secret; refuses (naming the variable, never a value) when a
    configured source has none."""
    missing: list[str] = []
    sources: dict[str, Source] = {}
    if cfg.segment is not None:
        keys = [k.strip() for k in (_secret(s.ingest_segment_write_keys) or "").split(",") if k.strip()]
        if not keys:
            missing.append("HEALTHMON_INGEST_SEGMENT_WRITE_KEYS (segment)")
        else:
            for call in CALLS:
                sources[f"/v1/{call}"] = SegmentSource(cfg.segment, keys, call)
    if cfg.stripe is not None:
        secret = _secret(s.ingest_stripe_secret)
        if not secret:
            missing.append("HEALTHMON_INGEST_STRIPE_SECRET (stripe)")
        else:
            sources["/v1/stripe"] = StripeSource(cfg.stripe, secret, s.ingest_signature_tolerance_s)
    sources.update(_more_sources(cfg, s, missing))
    if missing:
        raise IngestSetupError(
            "ingest: these configured sources have no secret (no default is ever used): " + ", ".join(missing)
        )
    return sources


def _more_sources(cfg: IngestConfig, s: Settings, missing: list[str]) -> dict[str, Source]:
    sources: dict[str, Source] = {}
    tolerance = s.ingest_signature_tolerance_s
    if cfg.zendesk is not None:
        secret = _secret(s.ingest_zendesk_secret)
        if not secret:
            missing.append("HEALTHMON_INGEST_ZENDESK_SECRET (zendesk)")
        else:
            sources["/v1/zendesk"] = ZendeskSource(cfg.zendesk, secret, tolerance)
    if cfg.webhooks:
        secret = _secret(s.ingest_webhook_secret)
        if not secret:
            missing.append("HEALTHMON_INGEST_WEBHOOK_SECRET (webhooks: " + ", ".join(cfg.webhooks) + ")")
        else:
            for name, wcfg in cfg.webhooks.items():
                sources[f"/v1/webhooks/{name}"] = WebhookSource(name, wcfg, secret, tolerance)
    return sources


class IngestService:
    def __init__(
        self,
        s: Settings,
        sources: dict[str, Source],
        sink: Sink,
        seen: SeenIds | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.s = s
        self.sources = sources
        self.sink = sink
        self.seen = seen
        self.clock = clock
        self.metrics = Metrics()
        self.limiters = {
            name: AsyncLimiter(s.ingest_rate_per_s, 1.0) for name in {x.name for x in sources.values()}
        }

    def app(self) -> web.Application:
        app = web.Application(client_max_size=self.s.ingest_max_body_bytes)
        for path in self.sources:
            app.router.add_post(path, self.handle)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        return app

    async def healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", "sources": sorted({x.name for x in self.sources.values()})})

    async def metrics_page(self, request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(self.metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def handle(self, request: web.Request) -> web.Response:
        source = self.sources.get(request.path)
        if source is None:
            raise web.HTTPNotFound(text=f"no source at {request.path}")
        started = time.perf_counter()
        try:
            return await self._handle(request, source)
        finally:
            self.metrics.latency.labels(source.name).observe(time.perf_counter() - started)

    def _refuse(self, source: Source, reason: str, status: int, detail: str, **headers: str) -> web.Response:
        self.metrics.rejected.labels(source.name, reason).inc()
        body = orjson.dumps({"success": False, "error": reason, "detail": detail})
        return web.Response(status=status, body=body, content_type="application/json", headers=headers)

    async def _handle(self, request: web.Request, source: Source) -> web.Response:
        limiter = self.limiters[source.name]
        if not limiter.has_capacity():
            return self._refuse(source, "rate_limited", 429, "too many requests", **{"Retry-After": "1"})
        await limiter.acquire()
        max_bytes = self.s.ingest_max_body_bytes
        if request.content_length is not None and request.content_length > max_bytes:
            return self._refuse(source, "too_large", 413, f"body over {max_bytes} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return self._refuse(source, "too_large", 413, f"body over {max_bytes} bytes")
        now = self.clock()
        try:
            source.verify(request.headers, body, now)
        except Unauthorized as exc:
            log.info("%s %s: 401 %s (from %s)", source.name, request.path, exc, request.remote)
            return self._refuse(source, "unauthorized", 401, str(exc))
        try:
            parsed = source.parse(request.headers, body, now)
            whole: Rejected | None = None
        except Rejected as exc:
            parsed, whole = Parsed(), exc
        problems = [whole.reason] if whole else parsed.problems
        events, duplicates = list(parsed.events), 0
        if self.seen is not None:
            events, duplicates = await self.seen.new(events)
        records = [(*record(self.s, e), None) for e in events]
        try:
            if problems:
                # The raw request with the reason, in the same send as the request's valid events.
                reason = "; ".join(problems)[:1000]
                dl = self.sink.dead_letter_record(source.name, request.path, body, reason)
                await self.sink.send([*records, dl])
            else:
                await self.sink.send(records)
        except BrokerUnavailable as exc:
            log.warning("%s %s: 503, %s", source.name, request.path, exc)
            return self._refuse(source, "broker_unavailable", 503, str(exc), **{"Retry-After": "5"})
        if self.seen is not None:
            await self.seen.remember(events)
        m = self.metrics
        m.accepted.labels(source.name).inc(len(events))
        m.duplicates.labels(source.name).inc(duplicates)
        m.ignored.labels(source.name).inc(parsed.ignored)
        if problems:
            m.dead_lettered.labels(source.name).inc(max(len(problems), 1))
            log.info("%s %s: dead-lettered: %s", source.name, request.path, "; ".join(problems)[:300])
        if whole is not None or (problems and not parsed.events):
            m.rejected.labels(source.name, "invalid").inc()
            payload = {"success": False, "error": "invalid", "detail": problems, "dead_lettered": True}
            return web.json_response(payload, status=source.invalid_status, dumps=_dumps)
        payload = {"success": True, "accepted": len(parsed.events), "ignored": parsed.ignored}
        if duplicates:
            payload["duplicates"] = duplicates  # of those accepted, already acknowledged before
        if problems:
            payload["rejected"] = problems
        return web.json_response(payload, dumps=_dumps)


def _dumps(obj: object) -> str:
    return orjson.dumps(obj).decode()


async def serve(s: Settings, stopping: asyncio.Event, ready: Callable[[int], None] | None = None) -> None:
    """Run the service until ``stopping`` is set; ``ready(port)`` once it listens."""
    from streams.config import ConfigError

    try:
        cfg = load_config(s.ingest_config)
    except ConfigError as exc:
        raise IngestSetupError(str(exc)) from None
    sources = build_sources(cfg, s)
    sink = Sink(s)
    await sink.start()
    redis = Redis.from_url(s.redis_url) if s.ingest_dedupe_window_s > 0 else None
    seen = SeenIds(redis, s.redis_prefix, s.ingest_dedupe_window_s) if redis is not None else None
    service = IngestService(s, sources, sink, seen)
    runner = web.AppRunner(service.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, s.ingest_host, s.ingest_port)
    try:
        await site.start()
        port = compat.bound_port(site, s.ingest_port)
        names = ", ".join(sorted({x.name for x in sources.values()}))
        log.info("ingest: listening on http://%s:%s (sources: %s)", s.ingest_host, port, names)
        if ready is not None:
            ready(port)
        await stopping.wait()
    finally:
        await runner.cleanup()
        await sink.stop()
        if redis is not None:
            await redis.aclose()
