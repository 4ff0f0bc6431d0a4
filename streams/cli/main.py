"""The ``healthmon`` command line."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
import orjson

from streams.cli import tasks as tasks_commands
from streams.cli.errors import HealthmonGroup
from streams.settings import get_settings

if TYPE_CHECKING:
    from streams.core.cards import CardBook
    from streams.core.events import BaseEvent
    from streams.core.promotion import Verdict
    from streams.core.scoring import ScoringConfig
    from streams.settings import Settings


@click.group(cls=HealthmonGroup)
def main() -> None:
    """healthmon: real-time customer health for Customer Success teams."""


@main.command()
@click.option("--loglevel", "-l", default=None, help="debug, info, warning (default: HEALTHMON_LOG_LEVEL)")
def worker(loglevel: str | None) -> None:
    """Run a stream worker (scale out by starting more: they share the consumer group)."""
    import faust

    from streams.broker.admin import preflight
    from streams.broker.clients import faust_app_kwargs
    from streams.cli.logs import rate_limit_handlers
    from streams.config import ConfigError
    from streams.worker.app import create_app

    s = get_settings()
    try:
        pipeline = create_app(s)
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
    # Faust logs a broker it cannot reach as a long traceback; ask once, plainly, before starting it.
    asyncio.run(preflight(s))
    for name, value in faust_app_kwargs(s).items():  # security and bind address (see kafka_clients)
        setattr(pipeline.app.conf, name, value)

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            rate_limit_handlers(logger)  # an outage logs a few lines, not thousands a second

    Worker(pipeline.app, loglevel=loglevel or s.log_level).execute_from_commandline()


@main.command("tasks-worker")
@click.option("--loglevel", "-l", default=None, help="debug, info, warning (default: HEALTHMON_LOG_LEVEL)")
def tasks_worker(loglevel: str | None) -> None:
    """Run the playbook-task worker: cs.alerts + cs.task-actions -> cs.tasks, cs.task-notices, Redis."""
    import faust

    from streams.broker.admin import missing_topics, preflight
    from streams.cli.logs import rate_limit_handlers
    from streams.worker.tasks import create_tasks_app

    s = get_settings()
    asyncio.run(preflight(s))
    missing = asyncio.run(
        missing_topics(s, [s.topic(n) for n in ("alerts", "task_actions", "tasks", "task_notices")])
    )
    if missing:
        raise click.ClickException(
            f"task topics missing on {s.kafka_bootstrap}: {', '.join(missing)}\n"
            "hint: create them with `healthmon topics create` (same HEALTHMON_ settings)"
        )
    pipeline = create_tasks_app(s)

    class Worker(faust.Worker):
        def on_setup_root_logger(self, logger: logging.Logger, level: int) -> None:
            super().on_setup_root_logger(logger, level)
            rate_limit_handlers(logger)

    Worker(pipeline.app, loglevel=loglevel or s.log_level).execute_from_commandline()


@main.group()
def topics() -> None:
    """Kafka topics healthmon reads and writes."""


@topics.command("create")
def topics_create() -> None:
    """Create every topic idempotently (input topics co-partitioned, cs.health compacted)."""
    from streams.broker.admin import TopicMismatch, create_topics

    try:
        for name, what in asyncio.run(create_topics(get_settings())):
            click.echo(f"{what:8} {name}")
    except TopicMismatch as exc:
        raise click.ClickException(str(exc)) from None


@topics.command("list")
def topics_list() -> None:
    """Show the topic names and settings healthmon is configured with."""
    from streams.broker.admin import topic_specs

    for sp in topic_specs(get_settings()):
        click.echo(f"{sp.name}\tpartitions={sp.partitions}\t{sp.config.get('cleanup.policy')}")


@main.command()
@click.argument("topic")
@click.option(
    "--from-beginning/--from-end", default=True, show_default=True, help="--from-end implies --follow."
)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new messages (default: stop at the end).")
@click.option("--latest", is_flag=True, help="Only the latest message per key (e.g. per account), then stop.")
@click.option("--max", "max_messages", type=int, default=0, help="Stop after this many messages.")
@click.option(
    "--idle", type=float, default=0, help="With --follow: stop after this many seconds without one."
)
def tail(
    topic: str, from_beginning: bool, follow: bool, latest: bool, max_messages: int, idle: float
) -> None:
    """Print a topic as JSON lines: cs.health, cs.health.changes, cs.alerts, cs.deadletter, ...

    Reads from the beginning to the end as of now and stops; --follow (or --from-end) keeps going.
    """
    from streams.broker.tail import tail_topic

    if latest and (follow or not from_beginning):
        raise click.UsageError("--latest reads the whole topic and stops: not with --follow or --from-end")
    follow = follow or not from_beginning or idle > 0
    s = get_settings()
    name = topic if topic.startswith(s.topic_prefix) else s.topic_prefix + topic
    try:
        asyncio.run(
            tail_topic(s, name, from_beginning, max_messages, idle, sys.stdout.buffer, follow, latest)
        )
    except KeyboardInterrupt:
        pass
    except ValueError as exc:  # the topic does not exist
        raise click.ClickException(
            f"{exc}\nhint: `healthmon topics list` shows the configured names"
        ) from None


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--rate", type=float, default=None, help="Events per second (default: as fast as possible).")
@click.option("--skip-invalid", is_flag=True, help="Send the valid lines and count the invalid ones.")
def replay(file: Path, rate: float | None, skip_invalid: bool) -> None:
    """Produce a JSON-lines event file to the input topics in order, keyed by account_id.

    Every line is validated first (the worker's contract): with an invalid line nothing is sent,
    unless --skip-invalid.
    """
    from streams.broker.producer import ReplayError, scan_file, send_file
    from streams.cli.progress import bar

    s = get_settings()
    report = scan_file(s, file)  # every line checked before anything is sent
    with bar(f"replay {file.name}", total=report.valid) as progress:
        try:
            asyncio.run(send_file(s, file, report, rate, skip_invalid, on_sent=lambda _: progress.update()))
        except ReplayError as exc:
            raise click.ClickException(str(exc)) from None
    total = sum(report.sent.values())
    by_topic = ", ".join(f"{topic} {n}" for topic, n in sorted(report.sent.items()))
    click.echo(f"produced {total} events from {file}" + (f" ({by_topic})" if by_topic else ""))
    if report.invalid:
        click.echo(f"skipped {report.invalid} invalid line(s):", err=True)
        for problem in report.problems:
            click.echo(f"  {problem}", err=True)
        if report.invalid > len(report.problems):
            click.echo(f"  ... and {report.invalid - len(report.problems)} more", err=True)


def _parse_end(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC).replace(second=0, microsecond=0)
    try:
        end = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a date or an RFC 3339 time", param_hint="--end") from None
    return end if end.tzinfo else end.replace(tzinfo=UTC)


@main.command()
@click.option("--accounts", type=click.IntRange(1), default=200, show_default=True)
@click.option("--days", type=click.IntRange(7), default=90, show_default=True, help="Days of history.")
@click.option("--seed", type=int, default=1, show_default=True)
@click.option("--end", default=None, help="End of the history: a date or RFC 3339 time (default: now).")
@click.option(
    "--out", type=click.Path(dir_okay=False, path_type=Path), help="Write JSON lines here ('-': stdout)."
)
@click.option("--truth", type=click.Path(dir_okay=False, path_type=Path), help="Write the ground truth here.")
@click.option("--produce", is_flag=True, help="Produce the events to the input topics.")
@click.option(
    "--rate", type=float, default=None, help="With --produce: events per second (default: flat out)."
)
@click.option(
    "--follow", is_flag=True, help="With --produce: after the history, go on live (events at their time)."
)
@click.option(
    "--only-if-empty",
    is_flag=True,
    help="With --produce: do nothing if the input topics already hold events (a restarted demo would "
    "replay its history onto the kept state and count it twice).",
)
def simulate(accounts, days, seed, end, out, truth, produce, rate, follow, only_if_empty) -> None:
    """Generate a synthetic customer base: contract-v1 events for every topic, in event-time order.

    Deterministic for the same options (give --end; it defaults to now). The ground truth (each
    account's persona, whether and when it cancels) is what `healthmon evaluate` scores against.
    """
    from streams.sim.simulate import Simulator

    if not out and not produce:
        raise click.UsageError("give --out FILE (or '-') and/or --produce")
    if (follow or only_if_empty) and not produce:
        raise click.UsageError("--follow and --only-if-empty need --produce")
    sim = Simulator(accounts, days, seed, _parse_end(end))
    if truth is None and out and str(out) != "-":
        truth = out.with_name(out.name.removesuffix(".jsonl") + ".truth.json")
    if truth is not None:
        truth.write_bytes(orjson.dumps(sim.truth().model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        click.echo(f"ground truth: {truth}", err=True)
    if out:
        from streams.cli.progress import bar

        n = 0
        with contextlib.ExitStack() as stack, bar(f"simulate -> {out}") as progress:
            fh = sys.stdout.buffer if str(out) == "-" else stack.enter_context(out.open("wb"))
            for e in sim.events():
                fh.write(orjson.dumps(e) + b"\n")
                n += 1
                progress.update()
        click.echo(f"wrote {n} events to {out}", err=True)
    if produce:
        from streams.broker.producer import event_records, produce_events
        from streams.cli.progress import bar

        s = get_settings()
        if only_if_empty:
            from streams.broker.tail import count_records

            held = asyncio.run(count_records(s, *s.input_topics))
            if held:
                click.echo(
                    f"the input topics already hold {held} events: not replaying the history onto them "
                    "(reset the state first, e.g. `docker compose --profile demo down -v`)",
                    err=True,
                )
                return
        records = event_records(s, sim.events(days_after=3650 if follow else 0))
        live = False
        progress = bar("history", total=None)

        def when(record: tuple) -> float:
            nonlocal live
            at = datetime.fromisoformat(orjson.loads(record[2])["occurred_at"]).timestamp()
            if not live and at > time.time():
                live = True
                progress.close()
                click.echo("history produced; now live: each event is sent when its time comes", err=True)
            return at

        def sent(record: tuple) -> None:
            if not live:
                progress.update()
                if progress.n % 5000 == 0:  # how far the history has come (it ends at --end)
                    progress.set_postfix_str(orjson.loads(record[2])["occurred_at"][:10], refresh=False)

        try:
            n = asyncio.run(
                produce_events(s, records, rate, not_before=when if follow else None, on_sent=sent)
            )
        except KeyboardInterrupt:
            return
        finally:
            progress.close()
        click.echo(f"produced {n} events", err=True)


@main.command()
@click.argument("truth", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--snapshots",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="cs.health snapshots as JSON lines (e.g. saved with `healthmon tail cs.health`).",
)
@click.option(
    "--events",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Score this event file offline instead (no Kafka; accounts scored at each midnight).",
)
@click.option(
    "--days-before",
    type=click.IntRange(0),
    default=30,
    show_default=True,
    help="Score churners this many days before they cancel.",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here."
)
@click.option(
    "--scorecard",
    "scorecards",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="With --events: also score with this scorecard and show the reports side by side, with the "
    "accounts whose red band would start differently (repeatable).",
)
@click.option(
    "--partitions",
    type=click.IntRange(1, 1024),
    default=None,
    help="With --events: split the accounts over this many partitions as the worker does, each "
    "ranking its own accounts for the portfolio measures (default: HEALTHMON_PARTITIONS).",
)
def evaluate(
    truth: Path,
    snapshots: Path | None,
    events: Path | None,
    days_before: int,
    json_out: Path | None,
    scorecards: tuple[Path, ...] = (),
    partitions: int | None = None,
) -> None:
    """How well the score separated churners from the rest: AUC, red-band precision/recall, lift.

    Scores come from the run's snapshots: the cs.health topic read to its end (default; read it before
    compaction keeps only the latest per account), a --snapshots file, or --events scored offline.
    """
    from pydantic import ValidationError

    from streams.cli.errors import compact
    from streams.sim.evaluate import History, history_from_snapshots, render, score_events
    from streams.sim.evaluate import evaluate as run_evaluation
    from streams.sim.simulate import GroundTruth

    try:
        gt = GroundTruth.model_validate_json(truth.read_bytes())
    except ValidationError as exc:
        raise click.ClickException(f"{truth}: not a ground-truth file: {compact(exc)}") from None
    s = get_settings()
    if snapshots and events:
        raise click.UsageError("give --snapshots or --events, not both")
    if snapshots:
        with snapshots.open("rb") as fh:
            history = history_from_snapshots(fh)
    elif events:
        from rules.engine import DEFAULT_RULES, load_rules
        from streams.broker.producer import read_lines
        from streams.cli.progress import bar
        from streams.core.events import EVENT_ADAPTER
        from streams.core.scoring import load_scoring
        from streams.engine.engine import Engine

        ruleset = load_rules(s.rules or DEFAULT_RULES)
        engine = Engine.configured(s, load_scoring(s.scorecard), ruleset)
        end = int(gt.end.timestamp())
        parts = partitions or s.partitions
        with bar(f"score {events.name}") as progress:
            history = score_events(
                (
                    _validated(EVENT_ADAPTER, obj, f"{events}:{lineno}")
                    for lineno, _, obj in progress_iter(read_lines(events), progress)
                ),
                engine,
                end,
                parts,
            )
        if scorecards:
            from streams.sim.evaluate import red_differences, render_side_by_side

            reports = {"current": run_evaluation(gt, history, days_before)[0]}
            for card in scorecards:
                other = score_events(
                    (EVENT_ADAPTER.validate_python(obj) for _, _, obj in read_lines(events)),
                    Engine.configured(s, load_scoring(card), ruleset),
                    end,
                    parts,
                )
                reports[card.name] = run_evaluation(gt, other, days_before)[0]
                diff = red_differences(history, other)
                click.echo(
                    f"{card.name}: {len(diff['only_new'])} accounts would turn red that do not now, "
                    f"{len(diff['only_old'])} would no longer; {len(diff['earlier'])} earlier, "
                    f"{len(diff['later'])} later"
                )
            click.echo(render_side_by_side(reports))
            return
    elif scorecards:
        raise click.UsageError("--scorecard needs --events (offline scoring)")
    else:
        from streams.broker.tail import read_to_end

        async def from_topic() -> History:
            from streams.cli.progress import bar

            h = History()
            with bar(f"read {s.topic('health')}", unit="snapshots") as progress:
                async for msg in read_to_end(s, s.topic("health")):
                    progress.update()
                    if msg.value is not None:
                        h.add_snapshot(msg.value)
            return h.finish()

        try:
            history = asyncio.run(from_topic())
        except ValueError as exc:
            raise click.ClickException(str(exc)) from None
    report, scored = run_evaluation(gt, history, days_before)
    click.echo(render(report))
    if json_out:
        body = {
            "report": report.model_dump(mode="json"),
            "scored": [x.model_dump(mode="json") for x in scored],
        }
        json_out.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))
        click.echo(f"wrote {json_out}")
    if report.scored == 0:
        raise click.ClickException(
            "no account had a score at its evaluation time: were the snapshots from this run?"
        )


def _validated(adapter, obj, where: str):
    from pydantic import ValidationError

    from streams.cli.errors import compact

    try:
        return adapter.validate_python(obj)
    except ValidationError as exc:
        raise click.ClickException(f"{where}: {compact(exc)}") from None


def progress_iter(items, progress):
    for item in items:
        progress.update()
        yield item


@main.command()
@click.option(
    "--scorecard",
    "card",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The scorecard to try (default: the current one, e.g. to try only --rules).",
)
@click.option(
    "--rules",
    "rules_path",
    type=click.Path(exists=True, path_type=Path),
    help="A rule file or folder to try (default: the current rules).",
)
@click.option(
    "--until",
    default=None,
    help="Let event time run on to this date or RFC 3339 time (default: the last event).",
)
@click.option(
    "--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Write the report here."
)
@click.option("--no-write", is_flag=True, help="Only report: write no snapshots to the shadow topic.")
def shadow(
    card: Path | None, rules_path: Path | None, until: str | None, json_out: Path | None, no_write: bool
) -> None:
    """Re-score the input topics' history with a new scorecard (or rules) without sending alerts.

    The history is read from Kafka to its end and scored twice by the production partition driver,
    offline: with the current HEALTHMON_SCORECARD / HEALTHMON_RULES and with the new ones. The new
    snapshots go to cs.health.shadow (never cs.health, never cs.alerts); the report says, per rule, which
    alert episodes only one of them has, and which accounts end in another band.
    """
    from rules.engine import DEFAULT_RULES, load_rules
    from streams.broker.history import read_input_history
    from streams.core.scoring import load_scoring
    from streams.engine.engine import Engine
    from streams.sim.shadow import ShadowReport, diff, publish, render, rescore

    if card is None and rules_path is None:
        raise click.UsageError("give --scorecard and/or --rules to try")
    s = get_settings()
    current_rules = load_rules(s.rules or DEFAULT_RULES)
    current = Engine.configured(s, load_scoring(s.scorecard), current_rules)
    candidate = Engine.configured(
        s, load_scoring(card or s.scorecard), load_rules(rules_path) if rules_path else current_rules
    )
    until_ms = None if until is None else int(_parse_end(until).timestamp() * 1000)
    try:
        hist = asyncio.run(read_input_history(s))
    except ValueError as exc:  # an input topic does not exist
        raise click.ClickException(str(exc)) from None
    if not hist.events:
        raise click.ClickException(f"the input topics hold no valid events ({hist.read} records read)")
    before = rescore(hist.events, current, until_ms)
    after = rescore(hist.events, candidate, until_ms)
    label = " + ".join(str(p) for p in (card, rules_path) if p is not None)
    topic, written = (None, 0) if no_write else asyncio.run(publish(s, after.snapshots, label))
    rules_diff, bands, red = diff(before, after)
    report = ShadowReport(
        events=len(hist.events),
        invalid=hist.invalid_total,
        snapshots=written,
        shadow_topic=topic,
        rules=rules_diff,
        band_changes=bands,
        red=red,
    )
    click.echo(render(report, label))
    if json_out:
        json_out.write_bytes(orjson.dumps(report.model_dump(mode="json"), option=orjson.OPT_INDENT_2))
        click.echo(f"wrote {json_out}")


@main.command()
@click.argument("events", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--from-kafka",
    is_flag=True,
    help="Read the history from the input topics to their end (the default when no EVENTS file is given).",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Write the calibrated scorecard YAML here (its validation report next to it, .report.json).",
)
@click.option(
    "--base", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Scorecard to start from."
)
@click.option("--test-share", type=click.FloatRange(0, 0.9), default=0.3, show_default=True)
@click.option("--every-days", type=click.IntRange(1), default=7, show_default=True)
@click.option("--horizon-days", type=click.IntRange(1), default=30, show_default=True)
@click.option("--red-precision", type=click.FloatRange(0.05, 1), default=0.6, show_default=True)
@click.option(
    "--propose",
    is_flag=True,
    help="Also say whether to propose the result in place of --base (or the card in force): enough "
    "cancellations (HEALTHMON_CALIBRATION_MIN_CANCELLATIONS), a higher held-out AUC by a margin with "
    "non-overlapping bootstrap intervals, red precision and recall no worse; and how many accounts would "
    "change band (in the report's `proposal`).",
)
@click.option(
    "--publish",
    is_flag=True,
    help="With --propose: when the verdict proposes the card, put it on the card topic (cs.scorecards) "
    "as a proposal to accept in `healthmon serve`; with HEALTHMON_CARD_PROMOTION=auto, accepted at once "
    "from --effective-from (docs/promotion.md). Without --base, the card compared is the one in force "
    "on the card topic.",
)
@click.option(
    "--effective-from",
    type=click.DateTime(formats=["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S"]),
    help="Automatic promotion: the event time the card takes effect (UTC if no offset; default: now).",
)
def calibrate(
    events: Path | None,
    from_kafka: bool,
    out: Path,
    base: Path | None,
    test_share: float,
    every_days: int,
    horizon_days: int,
    red_precision: float,
    propose: bool = False,
    publish: bool = False,
    effective_from: datetime | None = None,
) -> None:
    """Learn measure weights, thresholds and bands from history: a JSONL or .jsonl.gz event file, or
    the input topics read to their end (--from-kafka, or no file given; invalid records left out).

    Observations every --every-days days, labelled "cancels within --horizon-days"; fitted on the
    earlier part of the timeline and validated on the latest --test-share (train vs test AUC). A
    train AUC well above the test AUC is reported as a warning.
    """
    from streams.core.scoring import load_scoring
    from streams.sim.calibrate import calibrate as run_calibration
    from streams.sim.calibrate import to_yaml
    from streams.sim.validation import observe, read_events

    if events is not None and from_kafka:
        raise click.UsageError("give an EVENTS file or --from-kafka, not both")
    if publish and not propose:
        raise click.UsageError("--publish needs --propose (only a proposed card is published)")
    s = get_settings()
    cfg = load_scoring(base or s.scorecard)
    book = None
    if publish:
        from streams.broker.cards import read_book

        try:
            book = asyncio.run(read_book(s, cfg))
        except ValueError as exc:  # no card topic
            raise click.ClickException(f"{exc}: create it with `healthmon topics create`") from None
        if base is None:
            cfg = book.latest()[0]  # the card the candidate must beat is the one in force
    if events is None:
        from streams.broker.history import read_input_history

        try:
            hist = asyncio.run(read_input_history(s))
        except ValueError as exc:  # an input topic does not exist
            raise click.ClickException(str(exc)) from None
        click.echo(
            f"read {hist.read} records from the input topics ({hist.invalid_total} invalid left out)",
            err=True,
        )
        history: Iterable[BaseEvent] = hist.events
    else:
        history = read_events(events)
    try:
        obs = observe(history, cfg, every_days=every_days, horizon_days=horizon_days, peer_features=False)
        proposal = None
        if propose:
            from streams.sim.propose import propose as run_proposal

            config, proposal = run_proposal(
                obs.observations,
                cfg,
                min_cancellations=s.calibration_min_cancellations,
                test_share=test_share,
                red_precision=red_precision,
            )
            report = proposal.calibration
        else:
            config, report = run_calibration(
                obs.observations, cfg, test_share=test_share, red_precision=red_precision
            )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    out.write_text(to_yaml(config, report))
    rep = out.with_name(out.name.removesuffix(".yaml").removesuffix(".yml") + ".report.json")
    body = report.model_dump(mode="json")
    if proposal is not None:
        body["proposal"] = proposal.verdict.model_dump(mode="json")
    rep.write_bytes(orjson.dumps(body, option=orjson.OPT_INDENT_2))

    def f(v: float | None) -> str:
        return "n/a" if v is None else f"{v:.3f}"

    click.echo(
        f"{len(obs.observations)} observations of {obs.accounts} accounts ({obs.cancellations} cancel)\n"
        f"  train AUC {f(report.train_auc)} (default {f(report.default_train_auc)}), "
        f"{report.train_observations} observations\n"
        f"  test  AUC {f(report.test_auc)} (default {f(report.default_test_auc)}), "
        f"{report.test_observations} observations\n"
        f"  {len(report.measures)} measures kept; bands red < {report.red_below}, yellow < {report.yellow_below}\n"
        f"wrote {out} and {rep}"
    )
    if report.overfit_warning:
        click.echo(f"WARNING: {report.overfit_warning}", err=True)
    if report.red_below == 0:
        click.echo(
            f"WARNING: no score threshold reaches {red_precision:.0%} precision on the training data, so the "
            "red band never fires; lower --red-precision or set the bands by hand",
            err=True,
        )
    if proposal is not None:
        v = proposal.verdict
        moves = ", ".join(f"{k} {n}" for k, n in v.band_changes.items()) or "none"
        head = "PROPOSED" if v.propose else "not proposed"
        click.echo(
            f"{head} over {cfg.card_version}: held-out AUC {f(v.candidate.figures.auc)} against "
            f"{f(v.current.figures.auc)} ({proposal.cancellations} cancelling accounts); "
            f"{v.accounts_changing_band} accounts would change band ({moves})"
        )
        for reason in v.reasons:
            click.echo(f"  - {reason}")
        if book is not None and v.propose:
            _publish_proposal(s, book, config, proposal.verdict, effective_from)


def _publish_proposal(
    s: Settings, book: CardBook, config: ScoringConfig, verdict: Verdict, effective_from: datetime | None
) -> None:
    """The proposal on the card topic; accepted at once when HEALTHMON_CARD_PROMOTION=auto."""
    from streams.broker.cards import publish
    from streams.core.cards import CardRefused

    now = datetime.now(UTC)
    record = book.propose(config, verdict, "healthmon calibrate", "the verdict proposes it", now)
    asyncio.run(publish(s, record))
    book.add([record])
    click.echo(f"published proposal {record.version} on {s.topic('scorecards')}")
    if s.card_promotion != "auto":
        click.echo("accept it in `healthmon serve` (POST /api/cards/{version}/accept or the dashboard)")
        return
    when = effective_from or now
    at = int((when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp())
    try:
        accepted = book.accept(
            record.version, at, "healthmon calibrate", "HEALTHMON_CARD_PROMOTION=auto", now
        )
    except CardRefused as exc:
        raise click.ClickException(f"not promoted: {exc}") from None
    asyncio.run(publish(s, accepted, book.change_event(accepted)))
    click.echo(f"promoted {record.version} from event time {at} (HEALTHMON_CARD_PROMOTION=auto)")


@main.command()
@click.argument("events", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--scorecard",
    "scorecards",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also score with this scorecard (repeatable).",
)
@click.option("--every-days", type=click.IntRange(1), default=7, show_default=True)
@click.option("--folds", type=click.IntRange(2), default=5, show_default=True)
def validate(events: Path, scorecards: tuple[Path, ...], every_days: int, folds: int) -> None:
    """Scores vs the peer's regression on the same observation points (docs/validation.md).

    Needs scikit-learn (pip install -e '.[dev]'). Prints a Markdown table: AUC of "cancels within 30 days".
    """
    from streams.core.scoring import load_scoring
    from streams.sim.validation import compare, observe, read_events, render

    default = load_scoring(get_settings().scorecard)
    obs = observe(read_events(events), default, every_days=every_days)
    others = {f"scorecard {p.name}": load_scoring(p) for p in scorecards}
    click.echo(render(compare(obs.observations, default, others, k=folds)))


@main.command()
def sample() -> None:
    """Print the path of the sample event stream shipped with healthmon."""
    click.echo(str(resources.files("streams") / "data" / "sample.jsonl"))


@main.command("mail-preview")
@click.option("--accounts", type=click.IntRange(1), default=100, show_default=True)
@click.option("--days", type=click.IntRange(7), default=60, show_default=True, help="Days of history.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--end", default=None, help="End of the history: a date or RFC 3339 time (default: now).")
@click.option("--to", "person", default=None, help="Whose mail to print (default: the busiest CSM).")
@click.option("--day", default=None, help="Which day (YYYY-MM-DD; default: that person's busiest day).")
def mail_preview(accounts, days, seed, end, person, day) -> None:
    """Each CSM's email, day by day, as delivery would send it over the simulated history.

    The timers run on the replayed time (a live demo replays weeks in minutes, so it cannot show
    this). Uses the rule pack, scorecard and routing in force (HEALTHMON_RULES, HEALTHMON_SCORECARD,
    HEALTHMON_ROUTING). Prints the volume per person and day, then one person's mail of one day.
    """
    from datetime import date as date_

    from alerts.config import load_routing
    from rules.engine import load_rules
    from streams.core.scoring import load_scoring
    from streams.sim.mail import MailPreview, busiest, day_of, replay_history, volume
    from streams.sim.simulate import Simulator

    s = get_settings()
    sim = Simulator(accounts, days, seed, _parse_end(end))
    rules = load_rules(s.rules)
    history = replay_history(sim, load_scoring(s.scorecard), rules)
    mail = MailPreview(load_routing(s.routing), rules, history).run(until=sim.end)
    v = volume(mail, days)
    click.echo(
        f"{v.emails} emails to {v.people} people over {v.days} days: {v.per_person_day:.2f} per person-day; "
        f"on days with mail a median of {v.median_on_mail_days:g}, at most {v.busiest_day}"
    )
    top = busiest(mail, {a.account.csm_email for a in history.alerts if a.account.csm_email})
    if top is None:
        return
    try:
        when = date_.fromisoformat(day) if day else top[1]
    except ValueError:
        raise click.BadParameter(f"{day!r} is not a date (YYYY-MM-DD)", param_hint="--day") from None
    person = person or top[0]
    chosen = day_of(mail, person, when)
    click.echo(f"\n{person} on {when.isoformat()}: {len(chosen)} email(s)")
    for m in chosen:
        click.echo(f"\n--- {m.sent_at:%H:%M} UTC  {m.subject}\n{m.text}")


def run_service(loglevel: str, run: Callable[[], Awaitable[None]], stop: Callable[[], None]) -> None:
    """What every long-running command does around its service: logging, SIGTERM/SIGINT calling
    ``stop`` (the service then finishes what it holds and returns), and the event loop."""
    import logging
    import signal

    logging.basicConfig(level=loglevel.upper(), format="[%(asctime)s] [%(levelname)s] %(name)s: %(message)s")

    async def main_loop() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop)
        await run()

    asyncio.run(main_loop())


@main.command()
@click.option("--loglevel", "-l", default="info")
def deliver(loglevel: str) -> None:
    """Run the alert delivery worker: cs.alerts + task reminders and escalations (cs.task-notices) -> routing
    -> Slack, email, webhooks."""
    from alerts.worker import DeliveryWorker
    from streams.config import ConfigError

    try:
        worker = DeliveryWorker(get_settings())
    except ConfigError as exc:
        raise click.ClickException(f"invalid configuration:\n{exc}") from None
    run_service(loglevel, worker.run, worker._stop.set)


@main.command()
@click.option("--loglevel", "-l", default="info")
@click.option(
    "--rebuild", is_flag=True, help="Delete the read model in Redis and rebuild it from the topics."
)
def readmodel(loglevel: str, rebuild: bool) -> None:
    """Keep the Redis read model (dashboards, portfolio, cs.portfolio) up to date from cs.health."""
    from streams.readmodel.projector import ReadModelWorker

    worker = ReadModelWorker(get_settings(), rebuild=rebuild)
    run_service(loglevel, worker.run, worker.stopping.set)


@main.command()
@click.option("--loglevel", "-l", default="info")
def serve(loglevel: str) -> None:
    """The HTTP API and the dashboard page (HEALTHMON_SERVE_HOST/PORT, HEALTHMON_API_TOKEN)."""
    from streams.web.server import serve as run_server

    stopping = asyncio.Event()
    try:
        run_service(loglevel, lambda: run_server(get_settings(), stopping), stopping.set)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.option("--loglevel", "-l", default="info")
def ingest(loglevel: str) -> None:
    """Segment-style calls and Stripe/Zendesk/webhook events in, contract-v1 events on the input topics
    (HEALTHMON_INGEST_HOST/PORT; mappings in HEALTHMON_INGEST_CONFIG; secrets HEALTHMON_INGEST_*)."""
    from streams.ingest.service import IngestSetupError
    from streams.ingest.service import serve as run_ingest

    stopping = asyncio.Event()
    try:
        run_service(loglevel, lambda: run_ingest(get_settings(), stopping), stopping.set)
    except IngestSetupError as exc:
        raise click.ClickException(str(exc)) from None


@main.group("import")
def import_() -> None:
    """Bring in what a team already has: its accounts (a CRM export) and its history, through the
    ingest path (the same mappings, Kafka acknowledging every event)."""


def _import_run(send) -> int:
    """Run an import coroutine; Kafka or file problems become one-line errors."""
    from streams.ingest.imports import ImportFailed
    from streams.ingest.sink import BrokerUnavailable

    try:
        return asyncio.run(send())
    except ImportFailed as exc:
        raise click.ClickException(str(exc)) from None
    except BrokerUnavailable as exc:
        raise click.ClickException(
            f"{exc}; nothing after the last acknowledged chunk was sent. Run the import again: events "
            "already sent carry the same event_id, and the worker drops repeats within its de-duplication window"
        ) from None


async def _send_events(events, total: int, desc: str) -> int:
    from streams.cli.progress import bar
    from streams.ingest.imports import send_all
    from streams.ingest.sink import Sink

    sink = Sink(get_settings())
    await sink.start()
    try:
        with bar(desc, total=total) as progress:
            return await send_all(sink, events, progress.update)
    finally:
        await sink.stop()


@import_.command("accounts")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--column",
    "columns",
    multiple=True,
    metavar="FIELD=COLUMN",
    help="The CSV column of an account field (default: the field's own name). Fields: account_id, name, "
    "segment, csm_name, csm_email, slack_channel, signed_up_at, renewal_date, executive_sponsor.",
)
@click.option(
    "--segment-value",
    "segment_values",
    multiple=True,
    metavar="VALUE=SEGMENT",
    help="A CRM value of the segment column -> smb, mid_market or enterprise (e.g. 'Strategic=enterprise').",
)
@click.option("--as-of", default=None, help="When the profiles were current: RFC 3339 (default: now).")
@click.option("--skip-invalid", is_flag=True, help="Send the valid rows and count the invalid ones.")
def import_accounts(file: Path, columns, segment_values, as_of: str | None, skip_invalid: bool) -> None:
    """Accounts from a CRM export (CSV with a header row) as account events on cs.accounts."""
    from streams.ingest.imports import ImportFailed, Report, account_rows, parse_pairs
    from streams.ingest.source import parse_time

    when = datetime.now(UTC) if as_of is None else parse_time(as_of)
    if when is None:
        raise click.ClickException(f"--as-of {as_of!r} is not an RFC 3339 time")
    try:
        cols = parse_pairs(columns, "--column")
        values = parse_pairs(segment_values, "--segment-value")
        report = Report()
        for _ in account_rows(file, cols, values, when, report):
            pass
        report.refuse_if_invalid(file, skip_invalid)
    except ImportFailed as exc:
        raise click.ClickException(str(exc)) from None

    async def send() -> int:
        return await _send_events(account_rows(file, cols, values, when, Report()), report.events, "accounts")

    sent = _import_run(send)
    click.echo(
        f"{sent} account(s) sent to cs.accounts"
        + (f", {report.invalid} invalid row(s) skipped" if report.invalid else "")
    )


@import_.command("events")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--format",
    "fmt",
    default="auto",
    show_default=True,
    help="auto, contract, segment, stripe, zendesk or webhook:NAME (a generic webhook of the ingest config).",
)
@click.option("--skip-invalid", is_flag=True, help="Send the valid lines and count the invalid ones.")
def import_events(file: Path, fmt: str, skip_invalid: bool) -> None:
    """History from JSON lines: Segment messages or batches, Stripe events, Zendesk payloads, a generic
    webhook's payloads, or contract events; mapped by HEALTHMON_INGEST_CONFIG like the live service."""
    from streams.config import ConfigError
    from streams.ingest.config import load_config
    from streams.ingest.imports import ImportFailed, LineParser, Report, event_lines

    try:
        parser = LineParser(load_config(get_settings().ingest_config), fmt)
        report = Report()
        now = time.time()  # the time of a message that has none (Segment's receivedAt)
        for _ in event_lines(file, parser, now, report):
            pass
        report.refuse_if_invalid(file, skip_invalid)
    except (ImportFailed, ConfigError) as exc:
        raise click.ClickException(str(exc)) from None

    async def send() -> int:
        return await _send_events(event_lines(file, parser, now, Report()), report.events, "events")

    sent = _import_run(send)
    extra = [f"{report.ignored} message(s) the mapping ignores"] if report.ignored else []
    extra += [f"{report.invalid} invalid skipped"] if report.invalid else []
    click.echo(f"{sent} event(s) sent" + (f" ({', '.join(extra)})" if extra else ""))


@main.group()
def silence() -> None:
    """Snooze alerts for an account, a rule or a CSM: they are recorded, not sent."""


def _with_store(action):
    """Run ``action(store)`` against the delivery store in Redis and close the connection."""
    from redis.asyncio import Redis

    from alerts.store import DeliveryStore

    async def go():
        s = get_settings()
        store = DeliveryStore(Redis.from_url(s.redis_url), s.redis_prefix)
        try:
            return await action(store)
        finally:
            await store.redis.aclose()

    return asyncio.run(go())


@silence.command("add")
@click.option("--account", default=None, help="The account id (as in cs.accounts).")
@click.option("--rule", default=None, help="A rule id of the loaded rule pack.")
@click.option("--csm", default=None, help="The CSM's email.")
@click.option("--for", "duration", required=True, help="How long, e.g. 2d, 12h.")
@click.option("--by", "created_by", default="", help="Who snoozes.")
@click.option("--comment", default="")
@click.option("--force", is_flag=True, help="Accept an account id the read model does not know (yet).")
def silence_add(account, rule, csm, duration, created_by, comment, force) -> None:
    """Snooze matching alerts; when the silence ends and they still fire, they are notified."""
    import time

    from alerts.config import EMAIL_RE
    from alerts.store import Silence
    from rules.engine import load_rules
    from rules.model import parse_duration
    from streams.config import ConfigError

    matchers = {k: v for k, v in {"account": account, "rule": rule, "csm": csm}.items() if v}
    if not matchers:
        raise click.ClickException("give at least one of --account, --rule, --csm")
    try:
        seconds = parse_duration(duration)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if seconds <= 0:
        raise click.ClickException("--for must be longer than 0")
    if csm is not None and not EMAIL_RE.match(csm):
        raise click.ClickException(f"--csm {csm!r} is not an email address")
    if rule is not None:
        try:
            known = sorted(load_rules(get_settings().rules).ids)
        except ConfigError as exc:
            raise click.ClickException(f"cannot check --rule: {exc}") from None
        if rule not in known:
            raise click.ClickException(f"--rule {rule!r} is not a rule; known rules: {', '.join(known)}")
    silence = Silence(
        matchers=matchers, ends_at=time.time() + seconds, created_by=created_by, comment=comment
    )

    async def add(st):
        if account is not None and not force and not await st.redis.exists(f"{st.p}account:{account}"):
            raise click.ClickException(
                f"--account {account!r} is not a known account id (give the id, not the name; "
                "--force accepts it anyway)"
            )
        return await st.add_silence(silence)

    added = _with_store(add)
    click.echo(f"silence {added.id}: {_matchers(matchers)} until {_when(added.ends_at)} ({duration})")


def _when(ts: float) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _matchers(m: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in m.items())


@silence.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object a line (epoch times).")
def silence_list(as_json: bool) -> None:
    import time

    from rules.model import format_duration

    now = time.time()
    for sil in _with_store(lambda st: st.silences()):
        if as_json:
            click.echo(orjson.dumps(sil.model_dump()).decode())
            continue
        left = format_duration(max(0, int(sil.ends_at - now)) // 60 * 60) or "0"
        by = f" by {sil.created_by}" if sil.created_by else ""
        note = f": {sil.comment}" if sil.comment else ""
        click.echo(f"{sil.id}  {_matchers(sil.matchers)}  until {_when(sil.ends_at)} ({left} left){by}{note}")


@silence.command("remove")
@click.argument("silence_id")
def silence_remove(silence_id: str) -> None:
    if not _with_store(lambda st: st.remove_silence(silence_id)):
        raise click.ClickException(f"no silence {silence_id}")
    click.echo(f"removed {silence_id}")


@main.group()
def rules() -> None:
    """Trigger rules: lint and unit-test rule files."""


@rules.command("check")
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
def rules_check(paths: tuple[Path, ...], strict: bool) -> None:
    """Lint rule files or folders (default: the shipped pack): syntax, fields, ids, unreachable rules."""
    from rules.engine import DEFAULT_RULES
    from rules.lint import check

    sets, warnings, errors = check(list(paths) or [DEFAULT_RULES])
    for e in errors:
        for line in e.splitlines():
            click.echo(f"error: {line}", err=True)
    for w in warnings:
        click.echo(f"warning: {w}", err=True)
    n_rules = sum(len(s.rules) for s in sets)
    if errors:
        summary = f"{len(errors)} error(s); {n_rules} rules loaded from {len(sets)} file(s)"
    else:
        summary = f"{n_rules} rules OK in {len(sets)} file(s)"
    if warnings:
        summary += f", {len(warnings)} warnings"
    click.echo(summary)
    if errors or (strict and warnings):
        sys.exit(1)


@rules.command("test")
@click.argument(
    "files", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
def rules_test(files: tuple[Path, ...]) -> None:
    """Run promtool-style rule test files (see rules/tests/)."""
    from streams.config import ConfigError
    from streams.sim.rule_tests import run_file

    failed = passed = 0
    for f in files:
        try:
            results = run_file(f)
        except ConfigError as exc:
            raise click.ClickException(str(exc)) from None
        for r in results:
            if r.passed:
                passed += 1
                click.echo(f"PASS {f}: {r.name}")
            else:
                failed += 1
                click.echo(f"FAIL {f}: {r.name}")
                for p in r.problems:
                    click.echo(f"     {p}")
                click.echo(f"     alerts seen: {r.alerts}")
    click.echo(f"rules: {passed} passed, {failed} failed")
    if failed:
        sys.exit(1)


@main.group()
def scorecard() -> None:
    """The health scorecard (metrics, weights, thresholds, segments)."""


@scorecard.command("check")
@click.argument("file", required=False, type=click.Path(exists=True, dir_okay=False, path_type=Path))
def scorecard_check(file: Path | None) -> None:
    """Validate a scorecard YAML (default: HEALTHMON_SCORECARD, else the shipped one), naming file,
    line and field of every problem, as the worker would at start-up."""
    from streams.core.scoring import DEFAULT_SCORECARD, load_scoring

    path = file or get_settings().scorecard or DEFAULT_SCORECARD
    cfg = load_scoring(path)  # a ConfigError becomes "invalid configuration: file:line: field: ..."
    cards: dict[str, Any] = {"default": cfg.default}
    cards.update({str(name): card for name, card in cfg.segments.items()})
    for name, card in cards.items():
        click.echo(f"  {name}: components {', '.join(card.components)}")
    click.echo(f"{path}: OK ({len(cards)} scorecard(s))")


@main.command()
@click.argument(
    "kind", type=click.Choice(["events", "health", "health-changes", "alerts", "portfolio"]), default="events"
)
@click.option("--write", is_flag=True, help="Write all schemas into streams/schema/ (for maintainers).")
def schema(kind: str, write: bool) -> None:
    """Print the JSON Schema of the input contract (events) or of an output topic."""
    from streams.schema import all_schemas, schema_path

    schemas = all_schemas()
    if write:
        for name, body in schemas.items():
            schema_path(name).write_bytes(
                orjson.dumps(body, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS) + b"\n"
            )
            click.echo(f"wrote {schema_path(name)}")
        return
    sys.stdout.buffer.write(orjson.dumps(schemas[kind], option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    sys.stdout.write("\n")


main.add_command(tasks_commands.tasks)  # healthmon tasks [outcomes] (streams/cli/tasks.py)

if __name__ == "__main__":
    main()
