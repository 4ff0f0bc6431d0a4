"""The worker's Prometheus metrics, scraped from a real exporter."""

from __future__ import annotations

import urllib.request

from streams.worker.telemetry import WorkerMetrics, start_exporter


def test_metrics_are_exported() -> None:
    m = WorkerMetrics()
    m.event("cs.usage", "login", 3)
    m.dead_letter("invalid")
    m.consumer_lag.labels(topic="cs.usage", partition="0").set(10)
    m.evaluation_seconds.observe(0.0015)
    m.accounts.labels(band="red").set(1)
    m.accounts.labels(band="yellow").set(1)
    m.set_state("recovering")
    assert m.value("healthmon_events_processed_total", topic="cs.usage", type="login") == 3
    assert m.value("healthmon_consumer_lag", topic="cs.usage", partition="0") == 10
    bands = {b: m.value("healthmon_accounts", band=b) for b in ("red", "yellow", "green", "none")}
    assert bands == {"red": 1, "yellow": 1, "green": 0, "none": 0}
    server = start_exporter(0, m)
    try:
        body = (
            urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/metrics", timeout=5)
            .read()
            .decode()
        )
    finally:
        server.shutdown()
    assert 'healthmon_dead_letters_total{reason="invalid"} 1.0' in body
    assert 'healthmon_evaluation_seconds_bucket{le="0.002"} 1.0' in body
    assert 'healthmon_worker_state{healthmon_worker_state="recovering"} 1.0' in body


def test_grafana_dashboard_draws_only_metrics_that_exist() -> None:
    import json
    import re
    from pathlib import Path

    from alerts.worker import DeliveryMetrics

    dash = json.loads((Path(__file__).resolve().parents[2] / "grafana" / "healthmon.json").read_text())
    exported = {
        s.name
        for reg in (WorkerMetrics().registry, DeliveryMetrics().registry)
        for metric in reg.collect()
        for s in metric.samples
    } | {m.name for reg in (WorkerMetrics().registry, DeliveryMetrics().registry) for m in reg.collect()}
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bhealthmon_[a-z_]+", e)}
    # counters and histograms export their series with suffixes
    series = exported | {f"{n}_total" for n in exported} | {f"{n}_bucket" for n in exported}
    assert used and used <= series, used - series
    assert {p["title"] for p in dash["panels"]} >= {"Consumer lag (messages)", "Accounts per band"}
