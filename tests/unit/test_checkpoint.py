"""The durability protocol (streams/worker/checkpoint.py): outputs, then states, then acks, flushed when due.

The world the checkpoint talks to is an in-memory one that records what happened in which order:
a producer whose sends are settled later, a changelog that hands out offsets per partition, a store
that can be closed, and acks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from streams.worker.checkpoint import Checkpoint, Durable


@dataclass
class St:
    key: str
    version: int

    def dumps(self) -> bytes:
        return f"{self.key}:{self.version}".encode()


@dataclass
class World:
    events: list[tuple] = field(default_factory=list)
    changelog: dict[int, list[tuple[bytes, bytes]]] = field(default_factory=dict)

    async def send(self, records: list[str]) -> list[str]:
        self.events += [("send", r) for r in records]
        return list(records)

    async def settle(self, sent: list[str]) -> None:
        self.events.append(("settled", tuple(sent)))

    async def write_changelog(self, rows: list[tuple[int, bytes, bytes]]) -> dict[int, int]:
        for p, k, v in rows:
            self.changelog.setdefault(p, []).append((k, v))
            self.events.append(("changelog", p, v))
        return {p: len(log) - 1 for p, log in self.changelog.items()}

    def ack(self, handle: str) -> None:
        self.events.append(("ack", handle))

    def durable(self) -> Durable[str]:
        return Durable(self.send, self.settle, self.write_changelog, self.ack)


@dataclass
class Store:
    world: World
    closed: bool = False

    def commit(self, records: list[tuple[bytes, bytes]], offset: int | None) -> None:
        if self.closed:
            raise RuntimeError("database closed")
        self.world.events.append(("store", tuple(v for _, v in records), offset))


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(flush_s: float = 1.0) -> tuple[World, Checkpoint[str], Clock, Store]:
    world, clock = World(), Clock()
    return world, Checkpoint(world.durable(), flush_s, clock), clock, Store(world)


async def test_outputs_then_states_then_acks() -> None:
    world, cp, _, store = make()
    await cp.add(["h1", "a1"], [(0, {"acc": St("acc", 1)}, store, ["in-1", None, "in-2"])])
    assert world.events == [("send", "h1"), ("send", "a1")]  # sent at once; states and acks held
    flushed = await cp.flush()
    assert world.events[2:] == [
        ("settled", ("h1", "a1")),  # every output acknowledged first
        ("changelog", 0, b"acc:1"),  # then the states
        ("store", (b"acc:1",), 0),  # then the local database, with the changelog offset reached
        ("ack", "in-1"),  # then the inputs
        ("ack", "in-2"),
    ]
    assert flushed == {0: {"acc": St("acc", 1)}}
    assert not cp and cp.since is None


async def test_flushed_when_due_by_the_injected_clock() -> None:
    world, cp, clock, store = make(flush_s=2.0)
    assert await cp.flush_when_due() == {}  # nothing held: never due
    await cp.add(["o1"], [(0, {"a": St("a", 1)}, store, ["i1"])])
    clock.now += 1.0
    await cp.add(["o2"], [(0, {"a": St("a", 2)}, store, ["i2"])])
    clock.now += 0.9
    assert not cp.due()
    assert await cp.flush_when_due() == {}
    assert ("ack", "i1") not in world.events
    clock.now += 0.1  # 2 s since the first thing was held, not since the latest
    assert cp.due()
    await cp.flush_when_due()
    assert [e for e in world.events if e[0] in ("changelog", "ack")] == [
        ("changelog", 0, b"a:2"),  # written once, as last changed
        ("ack", "i1"),
        ("ack", "i2"),
    ]
    assert not cp.due()
    await cp.add([], [(0, {}, store, ["i3"])])  # an ack alone is held too, from now on
    assert cp.since == clock.now


async def test_a_state_changed_again_moves_to_the_end() -> None:
    """A portfolio frozen after an account changed must not be written before the account's later
    change: states are written in the order of their latest change."""
    world, cp, _, store = make()
    await cp.add([], [(0, {"a": St("a", 1), "\x00portfolio/0": St("pf", 1)}, store, [])])
    await cp.add([], [(0, {"a": St("a", 2)}, store, [])])
    await cp.flush()
    assert [e[2] for e in world.events if e[0] == "changelog"] == [b"pf:1", b"a:2"]


async def test_a_clean_stop_writes_the_states_and_acks_nothing() -> None:
    world, cp, _, store = make()
    store.closed = True  # the tables stopped before the shutdown handlers run
    await cp.add(["o"], [(1, {"a": St("a", 1)}, store, ["i"])])
    await cp.flush(stopping=True)
    assert world.changelog == {1: [(b"a", b"a:1")]}
    assert not [e for e in world.events if e[0] == "ack"]
    assert not cp


async def test_a_closed_store_outside_a_stop_raises_and_keeps_everything_held() -> None:
    _, cp, _, store = make()
    store.closed = True
    await cp.add([], [(1, {"a": St("a", 1)}, store, ["i"])])
    with pytest.raises(RuntimeError):
        await cp.flush()
    assert cp.acks == ["i"] and cp.held == {1: {"a": St("a", 1)}}


async def test_after_a_broken_step_nothing_is_written_or_acked() -> None:
    """A step that stopped half-way changed states in place whose outputs were never sent: writing
    them, even at a clean stop, would let the restart skip records whose outputs nobody saw."""
    world, cp, _, store = make()
    await cp.add(["o1"], [(0, {"a": St("a", 1)}, store, ["i1"])])
    cp.breaks(RuntimeError("step failed"))
    await cp.add(["o2"], [(0, {"b": St("b", 1)}, store, ["i2"])])
    assert await cp.flush() == {}
    assert await cp.flush(stopping=True) == {}
    assert world.events == [("send", "o1")]
    assert world.changelog == {}


async def test_outputs_alone_are_settled_without_a_changelog_write() -> None:
    world, cp, _, _ = make()
    await cp.add(["o"], [])
    await cp.flush()
    assert world.events == [("send", "o"), ("settled", ("o",))]
