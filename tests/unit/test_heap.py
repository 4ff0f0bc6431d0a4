"""The worker's heap freezer (streams/worker/heap.py): freezing keeps objects out of collections,
and the periodic full collection takes back the cyclic garbage a freeze hid."""

from __future__ import annotations

import gc
import weakref

import pytest

from streams.worker.heap import HeapFreezer


class Node:
    def __init__(self) -> None:
        self.other: Node | None = None


def cycle() -> weakref.ref[Node]:
    a, b = Node(), Node()
    a.other, b.other = b, a
    return weakref.ref(a)


@pytest.fixture(autouse=True)
def thawed():
    yield
    gc.unfreeze()


def test_a_freeze_hides_cyclic_garbage_until_the_full_collection():
    now = [0.0]
    heap = HeapFreezer(full_s=3600, clock=lambda: now[0])
    gone = cycle()  # unreachable already, but a cycle: only a collection frees it
    assert heap.tick() is None and gc.get_freeze_count() > 0
    gc.collect()
    assert gone() is not None  # frozen: no collection sees it
    now[0] = 3599.0
    assert heap.tick() is None and gone() is not None
    now[0] = 3600.0
    took = heap.tick()  # the full collection is due
    assert took is not None and took >= 0
    assert gone() is None and gc.get_freeze_count() > 0  # collected, and the heap frozen again


def test_no_full_collection_when_turned_off():
    now = [0.0]
    heap = HeapFreezer(full_s=0, clock=lambda: now[0])
    gone = cycle()
    now[0] = 10**9
    assert heap.tick() is None
    gc.collect()
    assert gone() is not None
