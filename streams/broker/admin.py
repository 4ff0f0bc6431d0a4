"""Creating healthmon's topics (Faust creates only its own internal ones)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka.admin import NewTopic
from aiokafka.errors import KafkaConnectionError, TopicAlreadyExistsError

from streams.broker import clients as kafka_clients
from streams.settings import Settings

WEEK_MS = 7 * 24 * 3600 * 1000
#: The largest record an input topic accepts (the broker's default message.max.bytes, set explicitly so
#: the dead-letter topic can be sized from it): the worker dead-letters anything above
#: HEALTHMON_MAX_RECORD_BYTES, and a dead letter keeps the original bytes whole so it can be replayed.
INPUT_MAX_MESSAGE_BYTES = 1_048_588
#: A dead letter is the original record plus its reason, source and offset headers.
DEAD_LETTER_MAX_MESSAGE_BYTES = INPUT_MAX_MESSAGE_BYTES + 64 * 1024


@dataclass(frozen=True)
class TopicSpec:
    name: str
    partitions: int
    config: dict[str, str]


def topic_specs(s: Settings) -> list[TopicSpec]:
    """Every topic healthmon reads or writes; input and table-fed topics share one partition count."""
    keep = {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}
    compact = {"cleanup.policy": "compact", "min.compaction.lag.ms": "60000"}
    inputs = {**keep, "max.message.bytes": str(INPUT_MAX_MESSAGE_BYTES)}
    dead = {**keep, "max.message.bytes": str(DEAD_LETTER_MAX_MESSAGE_BYTES)}
    specs = [TopicSpec(name, s.partitions, inputs) for name in s.input_topics]
    specs.append(TopicSpec(s.topic("health"), s.partitions, compact))
    specs.append(TopicSpec(s.topic("portfolio"), 1, compact))  # small; key "period|group"
    specs += [
        TopicSpec(s.topic(n), s.partitions, dead if "deadletter" in n else keep)
        for n in (
            "health_changes",
            "alerts",
            "deadletter",
            "alerts_deadletter",
            "task_actions",
            "task_notices",
        )
    ]
    # Each account's task book (streams/tasks): the state of `healthmon tasks-worker`, co-partitioned.
    specs.append(TopicSpec(s.topic("tasks"), s.partitions, compact))
    # The cards in force over event time (streams/core/cards.py): one partition, so one order of decisions.
    specs.append(TopicSpec(s.topic("scorecards"), 1, compact))
    return specs


def shadow_topic_spec(s: Settings) -> TopicSpec:
    """``healthmon shadow`` output: every snapshot of a re-scored history, kept a week (not compacted,
    so the whole history can be compared); created by the command itself, the worker never reads it."""
    return TopicSpec(
        s.topic("health_shadow"), s.partitions, {"cleanup.policy": "delete", "retention.ms": str(WEEK_MS)}
    )


async def ensure_topic(s: Settings, spec: TopicSpec) -> bool:
    """Create one topic if it is missing; True if this call created it."""
    admin = kafka_clients.admin(s, client_id=f"{s.app_id}-admin")
    await kafka_clients.started(admin)
    try:
        if spec.name in set(await admin.list_topics()):
            return False
        try:
            await admin.create_topics(
                [NewTopic(spec.name, spec.partitions, s.replication_factor, topic_configs=spec.config)]
            )
        except TopicAlreadyExistsError:
            return False
        return True
    finally:
        await admin.close()


class TopicMismatch(RuntimeError):
    pass


async def create_topics(s: Settings) -> list[tuple[str, str]]:
    """Create missing topics; report existing ones; refuse a partition count that breaks co-partitioning."""
    admin = kafka_clients.admin(s, client_id=f"{s.app_id}-admin")
    await kafka_clients.started(admin)
    try:
        specs = topic_specs(s)
        existing = set(await admin.list_topics())
        todo = [
            NewTopic(sp.name, sp.partitions, s.replication_factor, topic_configs=sp.config)
            for sp in specs
            if sp.name not in existing
        ]
        results: list[tuple[str, str]] = []
        if todo:
            try:
                await admin.create_topics(todo)
            except TopicAlreadyExistsError:
                pass  # another worker won the race; checked below
        counts: dict[str, int] = {}
        for _ in range(50):  # a topic just created may show no partitions for a moment
            described = await admin.describe_topics([sp.name for sp in specs])
            counts = {d["topic"]: len(d["partitions"]) for d in described}
            if all(counts.get(sp.name) for sp in specs):
                break
            await asyncio.sleep(0.1)
        for sp in specs:
            have = counts.get(sp.name)
            if have != sp.partitions:
                raise TopicMismatch(
                    f"topic {sp.name} has {have} partitions but healthmon is configured for "
                    f"{sp.partitions} (HEALTHMON_PARTITIONS): input topics must be co-partitioned"
                )
            results.append((sp.name, "created" if sp.name not in existing else "exists"))
        return results
    finally:
        await admin.close()


class TopicsMissing(RuntimeError):
    pass


async def poll_committed(
    s: Settings, until: Callable[[dict[tuple[str, int], int]], bool], timeout: float, every: float = 0.5
) -> dict[tuple[str, int], int]:
    """The worker group's committed offsets by (topic, partition), read every ``every`` s with one
    admin client until ``until`` accepts them; TimeoutError after ``timeout`` s. A positive signal for
    tools, tests and benchmarks: a record is committed only after the states it changed are written."""
    admin = await kafka_clients.started(kafka_clients.admin(s))
    try:
        deadline = time.monotonic() + timeout
        while True:
            offsets = await admin.list_consumer_group_offsets(s.app_id)
            got = {(tp.topic, tp.partition): m.offset for tp, m in offsets.items()}
            if until(got):
                return got
            if time.monotonic() > deadline:
                raise TimeoutError(f"group {s.app_id}: committed {got} within {timeout:g} s")
            await asyncio.sleep(every)
    finally:
        await admin.close()


async def missing_topics(s: Settings, names: list[str], timeout: float = 20.0) -> list[str]:
    """Which of ``names`` the broker does not have."""
    admin = kafka_clients.admin(s, client_id=f"{s.app_id}-preflight", request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
    finally:
        await admin.close()
    return [n for n in names if n not in existing]


async def preflight(s: Settings, timeout: float = 20.0) -> None:
    """Fail fast, in one line, when the broker cannot be reached or the input topics are missing."""
    admin = kafka_clients.admin(s, client_id=f"{s.app_id}-preflight", request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(admin.start(), timeout)
        existing = set(await asyncio.wait_for(admin.list_topics(), timeout))
    except TimeoutError:
        raise KafkaConnectionError(f"no answer from {s.kafka_bootstrap} within {timeout:g} s") from None
    finally:
        await admin.close()
    missing = [t for t in s.input_topics if t not in existing]
    if missing:
        raise TopicsMissing(
            f"input topics missing on {s.kafka_bootstrap}: {', '.join(missing)}\n"
            "hint: create them with `healthmon topics create` (same HEALTHMON_ settings)"
        )
