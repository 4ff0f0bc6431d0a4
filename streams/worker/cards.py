"""The worker follows the card topic: read whole before the first step, then followed; each new
decision gives the engine a new :class:`streams.core.cards.CardSchedule` (docs/promotion.md).

Scoring reads the schedule by event time, so where a decision lands in the worker's processing does
not matter, as long as it arrives before the stream reaches its ``effective_from``. One that arrives
later (the stream was already past it) scored the time in between with the previous card, which a
replay would not: logged as a warning, counted in ``late``.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from streams.broker.cards import parse_record
from streams.broker.tail import assigned_consumer, consume_to_end
from streams.core.cards import CardBook, CardSchedule
from streams.core.scoring import ScoringConfig
from streams.settings import Settings

log = logging.getLogger("healthmon.cards")
RETRY_S = 5.0


class CardFollower:
    """``on_schedule`` gets every new schedule; ``reached`` says how far (event time, s) the worker's
    evaluations have gone, for the lateness warning. ``ready`` is set once the topic was read to the
    end it had at start (or found missing: the base card then, the topic tried again every 5 s)."""

    def __init__(
        self,
        s: Settings,
        base: ScoringConfig,
        on_schedule: Callable[[CardSchedule], None],
        reached: Callable[[], int | None],
    ) -> None:
        self.s = s
        self.book = CardBook(base)
        self.on_schedule = on_schedule
        self.reached = reached
        self.ready = asyncio.Event()
        self.late = 0

    def _apply(self, values: list[bytes | None]) -> None:
        records = [r for v in values if (r := parse_record(v)) is not None]
        if not records:
            return
        self.book.add(records)
        self.on_schedule(self.book.schedule())
        now = self.reached()
        for r in records:
            if r.effective_from is not None and now is not None and r.effective_from < now:
                self.late += 1
                log.warning(
                    "card %s (%s) takes effect at %s but arrived when evaluations had reached %s: "
                    "the time between was scored with the previous card (a replay would use this one)",
                    r.config.card_version,
                    r.status,
                    r.effective_from,
                    now,
                )
            else:
                log.info("card %s %s from event time %s", r.config.card_version, r.status, r.effective_from)

    async def run(self) -> None:
        """Read the topic whole, then follow it; a broken read starts again from the beginning
        (scoring waits for the first whole read, never guesses the cards in force)."""
        while True:
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("reading the card topic failed; reading it again in %g s", RETRY_S)
                await asyncio.sleep(RETRY_S)

    async def _run(self) -> None:
        self.book = CardBook(self.book.base)
        topic = self.s.topic("scorecards")
        while True:
            try:
                consumer = await assigned_consumer(self.s, [topic], "earliest")
            except ValueError:
                if not self.ready.is_set():
                    log.warning("no card topic %s: scoring with the configured card", topic)
                self.ready.set()
                await asyncio.sleep(RETRY_S)
                continue
            break
        try:
            tps = sorted(consumer.assignment())
            await consumer.seek_to_beginning(*tps)
            self._apply([m.value async for m in consume_to_end(consumer, tps, past_end=True)])
            self.ready.set()
            log.info(
                "card topic read: %d decisions, %d in the schedule",
                len(self.book.records),
                len(self.book.changes),
            )
            while True:
                batch = await consumer.getmany(*tps, timeout_ms=1000)
                self._apply([m.value for recs in batch.values() for m in recs])
        finally:
            await consumer.stop()
