"""Faust codec of the ``accounts`` table's changelog: :class:`AccountState` (binary v1; reads old JSON),
and a partition's frozen :class:`Portfolio` under its reserved key (its own format bytes)."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from streams.core.metrics import PORTFOLIO_V1, PORTFOLIO_V1_ZSTD, Portfolio
from streams.core.state import AccountState

STATE_CODEC = "healthmon_state"


class AccountStateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj.dumps() if isinstance(obj, AccountState | Portfolio) else codecs.dumps("json", obj)

    def _loads(self, s: bytes) -> Any:
        if s[:1] in (bytes((PORTFOLIO_V1,)), bytes((PORTFOLIO_V1_ZSTD,))):
            return Portfolio.loads(s)
        return AccountState.loads(s)


codecs.register(STATE_CODEC, AccountStateCodec())
