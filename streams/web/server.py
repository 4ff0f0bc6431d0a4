"""``healthmon serve``: the HTTP API and the dashboard page over the Redis read model (aiohttp).

It only reads the read model (and adds or removes silences through alerts.store), so any number can
run beside one ``healthmon readmodel``. Live updates: the read model publishes a note on the Redis
channel ``{p}updates`` per batch; one subscription per process fans them out to server-sent events.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel, Field, ValidationError
from redis.asyncio import Redis
from redis.exceptions import RedisError

from alerts.store import DeliveryStore, Silence
from rules.model import parse_duration
from streams import compat
from streams.core.portfolio import period_months
from streams.core.scoring import ScoringConfig, load_scoring
from streams.settings import Settings
from streams.web import cards_api, leader, outcomes_api, queries, tasks_api
from streams.web.openapi import openapi_document

log = logging.getLogger("healthmon.serve")
OPEN_PATHS = frozenset({"/healthz", "/readyz"})
COOKIE = "healthmon_token"
STATIC = resources.files("streams.web") / "static"

SETTINGS = web.AppKey("settings", Settings)
REDIS = web.AppKey("redis", Redis)
#: The scorecard in force (HEALTHMON_SCORECARD, as the worker reads it): the account page's band lines.
SCORING = web.AppKey("scoring", ScoringConfig)


def json_response(body: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS),
        status=status,
        content_type="application/json",
    )


def error(status: int, message: str, **extra: Any) -> web.Response:
    return json_response({"error": {"status": status, "message": message, **extra}}, status)


@web.middleware
async def errors_as_json(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return error(exc.status, exc.reason if exc.text is None else exc.text.removeprefix(f"{exc.status}: "))
    except ValidationError as exc:
        issues = [
            {"field": ".".join(str(x) for x in e["loc"]), "message": e["msg"]}
            for e in exc.errors(include_url=False)
        ]
        return error(400, "invalid request", issues=issues)
    except (RedisError, OSError) as exc:
        log.warning("read model unavailable: %s", exc)
        return error(503, "the read model (Redis) is unavailable")
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error(500, "internal error")


def _authorized(request: web.Request, token: str) -> bool:
    given = ""
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer "):
        given = header[7:]
    elif COOKIE in request.cookies:
        given = request.cookies[COOKIE]
    elif request.path == "/" and "token" in request.query:
        given = request.query["token"]
    return bool(given) and hmac.compare_digest(given.encode(), token.encode())


@web.middleware
async def bearer_auth(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Everything but the health endpoints needs the token: a Bearer header (API clients) or the
    cookie the page sets when opened once as ``/?token=...`` (a browser's EventSource sends no header)."""
    secret = request.app[SETTINGS].api_token
    if secret is None or request.path in OPEN_PATHS or request.path.startswith(tasks_api.OPEN_PREFIXES):
        return await handler(request)  # (task links and Slack carry their own signatures)
    token = secret.get_secret_value()
    if not _authorized(request, token):
        refused = error(401, "a bearer token is required (Authorization: Bearer <HEALTHMON_API_TOKEN>)")
        refused.headers["WWW-Authenticate"] = 'Bearer realm="healthmon"'
        return refused
    resp = await handler(request)
    if request.path == "/" and request.query.get("token"):
        resp.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
    return resp


class UpdateHub:
    """One Redis subscription, fanned out to every open event stream."""

    def __init__(self, redis: Redis, channel: str) -> None:
        self.redis = redis
        self.channel = channel
        self.queues: set[asyncio.Queue[bytes]] = set()
        self.task: asyncio.Task | None = None

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                pubsub = self.redis.pubsub()
                await pubsub.subscribe(self.channel)
                delay = 0.5
                async for message in pubsub.listen():
                    if message.get("type") == "message":
                        for q in list(self.queues):
                            if q.qsize() < 100:  # a stalled client drops notes, it never blocks others
                                q.put_nowait(message["data"])
            except (RedisError, OSError) as exc:
                log.warning("update channel lost (%s); resubscribing in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(10.0, delay * 2)


HUB = web.AppKey("hub", UpdateHub)


# --- handlers


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    try:
        redis = request.app[REDIS]
        await redis.ping()
        built = await redis.exists(f"{s.redis_prefix}readmodel:built")
    except (RedisError, OSError) as exc:
        return json_response({"status": "unavailable", "reason": f"redis: {exc}"}, 503)
    if not built:
        return json_response({"status": "starting", "reason": "the read model is not built yet"}, 503)
    return json_response({"status": "ready"})


def _query(model: type[BaseModel], request: web.Request) -> Any:
    return model.model_validate(dict(request.query))


async def accounts(request: web.Request) -> web.Response:
    q = _query(queries.AccountQuery, request)
    s = request.app[SETTINGS]
    return json_response(await queries.list_accounts(request.app[REDIS], s.redis_prefix, q))


async def account(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    aid = request.match_info["account_id"]
    redis = request.app[REDIS]
    detail = await queries.account_detail(redis, s.redis_prefix, aid, s.history_days)
    if detail is None:
        return error(404, f"no account {aid!r} in the read model")
    silences = await DeliveryStore(redis, s.redis_prefix).silences()
    csm = (detail["snapshot"].get("account") or {}).get("csm_email")
    detail["silences"] = [
        x.model_dump()
        for x in silences
        if x.matchers.get("account", aid) == aid and x.matchers.get("csm", csm) == csm
    ]
    detail["bands"] = bands_in_force(request.app[SCORING], detail["snapshot"].get("scorecard"))
    return json_response(detail)


def bands_in_force(scoring: ScoringConfig, scorecard: str | None) -> dict[str, Any]:
    """The band thresholds of the scorecard the snapshot was scored with (a segment's, or the default)."""
    card = scoring.segments.get(scorecard) if scorecard else None  # type: ignore[call-overload]
    name, card = (scorecard, card) if card is not None else ("default", scoring.default)
    return {"scorecard": name, "red_below": card.bands.red_below, "yellow_below": card.bands.yellow_below}


class PortfolioQuery(BaseModel):
    period: str | None = Field(default=None, max_length=8)
    group: str = Field(default="all", max_length=300)


async def portfolio(request: web.Request) -> web.Response:
    q = _query(PortfolioQuery, request)
    s = request.app[SETTINGS]
    redis = request.app[REDIS]
    known = await queries.periods(redis, s.redis_prefix)
    period = q.period or next((x for x in reversed(known) if len(x) == 7 and "Q" not in x), None)
    if period is None:
        return error(404, "no portfolio figures yet (is healthmon readmodel running?)")
    try:
        period_months(period)
    except ValueError as exc:
        return error(400, str(exc))
    figures = await queries.portfolio(redis, s.redis_prefix, period, q.group)
    if figures is None:
        return error(404, f"no figures for group {q.group!r} in {period}", periods=known)
    return json_response(figures)


async def portfolio_periods(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    redis = request.app[REDIS]
    known = await queries.periods(redis, s.redis_prefix)
    latest = next((x for x in reversed(known) if len(x) == 7 and "Q" not in x), None)
    groups = await queries.portfolio_groups(redis, s.redis_prefix, latest) if latest else []
    return json_response({"periods": known, "latest_month": latest, "groups": groups})


class TrendQuery(BaseModel):
    group: str = Field(default="all", max_length=300)
    months: int = Field(default=6, ge=1, le=36)


async def portfolio_trend(request: web.Request) -> web.Response:
    q = _query(TrendQuery, request)
    s = request.app[SETTINGS]
    return json_response(await queries.trend(request.app[REDIS], s.redis_prefix, q.group, q.months))


#: The accuracy figures read every account's score line (~3 s for 10,000 accounts and 240 days): one
#: computation per window serves every request for this long (the figures move by the day, not the second).
ACCURACY_TTL_S = 30.0
ACCURACY_CACHE = web.AppKey("accuracy_cache", dict)


class AccuracyQuery(BaseModel):
    #: The rolling window (days of cancellations); default HEALTHMON_ACCURACY_WINDOW_DAYS. No longer than
    #: the read model keeps (a longer one would silently count fewer cancellations).
    window_days: int | None = Field(default=None, ge=7)


async def accuracy(request: web.Request) -> web.Response:
    q = _query(AccuracyQuery, request)
    s = request.app[SETTINGS]
    window = q.window_days or s.accuracy_window_days
    if window > s.accuracy_window_days:
        return error(400, f"window_days: at most {s.accuracy_window_days} (HEALTHMON_ACCURACY_WINDOW_DAYS)")
    cache = request.app[ACCURACY_CACHE]
    hit = cache.get(window)
    if hit is None or time.monotonic() - hit[0] >= ACCURACY_TTL_S:
        hit = cache[window] = (
            time.monotonic(),
            await queries.accuracy_report(request.app[REDIS], s.redis_prefix, window),
        )
    return json_response(hit[1])


class AlertsQuery(BaseModel):
    limit: int = Field(default=100, ge=1, le=1000)
    account: str | None = None
    status: str | None = Field(default=None, pattern="^(firing|resolved)$")


async def alerts(request: web.Request) -> web.Response:
    q = _query(AlertsQuery, request)
    s = request.app[SETTINGS]
    items = await queries.alerts_feed(request.app[REDIS], s.redis_prefix, q.limit, q.account, q.status)
    return json_response({"items": items})


class SilenceRequest(BaseModel):
    """As ``healthmon silence add``: at least one of account, rule, csm, and a duration."""

    account: str | None = None
    rule: str | None = None
    csm: str | None = None
    duration: str | int  # "2d", "12h", or seconds
    created_by: str = ""
    comment: str = ""


async def silences_list(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    found = await DeliveryStore(request.app[REDIS], s.redis_prefix).silences()
    return json_response({"items": [x.model_dump() for x in found]})


async def silences_add(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    try:
        body = orjson.loads(await request.read())
    except orjson.JSONDecodeError as exc:
        return error(400, f"the body is not JSON: {exc}")
    req = SilenceRequest.model_validate(body)
    matchers = {k: v for k, v in {"account": req.account, "rule": req.rule, "csm": req.csm}.items() if v}
    if not matchers:
        return error(400, "give at least one of account, rule, csm")
    try:
        seconds = parse_duration(req.duration)
    except ValueError as exc:
        return error(400, str(exc))
    silence = Silence(
        matchers=matchers, ends_at=time.time() + seconds, created_by=req.created_by, comment=req.comment
    )
    added = await DeliveryStore(request.app[REDIS], s.redis_prefix).add_silence(silence)
    return json_response(added.model_dump(), 201)


async def silences_remove(request: web.Request) -> web.Response:
    s = request.app[SETTINGS]
    sid = request.match_info["silence_id"]
    if not await DeliveryStore(request.app[REDIS], s.redis_prefix).remove_silence(sid):
        return error(404, f"no silence {sid!r}")
    return web.Response(status=204)


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: ``update`` with the read model's note ({"accounts": [...], "periods": [...]})."""
    hub = request.app[HUB]
    resp = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    )
    await resp.prepare(request)
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    hub.queues.add(queue)
    try:
        await resp.write(b"retry: 2000\nevent: hello\ndata: {}\n\n")
        while True:
            try:
                note = await asyncio.wait_for(queue.get(), timeout=15)
            except TimeoutError:
                await resp.write(b": keep-alive\n\n")
                continue
            await resp.write(b"event: update\ndata: " + note + b"\n\n")
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    finally:
        hub.queues.discard(queue)
    return resp


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


async def index(request: web.Request) -> web.Response:
    return web.Response(
        body=(STATIC / "index.html").read_bytes(),
        content_type="text/html",
        headers={"Cache-Control": "no-cache"},
    )


async def static(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    types = {"js": "text/javascript", "css": "text/css", "svg": "image/svg+xml"}
    ext = name.rsplit(".", 1)[-1]
    if "/" in name or ext not in types or not (STATIC / name).is_file():
        return error(404, f"no static file {name!r}")
    return web.Response(body=(STATIC / name).read_bytes(), content_type=types[ext])


async def vendor(request: web.Request) -> web.Response:
    """The charting library, served from the package: the page fetches nothing from outside."""
    name = request.match_info["name"]
    path = STATIC / "vendor" / name
    if "/" in name or name.rsplit(".", 1)[-1] not in ("js", "css") or not path.is_file():
        return error(404, f"no static file 'vendor/{name}'")
    content_type = "text/javascript" if name.endswith(".js") else "text/css"
    return web.Response(
        body=path.read_bytes(),
        content_type=content_type,
        headers={"Cache-Control": "public, max-age=86400"},
    )


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[errors_as_json, bearer_auth])
    app[SETTINGS] = settings
    app[SCORING] = load_scoring(settings.scorecard)
    redis = Redis.from_url(settings.redis_url)
    app[REDIS] = redis
    app[HUB] = UpdateHub(redis, f"{settings.redis_prefix}updates")
    app[ACCURACY_CACHE] = {}

    async def lifecycle(app: web.Application):
        hub = app[HUB]
        hub.task = asyncio.create_task(hub.run())
        yield
        hub.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await hub.task
        await redis.aclose()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/api/openapi.json", openapi)
    app.router.add_get("/api/accounts", accounts)
    app.router.add_get("/api/accounts/{account_id}", account)
    app.router.add_get("/api/portfolio", portfolio)
    app.router.add_get("/api/portfolio/periods", portfolio_periods)
    app.router.add_get("/api/portfolio/trend", portfolio_trend)
    app.router.add_get("/api/accuracy", accuracy)
    cards_api.add_routes(app, settings, app[SCORING])  # scorecard promotion (docs/promotion.md)
    leader.add_routes(app, settings)  # targets, scorecard, CSM table (streams/web/leader.py)
    app.router.add_get("/api/alerts", alerts)
    app.router.add_get("/api/silences", silences_list)
    app.router.add_post("/api/silences", silences_add)
    app.router.add_delete("/api/silences/{silence_id}", silences_remove)
    app.router.add_get("/api/events", events)
    outcomes_api.register(app)  # /api/tasks/outcomes, before /api/tasks/{task_id}
    tasks_api.register(app, settings)  # /api/tasks, /t/<signed link>, /slack/interactions
    app.router.add_get("/", index)
    app.router.add_get("/static/{name}", static)
    app.router.add_get("/static/vendor/{name}", vendor)
    return app


def check_bind(settings: Settings) -> None:
    """Refuse to serve the data beyond this machine without a token."""
    try:
        loopback = ipaddress.ip_address(settings.serve_host).is_loopback
    except ValueError:
        loopback = settings.serve_host == "localhost"
    if not loopback and settings.api_token is None:
        raise ValueError(
            f"HEALTHMON_SERVE_HOST={settings.serve_host} is not a loopback address: set HEALTHMON_API_TOKEN"
        )


async def serve(settings: Settings, stopping: asyncio.Event) -> None:
    check_bind(settings)
    runner = web.AppRunner(create_app(settings), access_log=None, shutdown_timeout=2)
    await runner.setup()
    site = web.TCPSite(runner, settings.serve_host, settings.serve_port)
    await site.start()
    port = compat.bound_port(site)
    log.info("dashboard: http://%s:%d/", settings.serve_host, port)
    try:
        await stopping.wait()
    finally:
        await runner.cleanup()
