"""Every use of a private name of Faust, aiokafka or aiohttp, each behind a small function with a test
(tests/unit/test_compat.py) that fails when an upgrade changes what it relies on; and the work-arounds
for faust-streaming 0.15 internals, installed by :func:`install` (``create_app`` does).

The lowest layer but the config (pyproject.toml's import-linter contract): the engine's RocksDB store,
the broker's tail, the worker and the web servers all reach those libraries' internals only here."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from aiokafka.errors import IllegalStateError
from faust.transport.consumer import Consumer
from faust.types import TP
from faust.utils.functional import consecutive_numbers

_INSTALLED = "__healthmon_fix__"
log = logging.getLogger("healthmon.faust")


def install() -> None:
    """Every fix below, once per process."""
    original = Consumer._new_offset
    if getattr(original, _INSTALLED, False):
        return
    lock: Any = contextlib.nullcontext()
    with contextlib.suppress(ImportError):  # the lock that guards Consumer.ack's bookkeeping
        from faust.types.tuples import ack_lock as lock

    def _new_offset(self: Any, tp: TP) -> int | None:
        """Faust's next offset to commit, with each acked offset counted once.

        Faust commits up to the end of the first run of consecutive offsets in its acked list, after
        adding the offsets of the gaps it recorded (jumps it saw in a partition's offsets, taken as
        transaction markers and counted as acked). When a gap's records come after all -- the worker
        reads again what Faust skipped (``reread`` in streams/worker/app.py) and acks them -- those offsets
        are in the list twice, and each duplicate ends a run: the commit then moved one offset per
        commit round (2.8 s). Measured at 300k accounts on RocksDB: everything processed, and the
        last ~1,600 offsets of two partitions still committing one by one (about 40 minutes to go).
        The set of offsets taken as acked is unchanged, so the same commits happen, only in one
        round instead of one per duplicate."""
        with lock:
            acked = self._acked[tp]
            if acked:
                unique = sorted(set(acked))
                twice = len(acked) - len(unique)
                gaps = self._gap.get(tp)
                if gaps:
                    before = sum(g.length() for g in gaps)
                    for run in consecutive_numbers(unique):  # acked for real: not a gap any more
                        gaps.chop(run[0], run[-1] + 1)
                    twice += before - sum(g.length() for g in gaps)
                if twice:
                    log.info(
                        "%s[%s]: %d offsets acked twice (read again after a gap), counted once",
                        *tp[:2],
                        twice,
                    )
                    acked[:] = unique
            return original(self, tp)

    setattr(_new_offset, _INSTALLED, True)
    _new_offset.__wrapped__ = original  # type: ignore[attr-defined]
    Consumer._new_offset = _new_offset  # type: ignore[method-assign]

    init = Consumer.__init__

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        self._read_offset = ReadOffsets(self._read_offset)

    __init__.__wrapped__ = init  # type: ignore[attr-defined]
    Consumer.__init__ = __init__  # type: ignore[method-assign]


class ReadOffsets(dict[Any, Any]):
    """Faust's read offsets (``Consumer._read_offset``: the last offset its fetch loop delivered per
    partition; a record below it is dropped as read), with partitions it must not check while a hole
    is read again.

    A seek back to a hole sets the read offset to the hole, but Faust's ``_drain_messages`` may be
    half-way through a batch fetched before it: the batch's later records move the read offset past
    the hole again, and the records the seek fetches are dropped as read. Under a backlog a batch is
    always in flight, so every seek lost that race and the partition's topics stopped waiting for it
    after ``max_block_s`` (its records then late): issue 22's scale run. While a partition is
    unchecked its read offset reads as None: every record passes (the driver sets aside what comes
    after the hole) and no gap is recorded (Faust records one only against a known read offset).
    The worker checks it again once the driver has the hole's first record (:func:`check_again`).

    A dict with ``defaultdict``'s None for a missing key (Faust reads one it never set)."""

    def __init__(self, offsets: Any = ()) -> None:
        super().__init__(offsets)
        self.unchecked: set[TP] = set()

    def __missing__(self, tp: Any) -> None:
        return None

    def __getitem__(self, tp: Any) -> Any:
        if tp in self.unchecked:
            return None
        return super().__getitem__(tp)

    def pop(self, tp: Any, *default: Any) -> Any:  # Faust's revocation
        self.unchecked.discard(tp)
        return super().pop(tp, *default)


async def seek(consumer: Any, tp: TP, offset: int, timeout: float = 10.0, hole: bool = False) -> bool:
    """Move ``tp``'s fetch position to ``offset`` from the consumer's own thread; False if it could
    not be done within ``timeout`` (the caller asks again later).

    Faust's ``Consumer.seek`` ends in ``ThreadDelegateConsumer._seek``, which calls aiokafka's
    ``seek`` on the event loop's thread while aiokafka fetches in Faust's consumer thread: its
    ``Fetcher.seek_to`` deletes ``_records[tp]`` between the two lines of ``fetched_records`` that
    list the keys and read them, and the fetcher dies of ``KeyError(TopicPartition)`` -- the worker
    with it (tests/integration/test_seek_race_kafka.py). ``seek_wait`` runs the seek through
    ``call_thread`` in that thread, and sets Faust's read offset as ``seek`` does. The timeout
    matters: the thread may be waiting for a rebalance that waits for the caller's lock; the seek
    then is dropped unrun (a cancelled call is skipped) instead of deadlocking.

    ``hole``: a seek back to records Faust did not deliver; its read offset is not checked for ``tp``
    until :func:`check_again` (:class:`ReadOffsets`)."""
    unchecked = getattr(getattr(consumer, "_read_offset", None), "unchecked", None)
    if hole and unchecked is not None:
        unchecked.add(tp)  # before the seek: nothing it fetches may be dropped as read
    try:
        await asyncio.wait_for(consumer.seek_wait({tp: offset}), timeout)
    except (TimeoutError, IllegalStateError) as exc:  # not assigned any more: a rebalance is under way
        log.info("%s[%s]: seek to %s not done (%r); asked again later", *tp[:2], offset, exc)
        return False
    return True


def check_again(consumer: Any, tp: TP) -> None:
    """The hole a seek went back to has been read: Faust checks ``tp``'s read offset again."""
    unchecked = getattr(getattr(consumer, "_read_offset", None), "unchecked", None)
    if unchecked is not None:
        unchecked.discard(tp)


def renew_changelog_topic(table: Any) -> None:
    """Make the table's changelog topic again (lazily, on first use) with the serializers set since.

    Faust's ``Collection`` derives both serializers from the key/value types and builds its
    changelog topic with them in ``__init__``; ``changelog_topic`` builds it again when
    ``_changelog_topic`` is None."""
    table._changelog_topic = None


def forget_gap(consumer: Any, tp: TP, start: int, end: int) -> None:
    """Take ``[start, end)`` out of the offsets Faust counts as acked for ``tp`` without a record.

    Faust records a jump it sees in a partition's offsets as a gap (meant for transaction markers)
    in ``Consumer._gap`` and counts it as acked when it commits; records it skipped there and that
    are read again must not be committed past before they are folded in."""
    gaps = consumer._gap.get(tp)
    if gaps:
        gaps.chop(start, end)


def db_for_partition(table_store: Any, partition: int) -> Any:
    """The RocksDB database of one partition of a Faust table (``Store._db_for_partition``): Faust's
    own ``store[key]`` picks it from the event being processed, and the driver's writes have none."""
    return table_store._db_for_partition(partition)


def visible_items(table_store: Any, db: Any) -> Any:
    """A partition database's items without Faust's own offset key (``Store._visible_items``)."""
    return table_store._visible_items(db)


async def fetch_all_metadata(consumer: Any) -> Any:
    """The whole cluster's metadata through aiokafka's client (``consumer._client``): one request that
    says which topics exist and how many partitions each has (``consumer.topics()`` does not fill the
    cache ``partitions_for_topic()`` reads)."""
    return await consumer._client.fetch_all_metadata()


def bound_port(site: Any, default: int = 0) -> int:
    """The port an aiohttp ``TCPSite`` listens on (port 0 asks the system for one): aiohttp exposes the
    server only as ``site._server``."""
    server = getattr(site, "_server", None)
    if server is None or not server.sockets:
        return default
    return int(server.sockets[0].getsockname()[1])
