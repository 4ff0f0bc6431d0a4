"""Prometheus metrics of the stream worker, defined here and wired into the worker by streams/worker/app.py.

One registry per worker (tests run several in a process); ``start_exporter`` serves it on
``HEALTHMON_METRICS_PORT``. Names follow Prometheus conventions (``_total`` is added to counters by
prometheus-client); docs/observability.md lists them and the Grafana dashboard beside
docker-compose.yml (grafana/healthmon.json) draws them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram, start_http_server

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
            "again), paused_steps (a step stopped at HEALTHMON_STEP_BUDGET evaluations, the rest in the next)",
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
