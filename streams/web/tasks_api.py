"""Playbook tasks on ``healthmon serve``: the task lists (from the Redis read model) and people's
actions on them, from the API, from one-click links in mail and from Slack's buttons.

An action is checked against the task as the read model has it (an unknown task: 404; a transition
the state machine refuses: 409; nothing is produced then), then produced to ``cs.task-actions``
(acks from all replicas) for ``healthmon tasks-worker`` to apply; the answer is 202 with the task as it
will be. Each action says who did it: the API's callers give ``by`` (the token is shared), a link
carries its addressee, a Slack button its user.

- links: ``/t/<token>``, the token an itsdangerous ``URLSafeTimedSerializer`` signature (HMAC, expiring
  after ``HEALTHMON_TASK_LINK_MAX_AGE_S``). GET shows a confirmation page (mail scanners follow links;
  only the button's POST acts). An expired, altered or already used link is refused with a page that
  says why; the action id is derived from the token, so a link applied twice counts once.
- Slack: ``POST /slack/interactions``, verified with slack-sdk's ``SignatureVerifier`` (the signing
  secret, a timestamp within 5 minutes), answered well within Slack's 3 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from itsdangerous import BadSignature, SignatureExpired
from jinja2 import Environment
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from redis.asyncio import Redis
from slack_sdk.signature import SignatureVerifier

from alerts.links import LinkVerb, TaskLinks, serializer
from alerts.links import slack_buttons as _slack_buttons
from rules.model import parse_duration
from streams.broker import clients as kafka_clients
from streams.readmodel.tasks import get_task, list_tasks
from streams.settings import Settings
from streams.tasks.machine import TaskError, apply
from streams.tasks.model import HumanVerb, Outcome, Task, TaskAction, TaskState, Who

log = logging.getLogger("healthmon.serve.tasks")
#: Paths that carry their own proof instead of the bearer token (a signed link, Slack's signature).
OPEN_PREFIXES = ("/t/", "/slack/")
SEND_TIMEOUT_S = 2.0  # a produce that takes longer is reported as not recorded
SLACK_BUDGET_S = 2.5  # Slack wants an answer within 3 s
VERBS: tuple[HumanVerb, ...] = ("acknowledge", "complete", "dismiss", "snooze", "reassign")


class TaskProducer:
    """The producer of ``cs.task-actions``, started on first use (the rest of the API needs no Kafka)."""

    def __init__(self, s: Settings) -> None:
        self.s = s
        self.producer: AIOKafkaProducer | None = None
        self.lock = asyncio.Lock()

    async def start(self) -> AIOKafkaProducer:
        async with self.lock:
            if self.producer is None:
                fresh = kafka_clients.producer(
                    self.s, acks="all", enable_idempotence=True, client_id=f"{self.s.app_id}-serve-tasks"
                )
                self.producer = await asyncio.wait_for(kafka_clients.started(fresh), 10)
            return self.producer

    async def warm(self) -> None:
        """Connect at start, so that the first click is quick; a broker away now is tried again later."""
        try:
            await self.start()
        except Exception as exc:
            log.info("task actions: Kafka not reachable yet (%r); trying again on the first action", exc)

    async def send(self, action: TaskAction) -> None:
        producer = await self.start()
        await asyncio.wait_for(
            producer.send_and_wait(
                self.s.topic("task_actions"),
                key=action.account_id.encode(),
                value=action.model_dump_json().encode(),
            ),
            SEND_TIMEOUT_S,
        )

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()


PRODUCER = web.AppKey("task_producer", TaskProducer)


def _app_parts(request: web.Request) -> tuple[Settings, Redis]:
    from streams.web.server import REDIS, SETTINGS

    return request.app[SETTINGS], request.app[REDIS]


def _error(status: int, message: str) -> web.Response:
    from streams.web.server import error

    return error(status, message)


def _json(body: Any, status: int = 200) -> web.Response:
    from streams.web.server import json_response

    return json_response(body, status)


# --- the API ------------------------------------------------------------------------------------


class TaskQuery(BaseModel):
    """``owner``: a person (their email) or ``role:manager``: their open and acknowledged tasks."""

    owner: str | None = Field(default=None, max_length=254)
    state: TaskState | None = None
    due_before: AwareDatetime | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class ActionRequest(BaseModel):
    """An action on a task. ``by`` is who does it; ``action_id`` (optional) makes a retry count once."""

    model_config = ConfigDict(extra="forbid")

    by: Who
    action_id: str | None = Field(default=None, min_length=8, max_length=100)
    outcome: Outcome | None = None
    note: str | None = Field(default=None, max_length=1000)
    reason: str | None = Field(default=None, min_length=1, max_length=500)
    until: AwareDatetime | None = None
    #: snooze: instead of ``until``, a duration from now ("4h", "2d")
    snooze_for: str | int | None = None
    owner: Who | None = None


async def _submit(request: web.Request, task: Task, action: TaskAction) -> tuple[Task | None, str | None]:
    """Check the action against the task, then produce it; (the task as it will be, None) or
    (None, why it was refused)."""
    try:
        after, _ = apply(task, action, action.at)
    except TaskError as exc:
        return None, str(exc)
    await request.app[PRODUCER].send(action)
    return after, None


async def tasks_list(request: web.Request) -> web.Response:
    s, redis = _app_parts(request)
    q = TaskQuery.model_validate(dict(request.query))
    due = q.due_before.timestamp() if q.due_before is not None else None
    items = await list_tasks(
        redis, s.redis_prefix, owner=q.owner, state=q.state, due_before=due, limit=q.limit
    )
    return _json({"items": [t.model_dump(mode="json") for t in items]})


async def task_get(request: web.Request) -> web.Response:
    s, redis = _app_parts(request)
    task = await get_task(redis, s.redis_prefix, request.match_info["task_id"])
    if task is None:
        return _error(404, f"no task {request.match_info['task_id']!r}")
    return _json(task.model_dump(mode="json"))


async def task_act(request: web.Request) -> web.Response:
    s, redis = _app_parts(request)
    verb = request.match_info["verb"]
    if verb not in VERBS:
        return _error(404, f"no action {verb!r}: one of {', '.join(VERBS)}")
    try:
        body = orjson.loads(await request.read() or b"{}")
    except orjson.JSONDecodeError as exc:
        return _error(400, f"the body is not JSON: {exc}")
    req = ActionRequest.model_validate(body)
    task = await get_task(redis, s.redis_prefix, request.match_info["task_id"])
    if task is None:
        return _error(404, f"no task {request.match_info['task_id']!r}")
    now = datetime.now(UTC)
    until = req.until
    if verb == "snooze" and until is None and req.snooze_for is not None:
        try:
            until = now + timedelta(seconds=parse_duration(req.snooze_for))
        except ValueError as exc:
            return _error(400, str(exc))
    action = TaskAction(
        action_id=req.action_id or f"api:{uuid.uuid4().hex}",
        account_id=task.account_id,
        task_id=task.task_id,
        action=verb,  # type: ignore[arg-type]
        by=req.by,
        at=now,
        outcome=req.outcome,
        note=req.note,
        reason=req.reason,
        until=until,
        owner=req.owner,
        via="api",
    )
    try:
        after, refused = await _submit(request, task, action)
    except Exception as exc:  # Kafka unreachable or too slow: nothing was recorded
        log.warning("task action not recorded: %r", exc)
        return _error(503, "the action could not be recorded (Kafka unavailable); nothing changed")
    if refused is not None:
        return _error(409, refused)
    assert after is not None
    return _json({"action_id": action.action_id, "task": after.model_dump(mode="json")}, 202)


# --- one-click links ---------------------------------------------------------------------------


def sign_link(s: Settings, task: Task, verb: LinkVerb, by: str, outcome: Outcome | None = None) -> str:
    """The one-click URL for ``by`` (the addressee) to acknowledge or complete ``task``: the links
    delivery puts in mail (alerts/links.py), here also without a public URL (a path)."""
    ser = serializer(s)
    if ser is None:
        raise ValueError("HEALTHMON_TASK_LINK_SECRET is not set: task links are off")
    return TaskLinks((s.public_url or "").rstrip("/"), ser).sign(
        task.task_id, task.account_id, verb, by, outcome
    )


PAGES = Environment(autoescape=True)
PAGE = PAGES.from_string(
    """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>healthmon: {{ title }}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:40em;margin:3em auto;padding:0 1em">
<h1>{{ title }}</h1><p>{{ message }}</p>
{% if task %}<p><b>{{ task.account_name or task.account_id }}</b>: {{ task.step }}<br>
due {{ task.due_at.strftime("%Y-%m-%d %H:%M UTC") }}, {{ task.state }}</p>{% endif %}
{% if confirm %}<form method="post"><button type="submit">{{ confirm }}</button></form>{% endif %}
</body></html>"""
)


def _page(
    status: int, title: str, message: str, task: Task | None = None, confirm: str | None = None
) -> web.Response:
    body = PAGE.render(title=title, message=message, task=task, confirm=confirm)
    return web.Response(
        text=body,
        status=status,
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


def _token_key(s: Settings, token: str) -> tuple[str, str]:
    digest = hashlib.sha256(token.encode()).hexdigest()[:32]
    return f"{s.redis_prefix}tasklink:used:{digest}", f"link:{digest}"


async def _link(request: web.Request) -> tuple[dict, Task] | web.Response:
    """The link's payload and task, or the page that refuses it."""
    s, redis = _app_parts(request)
    ser = serializer(s)
    if ser is None:
        return _page(404, "Links are off", "This healthmon does not accept task links.")
    token = request.match_info["token"]
    try:
        payload = ser.loads(token, max_age=int(s.task_link_max_age_s))
    except SignatureExpired as exc:
        when = exc.date_signed.strftime("%Y-%m-%d %H:%M UTC") if exc.date_signed else "long ago"
        return _page(
            410,
            "This link has expired",
            f"It was sent {when} and was valid for {_days(s)}; open the task in healthmon instead.",
        )
    except BadSignature:
        return _page(
            400,
            "This link is not valid",
            "It was altered or does not come from this healthmon; nothing was changed.",
        )
    used_key, _ = _token_key(s, token)
    used = await redis.get(used_key)
    task = await get_task(redis, s.redis_prefix, str(payload.get("t")))
    if used is not None:
        return _page(
            409,
            "This link was already used",
            f"It was used at {used.decode()}; a link works once. Nothing more was changed.",
            task,
        )
    if task is None:
        return _page(
            404, "No such task", "The task this link is for is not known (yet); nothing was changed."
        )
    return payload, task


def _days(s: Settings) -> str:
    days = s.task_link_max_age_s / 86400
    return f"{days:g} days" if days >= 1 else f"{s.task_link_max_age_s:g} s"


async def link_get(request: web.Request) -> web.Response:
    found = await _link(request)
    if isinstance(found, web.Response):
        return found
    payload, task = found
    verb = payload["v"]
    label = "Acknowledge" if verb == "acknowledge" else f"Mark done ({payload.get('o')})"
    return _page(200, f"{label}?", f"For {payload['by']}.", task, confirm=label)


async def link_post(request: web.Request) -> web.Response:
    s, redis = _app_parts(request)
    found = await _link(request)
    if isinstance(found, web.Response):
        return found
    payload, task = found
    used_key, action_id = _token_key(s, request.match_info["token"])
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    if not await redis.set(used_key, stamp, nx=True, ex=int(s.task_link_max_age_s) + 86400):
        return _page(409, "This link was already used", "A link works once. Nothing more was changed.", task)
    action = TaskAction(
        action_id=action_id,
        account_id=task.account_id,
        task_id=task.task_id,
        action=payload["v"],
        by=payload["by"],
        at=datetime.now(UTC),
        outcome=payload.get("o"),
        via="link",
    )
    try:
        after, refused = await _submit(request, task, action)
    except Exception as exc:
        await redis.delete(used_key)
        log.warning("task link action not recorded: %r", exc)
        return _page(
            503,
            "Not recorded",
            "healthmon could not record this just now; the link still works, try again.",
            task,
        )
    if refused is not None:
        await redis.delete(used_key)
        return _page(409, "Nothing to do", f"{refused}. Nothing was changed.", task)
    done = "acknowledged" if payload["v"] == "acknowledge" else "marked done"
    return _page(200, f"Task {done}", f"Recorded for {payload['by']}. Thank you.", after)


# --- Slack --------------------------------------------------------------------------------------

#: Button action ids of the task buttons on Slack messages, and what each does.
SLACK_ACTIONS: dict[str, tuple[HumanVerb, Outcome | None]] = {
    "task_acknowledge": ("acknowledge", None),
    "task_done_reached": ("complete", "reached"),
    "task_done_no_answer": ("complete", "no_answer"),
}


def slack_buttons(task: Task) -> dict:
    """The Block Kit ``actions`` block for a task (each button's value is the task id)."""
    return _slack_buttons(task.task_id)


def _slack_reply(text: str) -> web.Response:
    return _json({"response_type": "ephemeral", "replace_original": False, "text": text})


async def slack_interactions(request: web.Request) -> web.Response:
    s, redis = _app_parts(request)
    if s.slack_signing_secret is None:
        return _error(404, "Slack interactivity is off (HEALTHMON_SLACK_SIGNING_SECRET is not set)")
    body = await request.read()
    verifier = SignatureVerifier(s.slack_signing_secret.get_secret_value())
    timestamp = request.headers.get("X-Slack-Request-Timestamp", "")
    signature = request.headers.get("X-Slack-Signature", "")
    if not (timestamp.isdigit() and signature and verifier.is_valid(body, timestamp, signature)):
        return _error(401, "the request is not signed by Slack, or its timestamp is more than 5 minutes off")
    try:
        payload = orjson.loads(parse_qs(body.decode())["payload"][0])
    except (KeyError, IndexError, UnicodeDecodeError, orjson.JSONDecodeError):
        return _error(400, "no interaction payload")
    user = payload.get("user") or {}
    by = f"slack:{user.get('username') or user.get('name') or user.get('id') or 'unknown'}"
    replies = []
    for act in payload.get("actions") or []:
        what = SLACK_ACTIONS.get(str(act.get("action_id")))
        if what is None:
            continue
        verb, outcome = what
        task = await get_task(redis, s.redis_prefix, str(act.get("value")))
        if task is None:
            replies.append("That task is not known (yet); nothing was changed.")
            continue
        seed = f"{user.get('id')}\x00{act.get('action_ts')}\x00{act.get('action_id')}\x00{task.task_id}"
        action = TaskAction(
            action_id=f"slack:{hashlib.sha256(seed.encode()).hexdigest()[:32]}",
            account_id=task.account_id,
            task_id=task.task_id,
            action=verb,
            by=by,
            at=datetime.now(UTC),
            outcome=outcome,
            via="slack",
        )
        started = time.monotonic()
        try:  # Slack shows an error after 3 s without an answer
            after, refused = await asyncio.wait_for(_submit(request, task, action), SLACK_BUDGET_S)
        except Exception as exc:
            log.warning("slack task action not recorded after %.1f s: %r", time.monotonic() - started, exc)
            replies.append("healthmon could not record this just now; nothing was changed. Try again.")
            continue
        if refused is not None:
            replies.append(f"{refused}; nothing was changed.")
        else:
            assert after is not None
            replies.append(f"{task.account_name or task.account_id}: {after.state} by {by}.")
    if not replies:
        return _slack_reply("Nothing to do.")
    return _slack_reply(" ".join(replies))


# --- wiring ------------------------------------------------------------------------------------


def register(app: web.Application, settings: Settings) -> None:
    """Routes and the producer's lifecycle on the ``healthmon serve`` app."""
    app[PRODUCER] = TaskProducer(settings)

    async def lifecycle(app: web.Application):
        warming = asyncio.create_task(app[PRODUCER].warm())
        yield
        warming.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warming
        await app[PRODUCER].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/api/tasks", tasks_list)
    app.router.add_get("/api/tasks/{task_id}", task_get)
    app.router.add_post("/api/tasks/{task_id}/{verb}", task_act)
    app.router.add_get("/t/{token}", link_get)
    app.router.add_post("/t/{token}", link_post)
    app.router.add_post("/slack/interactions", slack_interactions)


#: What a one-click link answers, whether it is opened (GET) or acted on (POST).
LINK_RESPONSES = {
    "200": {"description": "text/html"},
    "400": {"description": "altered"},
    "409": {"description": "used"},
    "410": {"description": "expired"},
}


def openapi_paths(ok: Any, json_body: Any) -> tuple[dict, dict]:
    """(paths, component schemas) for the OpenAPI document."""
    comps: dict[str, Any] = {}
    for model in (Task, ActionRequest):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(schema.pop("$defs", {}))
        comps[model.__name__] = schema
    task_param = {"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}
    q = TaskQuery.model_json_schema()["properties"]
    params = [{"name": n, "in": "query", "required": False, "schema": p} for n, p in q.items()]
    paths = {
        "/api/tasks": {
            "get": {
                "summary": "Tasks by due time: an owner's open ones (owner=<email> or role:manager), or by state",
                "parameters": params,
                "responses": ok(
                    "tasks",
                    {
                        "type": "object",
                        "properties": {
                            "items": {"type": "array", "items": {"$ref": "#/components/schemas/Task"}}
                        },
                    },
                ),
            }
        },
        "/api/tasks/{task_id}": {
            "get": {
                "summary": "One task, with its history (who did what, when)",
                "parameters": [task_param],
                "responses": {
                    **ok("the task", "Task"),
                    "404": {"description": "unknown", **json_body("Error")},
                },
            }
        },
        "/api/tasks/{task_id}/{verb}": {
            "post": {
                "summary": "Act on a task: acknowledge, complete (outcome), dismiss (reason), snooze (until or "
                "snooze_for), reassign (owner); `by` says who. Recorded on cs.task-actions, applied by "
                "`healthmon tasks-worker`.",
                "parameters": [
                    task_param,
                    {"name": "verb", "in": "path", "required": True, "schema": {"enum": list(VERBS)}},
                ],
                "requestBody": {"required": True, **json_body("ActionRequest")},
                "responses": {
                    "202": {
                        "description": "recorded; the task as it will be",
                        **json_body({"type": "object"}),
                    },
                    **ok("", "Error"),
                    "404": {"description": "unknown task", **json_body("Error")},
                    "409": {
                        "description": "not allowed in the task's state; nothing changed",
                        **json_body("Error"),
                    },
                    "503": {"description": "Kafka unavailable; nothing changed", **json_body("Error")},
                },
            }
        },
        "/t/{token}": {
            "get": {
                "summary": "A one-click link from mail (no bearer token: the link is signed): a confirmation page",
                "security": [],
                "responses": LINK_RESPONSES,
            },
            "post": {
                "summary": "Act as the link says (once)",
                "security": [],
                "responses": LINK_RESPONSES,
            },
        },
        "/slack/interactions": {
            "post": {
                "summary": "Slack's interactive buttons (verified with the signing secret, timestamp within 5 minutes)",
                "security": [],
                "responses": {
                    "200": {"description": "a reply for the user"},
                    "401": {"description": "unsigned or stale"},
                },
            }
        },
    }
    return paths, comps
