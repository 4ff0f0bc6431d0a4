"""``healthmon tasks``: a CSM's playbook tasks, and ``healthmon tasks outcomes``, the outcomes table, both
read from the Redis read model (what ``healthmon serve`` shows)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, TypeVar

import click

if TYPE_CHECKING:  # imported where used: every `healthmon` command loads this module
    from redis.asyncio import Redis

    from streams.tasks.model import Task
    from streams.tasks.outcomes import OutcomeRow, OutcomeTable

T = TypeVar("T")
#: streams.tasks.model.TaskState's values (tests/unit/test_cli_checks.py holds them equal).
STATES = ("open", "acknowledged", "done", "dismissed", "cancelled", "superseded")


def _with_redis(fn: Callable[[Redis, str], Awaitable[T]]) -> T:
    from redis.asyncio import Redis

    from streams.settings import get_settings

    s = get_settings()

    async def run() -> T:
        redis = Redis.from_url(s.redis_url)
        try:
            return await fn(redis, s.redis_prefix)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def _n(v: float | None, unit: str = "") -> str:
    return "-" if v is None else f"{v:g}{unit}"


def format_tasks(tasks: list[Task], now: datetime) -> str:
    if not tasks:
        return "no tasks"
    lines = [f"{'due (UTC)':<17} {'state':<12} {'account':<28} {'playbook':<20} step"]
    for t in tasks:
        late = " OVERDUE" if t.state == "open" and t.due_at <= now else ""
        lines.append(
            f"{t.due_at.astimezone(UTC):%Y-%m-%d %H:%M} {t.state:<12} {(t.account_name or t.account_id)[:28]:<28} "
            f"{t.rule_id[:20]:<20} {t.step}{late}  [{t.task_id}]"
        )
    return "\n".join(lines)


def _row(r: OutcomeRow) -> str:
    a, b = r.acted, r.baseline
    return (
        f"{r.group[:30]:<30} {r.opened:>6} {r.open:>5} {r.overdue:>7} {_n(r.on_time_pct, '%'):>8} "
        f"{_n(r.median_ack_hours, 'h'):>8} {r.done:>5} {r.never_acted:>7} "
        f"{r.dismissed:>9} {r.cancelled:>9} {r.superseded:>10} "
        f"{_n(a.save_rate, '%'):>7} ({a.saved}/{a.red_at_open}) {_n(b.save_rate, '%'):>7} ({b.saved}/{b.red_at_open})"
    )


def format_outcomes(table: OutcomeTable) -> str:
    head = (
        f"{table.by:<30} {'opened':>6} {'open':>5} {'overdue':>7} {'on time':>8} {'ack med':>8} {'done':>5} "
        f"{'ignored':>7} {'dismissed':>9} {'cancelled':>9} {'superseded':>10} {'save rate done':>15} {'save rate ignored':>17}"
    )
    span = f"opened {table.since} to {table.until}" if table.since else "all tasks"
    lines = [f"Playbook outcomes as of {table.now:%Y-%m-%d %H:%M} UTC, {span}", head]
    lines += [_row(r) for r in table.rows]
    lines.append(_row(table.total))
    lines.append(
        "ignored: never acted on (the deadline passed, nobody acknowledged). cancelled: closed by the "
        "account's cancellation; superseded: by a more urgent playbook. save rate: red when opened, "
        "out of red within 30 days and not cancelled (saved/counted); docs/tasks.md"
    )
    return "\n".join(lines)


@click.group("tasks", invoke_without_command=True)
@click.option("--owner", help="A CSM's email (or role:manager): their open and acknowledged tasks.")
@click.option("--state", type=click.Choice(STATES), help="Tasks in this state (default: open).")
@click.option("--limit", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON task per line.")
@click.pass_context
def tasks(ctx: click.Context, owner: str | None, state: str | None, limit: int, as_json: bool) -> None:
    """Playbook tasks by due time; `healthmon tasks outcomes` prints the outcomes table."""
    if ctx.invoked_subcommand is not None:
        return
    from streams.readmodel.tasks import list_tasks

    found = _with_redis(lambda r, p: list_tasks(r, p, owner=owner, state=state, limit=limit))
    if as_json:
        for t in found:
            click.echo(t.model_dump_json())
        return
    click.echo(format_tasks(found, datetime.now(UTC)))


@tasks.command("outcomes")
@click.option("--by", type=click.Choice(["playbook", "csm"]), default="playbook", show_default=True)
@click.option("--period", help="Tasks opened in YYYY-MM, YYYY-Qn, YYYY or T12-YYYY-MM (default: all).")
@click.option("--json", "as_json", is_flag=True)
def outcomes(by: str, period: str | None, as_json: bool) -> None:
    """Per playbook or CSM: tasks opened, on time %, time to acknowledge, save rate against the baseline."""
    from pydantic import ValidationError

    from streams.readmodel.outcomes import read_outcomes
    from streams.web.outcomes_api import OutcomesQuery, period_days

    try:
        q = OutcomesQuery(by=by, period=period)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise click.BadParameter(exc.errors()[0]["msg"], param_hint="--period") from exc
    since, until = period_days(q.period)
    table = _with_redis(lambda r, p: read_outcomes(r, p, q.by, since, until, datetime.now(UTC)))
    click.echo(table.model_dump_json(indent=2) if as_json else format_outcomes(table))


@tasks.command("outcomes-preview")
@click.option("--accounts", type=click.IntRange(1), default=100, show_default=True)
@click.option("--days", type=click.IntRange(7), default=60, show_default=True, help="Days of history.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--end", default=None, help="End of the history: a date or RFC 3339 time (default: now).")
@click.option(
    "--acting",
    type=click.FloatRange(0, 1),
    default=0.5,
    show_default=True,
    help="Share of tasks the simulated CSMs act on (acknowledge, then done); the rest is the baseline.",
)
@click.option("--by", type=click.Choice(["playbook", "csm"]), default="playbook", show_default=True)
def outcomes_preview(accounts: int, days: int, seed: int, end: str | None, acting: float, by: str) -> None:
    """The outcomes table over the simulated history, offline: its alerts through the task machine on
    replayed time, a seeded share of tasks acted on. Simulated accounts do not respond to a call, so the
    save rates of tasks done and never acted on differ by chance only (streams/sim/task_outcomes.py)."""
    from rules.engine import load_rules
    from streams.cli.main import _parse_end
    from streams.core.scoring import load_scoring
    from streams.settings import get_settings
    from streams.sim.mail import replay_history
    from streams.sim.simulate import Simulator
    from streams.sim.task_outcomes import account_days, replay_tasks
    from streams.tasks.outcomes import outcome_table

    s = get_settings()
    sim = Simulator(accounts, days, seed, _parse_end(end))
    history = replay_history(sim, load_scoring(s.scorecard), load_rules(s.rules))
    until = datetime.fromtimestamp(sim.end, UTC)
    found = replay_tasks(
        history.alerts, until, acting, seed, frozenset(s.tasks_cancel_rules), s.tasks_time_zone
    )
    table = outcome_table(found, account_days(history.snapshots), until, by=by)  # type: ignore[arg-type]
    click.echo(f"{accounts} accounts, {days} days (seed {seed}), {acting:.0%} of tasks acted on")
    click.echo(format_outcomes(table))
