"""The published JSON Schemas of everything healthmon reads and writes (committed in streams/schema/)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

SCHEMA_DIR = Path(__file__).parent


def _schema(adapter: TypeAdapter[Any], name: str, title: str, mode: str) -> dict:
    schema = adapter.json_schema(mode=mode)  # type: ignore[arg-type]
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://healthmon.dev/schema/{name}.v1.json"
    schema["title"] = title
    return schema


def all_schemas() -> dict[str, dict]:
    from rules.model import AlertEvent
    from streams.core.cards import CardChange
    from streams.core.events import EVENT_ADAPTER
    from streams.core.portfolio import PortfolioMetrics
    from streams.core.snapshot import HealthChange, HealthSnapshot

    return {
        "events": _schema(EVENT_ADAPTER, "events", "healthmon input event, contract v1", "validation"),
        "health": _schema(
            TypeAdapter(HealthSnapshot), "health", "healthmon account snapshot (cs.health)", "serialization"
        ),
        "health-changes": _schema(
            TypeAdapter(HealthChange | CardChange),  # (key __scorecard__: a card promoted or rolled back)
            "health-changes",
            "healthmon health change (cs.health.changes)",
            "serialization",
        ),
        "alerts": _schema(TypeAdapter(AlertEvent), "alerts", "healthmon alert (cs.alerts)", "serialization"),
        "portfolio": _schema(
            TypeAdapter(PortfolioMetrics),
            "portfolio",
            "healthmon portfolio metrics (cs.portfolio)",
            "serialization",
        ),
    }


def schema_path(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.v1.json"
