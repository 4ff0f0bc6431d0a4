"""The fields a rule condition can read, and the context built from a snapshot (pure)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from rules.expr import FieldSpec
from streams.core.metrics import AccountMetrics
from streams.core.snapshot import HealthSnapshot


def _metric_fields() -> dict[str, FieldSpec]:
    out: dict[str, FieldSpec] = {}
    for name, f in AccountMetrics.model_fields.items():
        ann = str(f.annotation)
        if "bool" in ann:
            out[name] = FieldSpec("bool")
        elif any(t in ann for t in ("int", "float", "Decimal")):
            out[name] = FieldSpec("number")
        elif "str" in ann:
            out[name] = FieldSpec("string")
    return out


FIELDS: dict[str, FieldSpec] = {
    **_metric_fields(),
    "score": FieldSpec("number"),
    "confidence": FieldSpec("number"),
    "band": FieldSpec("string", frozenset({"red", "yellow", "green"})),
    "segment": FieldSpec("string", frozenset({"smb", "mid_market", "enterprise"})),
    "delta_1d": FieldSpec("number"),
    "delta_7d": FieldSpec("number"),
    "delta_30d": FieldSpec("number"),
}


def rule_context(snapshot: HealthSnapshot) -> dict[str, Any]:
    """Flat field -> value for conditions; money becomes float so arithmetic mixes with numbers."""
    ctx: dict[str, Any] = {
        k: float(v) if isinstance(v, Decimal) else v for k, v in snapshot.metrics.__dict__.items()
    }
    ctx["score"] = snapshot.score
    ctx["confidence"] = snapshot.confidence
    ctx["band"] = snapshot.band
    ctx["segment"] = snapshot.account.segment
    for key, value in snapshot.deltas.items():
        ctx[f"delta_{key}"] = value
    return ctx
