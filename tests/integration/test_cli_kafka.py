"""The CLI as an operator uses it, against the real broker: replay validates before sending, tail stops
at the end, and Kafka or Redis being unreachable is one line with a hint, never a traceback."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streams.broker.tail import read_to_end
from streams.settings import Settings
from tests.conftest import run_cli
from tests.helpers import account_event, at, event, setup_topics

pytestmark = pytest.mark.kafka


cli = run_cli


async def count(s: Settings, *kinds: str) -> int:
    return sum([1 async for _ in read_to_end(s, *(s.topic(k) for k in kinds))])


def lines(events: list[dict]) -> str:
    return "".join(orjson.dumps(e).decode() + "\n" for e in events)


def stream() -> list[dict]:
    return [
        account_event("a1"),
        account_event("a2"),
        *(event("login", "a1", at(0, h), user_id="u1") for h in range(3)),
        event("login", "a2", at(0, 5), user_id="u2"),
    ]


async def test_replay_sends_nothing_when_a_line_is_invalid(kafka_settings: Settings, tmp_path: Path) -> None:
    s = kafka_settings
    await setup_topics(s)
    good = stream()
    path = tmp_path / "events.jsonl"
    path.write_text(lines(good[:3]) + '{"type": "login"}\nnot json\n' + lines(good[3:]))

    refused = cli(s, "replay", str(path))
    assert refused.returncode == 1
    assert f"{path}:4: login.event_id: Field required" in refused.stderr
    assert f"{path}:5: not JSON" in refused.stderr and "--skip-invalid" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert await count(s, "accounts", "usage") == 0  # the three valid lines before were not sent

    sent = cli(s, "replay", str(path), "--skip-invalid")
    assert sent.returncode == 0, sent.stderr
    assert f"produced 6 events from {path} ({s.topic('accounts')} 2, {s.topic('usage')} 4)" in sent.stdout
    assert "skipped 2 invalid line(s)" in sent.stderr and f"{path}:4:" in sent.stderr
    assert await count(s, "accounts") == 2 and await count(s, "usage") == 4


async def test_tail_stops_at_the_end_and_latest_keeps_one_per_key(
    kafka_settings: Settings, tmp_path: Path
) -> None:
    s = kafka_settings
    await setup_topics(s)
    path = tmp_path / "events.jsonl"
    path.write_text(lines(stream()))
    assert cli(s, "replay", str(path)).returncode == 0

    everything = cli(s, "tail", "cs.usage", timeout=60)  # no --idle, no --max: it must stop by itself
    assert everything.returncode == 0, everything.stderr
    assert len(everything.stdout.splitlines()) == 4

    latest = cli(s, "tail", "cs.usage", "--latest", timeout=60)
    assert latest.returncode == 0, latest.stderr
    got = [orjson.loads(line) for line in latest.stdout.splitlines()]
    assert [(e["account_id"], e["occurred_at"]) for e in got] == [("a1", at(0, 2)), ("a2", at(0, 5))]

    assert len(cli(s, "tail", "cs.usage", "--max", "2").stdout.splitlines()) == 2
    missing = cli(s, "tail", "cs.nothing-here")
    assert missing.returncode == 1 and "does not exist" in missing.stderr
    assert "Traceback" not in missing.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["worker"],
        ["topics", "create"],
        ["tail", "cs.health"],
        ["replay", "SAMPLE"],
        ["simulate", "--accounts", "2", "--days", "7", "--produce"],
        ["deliver"],
        ["readmodel"],
    ],
)
def test_unreachable_kafka_is_one_line_with_a_hint(kafka_settings: Settings, args: list[str]) -> None:
    s = kafka_settings.model_copy(update={"broker": "kafka://127.0.0.1:1"})
    if args == ["replay", "SAMPLE"]:
        args = ["replay", cli(s, "sample").stdout.strip()]
    done = cli(s, *args, timeout=90)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("Error: ")]
    assert len(errors) == 1 and "cannot use Kafka at 127.0.0.1:1" in errors[0], done.stderr
    assert "hint: is the broker up" in done.stderr


@pytest.mark.redis
def test_unreachable_redis_is_one_line_with_a_hint(settings: Settings) -> None:
    s = settings.model_copy(update={"redis_url": "redis://:s3cret@127.0.0.1:1/0"})
    done = cli(s, "silence", "list")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert "cannot reach Redis at redis://:***@127.0.0.1:1/0" in done.stderr
    assert "s3cret" not in done.stderr and "hint:" in done.stderr


async def test_a_restarted_demo_simulator_does_not_replay_its_history(kafka_settings: Settings) -> None:
    s = kafka_settings
    await setup_topics(s)
    args = [
        "simulate",
        "--accounts",
        "3",
        "--days",
        "7",
        "--end",
        "2026-11-01",
        "--produce",
        "--only-if-empty",
    ]
    first = cli(s, *args)
    assert first.returncode == 0, first.stderr
    produced = await count(s, "accounts", "usage", "tickets", "billing", "surveys")
    assert produced > 0 and f"produced {produced} events" in first.stderr
    again = cli(s, *args)  # e.g. `docker compose up` again with the volumes kept
    assert again.returncode == 0, again.stderr
    assert f"already hold {produced} events" in again.stderr
    assert await count(s, "accounts", "usage", "tickets", "billing", "surveys") == produced
