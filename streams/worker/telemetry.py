"""Prometheus metrics of the stream worker, defined here and wired into the worker by streams/worker/app.py.

One registry per worker (tests run several in a process); ``start_exporter`` serves it on
``HEALTHMON_METRICS_PORT``. Names follow Prometheus conventions (``_total`` is added to counters by
prometheus-client); docs/observability.md lists them and the Grafana dashboard beside
docker-compose.yml (grafana/healthmon.json) draws them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

from streams.engine.driver import Output, PartitionDriver

log = logging.getLogger("healthmon.ingest")

#: Evaluation (one event: state update, score, rules) takes ~0.1-2 ms; replays batch many per flush.
EVALUATION_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
RECOVERY_STATES = ["starting", "recovering", "running", "stopping"]
BANDS = ("red", "yellow", "green", "none")


@dataclass
class WorkerMetrics:
    registry: CollectorRegistry = field(default_factory=CollectorRegistry)

    def __post_init__(self) -> None:
        r = self.registry
        self.events = Counter(
            "healthmon_events_processed",
            "Input events processed, by source topic and event type (rate() gives events/s)",
            ["topic", "type"],
            registry=r,
        )
        self.dead_letters = Counter(
            "healthmon_dead_letters",
            "Events sent to the dead-letter topic, by reason",
            ["reason"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "healthmon_consumer_lag",
            "Messages between the worker's position and the end of each input partition",
            ["topic", "partition"],
            registry=r,
        )
        self.evaluation_seconds = Histogram(
            "healthmon_evaluation_seconds",
            "Time to evaluate one event (state update, score, rules)",
            buckets=EVALUATION_BUCKETS,
            registry=r,
        )
        self.accounts = Gauge(
            "healthmon_accounts",
            "Accounts this worker owns, by health band (none: not scored yet)",
            ["band"],
            registry=r,
        )
        for band in BANDS:
            self.accounts.labels(band=band)
        self.recovery = Enum(
            "healthmon_worker_state",
            "Worker state: recovering means tables are being restored from their changelogs",
            states=RECOVERY_STATES,
            registry=r,
        )
        self.engine = Counter(
            "healthmon_engine",
            "Partition driver counters: redelivered (records skipped as already folded in), late "
            "(read after the watermark passed their time), forced_releases (a silent topic or a full "
            "buffer stopped holding time back), evaluation_errors, gaps (holes in a topic's offsets read "
            "again), paused_steps (a step stopped at HEALTHMON_STEP_BUDGET evaluations, the rest in the next), "
            "portfolio_misses (an evaluation replayed after a restart at a time whose frozen portfolio "
            "the partition no longer keeps: scored with the latest; see PORTFOLIO_RING)",
            ["what"],
            registry=r,
        )
        self.loop_lag = Histogram(
            "healthmon_event_loop_lag_seconds",
            "How late a 0.25 s sleep of the worker's event loop woke up: the longest time anything held "
            "the loop (heartbeats, commits and the web endpoints wait that long)",
            buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
            registry=r,
        )
        self.recovery_remaining = Gauge(
            "healthmon_recovery_remaining",
            "Changelog messages still to restore before the worker processes events",
            registry=r,
        )

    def event(self, topic: str, type_: str, n: int = 1) -> None:
        self.events.labels(topic=topic, type=type_).inc(n)

    def dead_letter(self, reason: str) -> None:
        self.dead_letters.labels(reason=reason).inc()

    def set_state(self, state: str) -> None:
        self.recovery.state(state)

    def value(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def start_exporter(port: int, metrics: WorkerMetrics, addr: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``addr:port`` in a thread (prometheus-client's server); returns the server
    (``server.shutdown()`` stops it; port 0 picks a free one: ``server.server_port``)."""
    server, _thread = start_http_server(port, addr=addr, registry=metrics.registry)
    return server


class Telemetry:
    """What the worker's drivers report, turned into :class:`WorkerMetrics`: their counters (which
    only grow: Prometheus gets what each grew by since the last export), the evaluation time, the
    gauges read every 10 s, and the event loop's lag."""

    COUNTERS = (
        "redelivered",
        "late",
        "forced_releases",
        "evaluation_errors",
        "gaps",
        "paused_steps",
        "portfolio_misses",
    )

    def __init__(self, metrics: WorkerMetrics, timer: Callable[[], float] = time.perf_counter) -> None:
        self.metrics = metrics
        self.timer = timer
        self.exported: dict[tuple[object, ...], int] = {}  # per driver: counter values already exported
        self.last_seen: dict[int, tuple[int, int]] = {}  # partition -> (clock, processed) at the last gauges

    def timed_step(self, driver: PartitionDriver, run: Callable[[], Output]) -> Output:
        """Run one step of ``driver``; its evaluation time, per evaluation (the driver reads no clock)."""
        started = self.timer()
        evaluations = driver.stats.evaluations
        out = run()
        if n := driver.stats.evaluations - evaluations:
            self.metrics.evaluation_seconds.observe((self.timer() - started) / n)
        return out

    def export_counts(self, driver: PartitionDriver) -> None:
        st = driver.stats
        metrics = self.metrics

        def grown(key: tuple[str, object], n: int) -> int:
            full = (id(driver), *key)
            before, self.exported[full] = self.exported.get(full, 0), n
            return n - before

        for (topic, type_), n in st.by_type.items():
            if d := grown(("e", (topic, type_)), n):
                metrics.event(topic, type_, d)
        for what in self.COUNTERS:
            if d := grown(("x", what), getattr(st, what)):
                metrics.engine.labels(what=what).inc(d)
        for reason, n in st.dead_by_reason.items():
            if d := grown(("d", reason), n):
                metrics.dead_letters.labels(reason=reason).inc(d)

    def forget_dropped(self, live: Iterable[PartitionDriver]) -> None:
        """The exported counters of drivers no longer live (revoked)."""
        ids = {id(d) for d in live}
        for key in [k for k in self.exported if k[0] not in ids]:
            del self.exported[key]

    def gauges(
        self,
        mine: set[int],
        drivers: dict[int, PartitionDriver],
        names: Sequence[str],
        highwater: Callable[[int, int], int | None],
        highwaters: Callable[[int], list[int | None]],
    ) -> None:
        """Consumer lag and accounts per band (from each driver's bands: never a walk over the table,
        which with RocksDB decoded every state every 10 s: the likely cause of loop stalls at 300k);
        a partition that has not moved since the last call is logged."""
        metrics = self.metrics
        for p in mine:
            for k, name in enumerate(names):
                hw = highwater(k, p)
                driver = drivers.get(p)
                pos = driver.position[k] if driver is not None else None
                if hw is not None and pos is not None:
                    metrics.consumer_lag.labels(topic=name, partition=str(p)).set(max(0, hw - pos))
        for p, driver in list(drivers.items()):
            st = driver.stats
            if st.late or st.forced_releases:
                log.info(
                    "partition %s: %d late records, %d forced releases so far", p, st.late, st.forced_releases
                )
            moved = (driver.clock_ms, driver.stats.processed)
            if driver.buffered and self.last_seen.get(p) == moved:
                log.warning("partition %s has not moved for 10 s: %s", p, driver.describe(highwaters(p)))
            self.last_seen[p] = moved
        bands = dict.fromkeys(BANDS, 0)
        for p, driver in list(drivers.items()):
            if p in mine:
                for band in driver.bands.values():
                    bands[band if band in bands else "none"] += 1
        for band, n in bands.items():
            metrics.accounts.labels(band=band).set(n)

    async def watch_loop(self, period_s: float = 0.25) -> None:
        """How long the event loop was held: a step, a decode pass, anything. Logged past a second."""
        loop = asyncio.get_running_loop()
        while True:
            started = loop.time()
            await asyncio.sleep(period_s)
            lag = loop.time() - started - period_s
            self.metrics.loop_lag.observe(lag)
            if lag >= 1.0:
                log.warning("event loop was blocked for %.1f s", lag)
