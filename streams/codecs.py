"""Faust codec that stores :class:`AccountState` in the table changelog (binary v1; reads old JSON)."""

from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from .state import AccountState

STATE_CODEC = "healthmon_state"


class AccountStateCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return obj.dumps() if isinstance(obj, AccountState) else codecs.dumps("json", obj)

    def _loads(self, s: bytes) -> Any:
        return AccountState.loads(s)


codecs.register(STATE_CODEC, AccountStateCodec())
