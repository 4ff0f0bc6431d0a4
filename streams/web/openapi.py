"""The OpenAPI 3.1 document of ``healthmon serve`` (``GET /api/openapi.json``); bodies from the models."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from pydantic import BaseModel

from streams.core.accuracy import Accuracy
from streams.core.portfolio import PortfolioMetrics
from streams.core.snapshot import HealthSnapshot


def _params(model: type[BaseModel]) -> list[dict]:
    schema = model.model_json_schema()
    props = schema.get("properties", {})
    return [
        {"name": name, "in": "query", "required": False, "schema": prop, "description": prop.get("title", "")}
        for name, prop in props.items()
    ]


def _json(ref: str | dict) -> dict:
    schema = {"$ref": f"#/components/schemas/{ref}"} if isinstance(ref, str) else ref
    return {"content": {"application/json": {"schema": schema}}}


def _ok(description: str, schema: str | dict) -> dict:
    return {
        "200": {"description": description, **_json(schema)},
        "400": {"description": "invalid request", **_json("Error")},
        "401": {"description": "no or wrong bearer token", **_json("Error")},
    }


def get_operation(
    summary: str, model: str, query: type[BaseModel] | None = None, errors: dict[str, str] | None = None
) -> dict:
    """A GET path: its query parameters from ``query``, a ``model`` body, the usual 400/401 and ``errors``."""
    responses = _ok("ok", model) | {code: {"description": d} for code, d in (errors or {}).items()}
    return {
        "get": {
            "summary": summary,
            "parameters": [] if query is None else _params(query),
            "responses": responses,
        }
    }


@lru_cache(maxsize=1)
def openapi_document() -> dict[str, Any]:
    from streams.web import cards_api, outcomes_api, tasks_api
    from streams.web.leader import openapi_paths
    from streams.web.queries import AccountQuery
    from streams.web.server import AccuracyQuery, AlertsQuery, PortfolioQuery, SilenceRequest, TrendQuery

    comps: dict[str, Any] = {
        "Error": {
            "type": "object",
            "properties": {
                "error": {
                    "type": "object",
                    "properties": {"status": {"type": "integer"}, "message": {"type": "string"}},
                    "required": ["status", "message"],
                }
            },
        },
        "AccountRow": {
            "type": "object",
            "properties": {
                k: {"type": t}
                for k, t in {
                    "account_id": "string",
                    "name": "string",
                    "segment": ["string", "null"],
                    "csm": ["string", "null"],
                    "csm_name": ["string", "null"],
                    "score": ["number", "null"],
                    "band": ["string", "null"],
                    "mrr": "number",
                    "canceled": "boolean",
                    "renewal_date": ["string", "null"],
                    "as_of": ["string", "null"],
                }.items()
            },
        },
        "AccountPage": {
            "type": "object",
            "properties": {
                "total": {"type": "integer"},
                "limit": {"type": "integer"},
                "offset": {"type": "integer"},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/AccountRow"}},
            },
        },
        "AccountDetail": {
            "type": "object",
            "properties": {
                "snapshot": {"$ref": "#/components/schemas/HealthSnapshot"},
                "history": {"type": "array", "items": {"type": "object"}},
                "alerts": {"type": "array", "items": {"type": "object"}},
                "episodes": {
                    "type": "array",
                    "description": "one row per alert episode, newest first: fired_at, status, resolved_at, "
                    "ended_by (recovered | cancelled | superseded | rule_removed; null while firing), task (the playbook "
                    "task it opened or updated: task_id, state, step, owner, due_at, outcome; or null)",
                    "items": {"type": "object"},
                },
                "firing": {"type": "array", "items": {"type": "object"}},
                "comments": {
                    "type": "array",
                    "description": "the latest NPS answers with a comment, newest first (untrusted text)",
                    "items": {"type": "object"},
                },
                "bands": {
                    "type": "object",
                    "description": "band thresholds of the scorecard in force for this account",
                    "properties": {
                        "scorecard": {"type": "string"},
                        "red_below": {"type": "number"},
                        "yellow_below": {"type": "number"},
                    },
                },
                "silences": {"type": "array", "items": {"type": "object"}},
            },
        },
    }
    leader_paths, leader_models = openapi_paths()
    models: list[type[BaseModel]] = [
        PortfolioMetrics,
        HealthSnapshot,
        SilenceRequest,
        Accuracy,
        *leader_models,
    ]
    for model in models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(schema.pop("$defs", {}))
        comps[model.__name__] = schema
    anyobj: dict = {"type": "object"}
    paths = {
        "/healthz": {
            "get": {
                "summary": "The process is up (no token needed)",
                "responses": {"200": {"description": "ok"}},
            }
        },
        "/readyz": {
            "get": {
                "summary": "Redis answers and the read model is built (no token needed)",
                "responses": {"200": {"description": "ready"}, "503": {"description": "not ready"}},
            }
        },
        "/api/accounts": {
            "get": {
                "summary": "Accounts, filtered, sorted and paged",
                "parameters": _params(AccountQuery),
                "responses": _ok("a page of accounts", "AccountPage"),
            }
        },
        "/api/accounts/{account_id}": {
            "get": {
                "summary": "One account: snapshot (components, drivers), daily history, alerts, silences",
                "parameters": [
                    {"name": "account_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    **_ok("the account", "AccountDetail"),
                    "404": {"description": "unknown", **_json("Error")},
                },
            }
        },
        "/api/portfolio": {
            "get": {
                "summary": "Portfolio figures of a period (YYYY-MM or YYYY-Qn; default the latest month) for a "
                "group (all, segment:<name>, csm:<email>)",
                "parameters": _params(PortfolioQuery),
                "responses": {
                    **_ok("the figures", "PortfolioMetrics"),
                    "404": {"description": "none", **_json("Error")},
                },
            }
        },
        "/api/portfolio/periods": {
            "get": {"summary": "Periods and the latest month's groups", "responses": _ok("periods", anyobj)}
        },
        "/api/portfolio/trend": {
            "get": {
                "summary": "A group's monthly headline figures, oldest first",
                "parameters": _params(TrendQuery),
                "responses": _ok("the trend", {"type": "array", "items": anyobj}),
            }
        },
        "/api/accuracy": {
            "get": {
                "summary": "Live score accuracy: each cancellation's score and band 30 and 60 days before; AUC, "
                "red precision/recall and bottom-decile lift over the rolling window (whole book, segments) and "
                "month by month; and the measures the information check sets aside (docs/validation.md)",
                "parameters": _params(AccuracyQuery),
                "responses": _ok(
                    "the figures",
                    {
                        "allOf": [
                            {"$ref": "#/components/schemas/Accuracy"},
                            {
                                "type": "object",
                                "properties": {
                                    "set_aside": {
                                        "type": "array",
                                        "description": "scorecard, component, measure, reason (constant | "
                                        "no_data), text, accounts",
                                        "items": anyobj,
                                    }
                                },
                            },
                        ]
                    },
                ),
            }
        },
        "/api/alerts": {
            "get": {
                "summary": "The alerts feed, newest first (cs.alerts events)",
                "parameters": _params(AlertsQuery),
                "responses": _ok("alerts", anyobj),
            }
        },
        "/api/silences": {
            "get": {"summary": "Active silences", "responses": _ok("silences", anyobj)},
            "post": {
                "summary": "Add a silence (as `healthmon silence add`)",
                "requestBody": {"required": True, **_json("SilenceRequest")},
                "responses": {"201": {"description": "added", **_json(anyobj)}, **_ok("", "Error")},
            },
        },
        "/api/silences/{silence_id}": {
            "delete": {
                "summary": "Remove a silence",
                "parameters": [
                    {"name": "silence_id", "in": "path", "required": True, "schema": {"type": "string"}}
                ],
                "responses": {
                    "204": {"description": "removed"},
                    "404": {"description": "unknown", **_json("Error")},
                },
            }
        },
        "/api/events": {
            "get": {
                "summary": "Server-sent events: `update` with {accounts, periods} as the read model changes",
                "responses": {"200": {"description": "text/event-stream"}},
            }
        },
    }
    paths.update(leader_paths)
    task_paths, task_schemas = tasks_api.openapi_paths(_ok, _json)
    paths.update(task_paths)
    outcome_paths, outcome_models = outcomes_api.openapi_paths()
    paths.update(outcome_paths)
    for model in outcome_models:
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        comps.update(schema.pop("$defs", {}))
        comps[model.__name__] = schema
    comps.update(task_schemas)
    card_paths, card_schemas = cards_api.openapi_paths(_ok, _json)
    paths.update(card_paths)
    comps.update(card_schemas)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "healthmon",
            "version": "1",
            "description": "Customer health: the read model's API.",
        },
        "components": {
            "schemas": comps,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
        "paths": paths,
    }
