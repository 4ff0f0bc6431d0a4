"""Where each input topic of a partition stands: end offsets, holes read again, offsets skipped to.

The driver folds a topic's records strictly in offset order (an account's state records the last
offset it applied, which is what makes redelivery safe), so what the consumer skipped must come
before anything after it. Faust 0.15 skips fetched records at times: in the SIGKILL fault test 88
records of one partition never reached the agent while the ones after them did (a hole: the driver
sets the later ones aside), and a partition's tail can go missing with nothing after it (a topic
with unread records that delivers none). Both are sought back to; records in flight come again and
the driver takes them in order. The broker is asked first what lies there: offsets it has no record
for (transaction markers, compaction) are accepted, not waited for.

:class:`OffsetTracker` holds that logic with everything it talks to passed in (the probe, the seek,
the consumer's high-water marks, both clocks), so it is unit-tested without Kafka or time;
:class:`BrokerOffsets` is its Kafka side (a client of our own, outside Faust's consumer thread).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiokafka import AIOKafkaConsumer, TopicPartition

from streams.broker.clients import consumer as kafka_consumer
from streams.broker.clients import started
from streams.settings import Settings

log = logging.getLogger("healthmon.ingest")

#: End offsets older than this are not trusted (a broker outage): time waits.
ENDS_FRESH_S = 5.0
#: A topic that delivers nothing while records are unread is read again after this long (wall s).
TAIL_STALL_S = 3.0
#: A seek from the same offset is not asked again within this long (it is under way).
SEEK_PENDING_S = 5.0
#: After a probe the broker did not answer, none again for this long (an outage).
PROBE_BACKOFF_S = 10.0


class Driven(Protocol):
    """What the tracker reads and changes of a partition's driver (:class:`PartitionDriver`)."""

    gaps: dict[int, tuple[int, int]]
    blocked_since: list[float | None]
    position: list[int | None]

    def skip_to(self, kind: int, offset: int) -> None: ...


@dataclass(frozen=True)
class Consumer:
    """The consumer side the tracker needs, each a callable the shell provides."""

    #: The offset of the first record the broker holds at or after an offset of (topic kind,
    #: partition); None when it holds none before its end. Raises when the broker does not answer.
    probe: Callable[[int, int, int], Awaitable[int | None]]
    #: Seek (kind, partition) to an offset, from the consumer's own thread; False when not done.
    seek: Callable[[int, int, int], Awaitable[bool]]
    #: Faust counted offsets [first, until) as acked (a jump it saw): forget that.
    forget_gap: Callable[[int, int, int, int], None]
    #: The consumer's high-water mark of (kind, partition), or None.
    highwater: Callable[[int, int], int | None]
    #: A hole sought back to is read: the client may check (kind, partition)'s read offset again.
    check_again: Callable[[int, int], None] = lambda k, p: None


class OffsetTracker:
    """End offsets per (topic kind, partition), and the re-reads of holes and stalled tails.

    ``monotonic`` times the freshness of end offsets and the back-offs; ``wall`` is the clock of the
    drivers' ``blocked_since``. Not reentrant: the caller serialises the calls (the worker's lock)."""

    def __init__(
        self,
        n_kinds: int,
        consumer: Consumer,
        monotonic: Callable[[], float],
        wall: Callable[[], float],
        names: Sequence[str] | None = None,
    ) -> None:
        self.n_kinds = n_kinds
        self.consumer = consumer
        self.monotonic = monotonic
        self.wall = wall
        self.names = list(names) if names is not None else [str(k) for k in range(n_kinds)]
        self.end_offsets: dict[tuple[int, int], int] = {}  # (kind, partition) -> end offset
        self.ends_read_at: dict[int, float] = {}  # partition -> when its end offsets were last read
        self.rereads: dict[tuple[int, int], tuple[int, float]] = {}  # (partition, kind) -> (from, when)
        self.sought: dict[tuple[int, int], int] = {}  # (partition, kind) -> the hole a seek went back to
        self.probe_failed_at = float("-inf")

    def record_ends(self, p: int, ends: Sequence[int]) -> None:
        """The end offsets of every topic of partition ``p``, just read from the broker."""
        for k, end in enumerate(ends):
            self.end_offsets[(k, p)] = end
        self.ends_read_at[p] = self.monotonic()

    def forget(self, p: int) -> None:
        """A revoked partition: its offsets and re-reads belong to the next owner."""
        for k in range(self.n_kinds):
            self.end_offsets.pop((k, p), None)
            self.rereads.pop((p, k), None)
            self.sought.pop((p, k), None)
        self.ends_read_at.pop(p, None)

    def highwaters(self, p: int) -> list[int | None]:
        """The topics' end offsets, or None (unknown) when the broker has not told us for seconds.

        "Read to its end" lets a topic stop holding time back; the consumer's own high-water
        marks stop moving in a broker outage, so trusting them would let time run ahead of records
        already in Kafka (every one of them late when the broker is back). Unknown: time waits."""
        if self.monotonic() - self.ends_read_at.get(p, float("-inf")) > ENDS_FRESH_S:
            return [None] * self.n_kinds
        out: list[int | None] = []
        for k in range(self.n_kinds):
            hw = self.consumer.highwater(k, p)
            known = self.end_offsets.get((k, p))
            out.append(hw if known is None or (hw is not None and hw > known) else known)
        return out

    async def reread(self, p: int, driver: Driven) -> None:
        """Read each topic of ``p`` again from where its records stopped arriving in order (see the
        module docstring); offsets the broker holds nothing for are skipped to."""
        for k in range(self.n_kinds):
            start, pos = self.sought.get((p, k)), driver.position[k]
            if start is not None and pos is not None and pos > start and k not in driver.gaps:
                del self.sought[(p, k)]  # the hole's first record came, in order
                self.consumer.check_again(k, p)
        now = self.monotonic()
        if now - self.probe_failed_at < PROBE_BACKOFF_S:
            return  # the broker did not answer the last probe (an outage): not again at once
        holes: dict[int, tuple[int, int | None]] = dict(driver.gaps)
        for k, since in enumerate(driver.blocked_since):
            pos = driver.position[k]
            if (
                k not in holes
                and since is not None
                and pos is not None
                and self.wall() - since >= TAIL_STALL_S
            ):
                holes[k] = (pos, None)  # unread records, none delivered
        for k, (want, got) in holes.items():
            seen = self.rereads.get((p, k))
            if seen is not None and seen[0] == want and now - seen[1] < SEEK_PENDING_S:
                continue  # a seek from there is under way
            self.rereads[(p, k)] = (want, now)
            try:
                first = await self.consumer.probe(k, p, want)
            except Exception as exc:
                self.probe_failed_at = self.monotonic()
                log.warning("could not read %s[%s] from %s: %r; trying again", self.names[k], p, want, exc)
                return
            if first is None:  # nothing from there to the end: the end offset counts markers
                if got is None:
                    driver.skip_to(k, self.highwaters(p)[k] or want)
                continue
            if first > want:  # nothing before ``first`` (transaction markers, compaction)
                driver.skip_to(k, first)
            if got is not None and first < got:
                # Faust counts a jump it saw as acked (meant for transaction markers): left over
                # records it skipped, its next commit could pass them before they are folded in.
                self.consumer.forget_gap(k, p, first, got + 1)
            if first == want:
                came = f"{got} came next" if got is not None else "none came"
                log.warning(
                    "%s[%s]: records from %s were not delivered (%s); reading again",
                    self.names[k],
                    p,
                    want,
                    came,
                )
            if await self.consumer.seek(k, p, first):
                self.sought[(p, k)] = first
            else:
                self.rereads.pop((p, k), None)  # not done: asked again at the next tick


class BrokerOffsets:
    """The broker side: committed, beginning and end offsets, and probes, read by clients of our
    own (asking Faust's consumer thread from inside an agent can deadlock it)."""

    def __init__(self, settings: Settings, names: Sequence[str]) -> None:
        self.settings = settings
        self.names = list(names)
        self.client: AIOKafkaConsumer | None = None

    async def offsets_client(self) -> AIOKafkaConsumer:
        if self.client is None:
            s = self.settings
            fresh = kafka_consumer(
                s, group_id=s.app_id, client_id=f"{s.app_id}-offsets", enable_auto_commit=False
            )
            self.client = await started(fresh)  # assigned only once started: a failed start is asked again
        return self.client

    async def close(self) -> None:
        if self.client is not None:
            await self.client.stop()

    async def start_positions(self, p: int) -> tuple[list[int | None], list[int] | None]:
        """Where the consumer starts reading each topic of a partition (the committed offset, or the
        log start when nothing was committed, so a topic read to its end holds nothing back), and
        the end offsets; unknown (None) when the broker does not answer: such a topic holds time back
        until max_block_s."""
        tps = [TopicPartition(name, p) for name in self.names]
        try:
            c = await self.offsets_client()
            begin = await asyncio.wait_for(c.beginning_offsets(tps), timeout=10)
            ends = await asyncio.wait_for(c.end_offsets(tps), timeout=10)
            out: list[int | None] = []
            for tp in tps:
                committed = await asyncio.wait_for(c.committed(tp), timeout=10)
                out.append(committed if committed is not None else begin[tp])
            return out, [ends[tp] for tp in tps]
        except Exception as exc:
            log.warning("could not read the offsets of partition %s: %r", p, exc)
            return [None] * len(self.names), None

    async def end_offsets(self, parts: Sequence[int]) -> dict[int, list[int]] | None:
        """The end offsets of every topic of ``parts``; None when the broker does not answer."""
        tps = [TopicPartition(name, p) for p in parts for name in self.names]
        try:
            c = await self.offsets_client()
            ends = await asyncio.wait_for(c.end_offsets(tps), timeout=5)
        except Exception as exc:
            log.warning("could not read the input topics' end offsets: %r", exc)
            return None
        return {p: [ends[TopicPartition(name, p)] for name in self.names] for p in parts}

    async def first_offset_from(self, k: int, p: int, offset: int) -> int | None:
        """The offset of the first record the broker holds at or after ``offset``; None when it
        holds none before its end (transaction markers, compaction). Read by a client of our own,
        outside the group; raises when the broker gives no answer either way within 10 s."""
        s = self.settings
        tp = TopicPartition(self.names[k], p)

        async def probe_once() -> int | None:
            probe = await started(
                kafka_consumer(s, group_id=None, client_id=f"{s.app_id}-probe", enable_auto_commit=False)
            )
            try:
                probe.assign([tp])
                probe.seek(tp, offset)
                while True:
                    batch = await probe.getmany(tp, timeout_ms=500, max_records=1)
                    if found := batch.get(tp):
                        return found[0].offset
                    end = (await probe.end_offsets([tp]))[tp]
                    if await probe.position(tp) >= end:
                        return None
            finally:
                await probe.stop()

        return await asyncio.wait_for(probe_once(), timeout=10)
