"""GET /openapi.json: the admin API described as OpenAPI 3.1, for generating clients.

Built from the application's own routes and from the Structs their handlers decode and answer
with (each handler's `documented` declaration; msgspec writes the JSON Schema), so the document
cannot describe a route that does not exist or miss one that does (a test checks both).
"""

from __future__ import annotations

import re
from typing import Any

import msgspec
from aiohttp import web

from notifier import __version__
from notifier.admin.wire import Doc, documented
from notifier.models import ErrorOut, HealthOut

routes = web.RouteTableDef()
_PARAM = re.compile(r"{(\w+)}")
_ERRORS = {
    "400": "a client's mistake: the body, a parameter or a rule, named in `error`",
    "401": "missing or wrong bearer token",
    "404": "no such partner, message, dead letter or event type",
    "503": "Redis is unreachable",
}


def describe(app: web.Application) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of `app`."""
    docs: list[tuple[str, str, Doc]] = []
    for route in app.router.routes():
        doc = getattr(route.handler, "doc", None)
        if route.method == "HEAD" or not isinstance(doc, Doc):
            continue
        docs.append((route.method.lower(), route.resource.canonical, doc))  # type: ignore[union-attr]
    types = [t for _, _, d in docs for t in (d.body, d.answer) if t is not None]
    schemas, components = msgspec.json.schema_components(
        [*types, ErrorOut], ref_template="#/components/schemas/{name}"
    )
    refs = dict(zip(map(id, [*types, ErrorOut]), schemas, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for method, path, doc in docs:
        paths.setdefault(path, {})[method] = _operation(method, path, doc, refs)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "notifier admin API",
            "version": __version__,
            "description": "Partners, messages, dead letters and operations of notifier, "
            "described in its README. Every route but /healthz, /metrics and /openapi.json "
            "needs `Authorization: Bearer <NOTIFIER_ADMIN_TOKEN>`.",
        },
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": components,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }


def _operation(method: str, path: str, doc: Doc, refs: dict[int, Any]) -> dict[str, Any]:
    """One route's operation: its parameters, body and answers, from its declaration."""
    operation: dict[str, Any] = {
        "summary": doc.summary,
        "operationId": _operation_id(method, path),
        "parameters": [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in _PARAM.findall(path)
        ]
        + [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "schema": q.schema,
                "description": q.description,
            }
            for q in doc.query
        ],
        "responses": _responses(method, path, doc, refs),
    }
    if doc.body is not None:
        operation["requestBody"] = {
            "required": method != "post" or "rotate" not in path,
            "content": {"application/json": {"schema": refs[id(doc.body)]}},
        }
    if doc.public:
        operation["security"] = []
    return operation


def _responses(method: str, path: str, doc: Doc, refs: dict[int, Any]) -> dict[str, Any]:
    error = {"application/json": {"schema": refs[id(ErrorOut)]}}
    answer: dict[str, Any] = {"description": doc.summary}
    if doc.answer is not None:
        answer["content"] = {"application/json": {"schema": refs[id(doc.answer)]}}
    elif path == "/metrics":
        answer["content"] = {"text/plain": {"schema": {"type": "string"}}}
    responses: dict[str, Any] = {str(doc.status): answer}
    for status, meaning in _ERRORS.items():
        if not (doc.public and status == "401"):
            responses[status] = {"description": meaning, "content": error}
    if doc.answer is HealthOut:  # unwell, it answers the same shape, naming what is wrong
        responses["503"] = {**answer, "description": "Redis is unreachable or a loop stalled"}
    # aiohttp's HTTP parser answers what it cannot read before the app sees it
    responses["400"]["description"] += (
        "; a request line or header over 8 KiB is refused by the HTTP server in plain text"
    )
    responses["400"]["content"] = {**error, "text/plain": {"schema": {"type": "string"}}}
    if method in ("post", "patch", "put"):
        responses["413"] = {"description": "the body is over 256 KiB", "content": error}
    return responses


def _operation_id(method: str, path: str) -> str:
    words = [w for w in re.split(r"[/{}-]+", path) if w and w != "v1"]
    return "_".join([method, *words])


@routes.get("/openapi.json")
@documented("This document", public=True)
async def openapi(request: web.Request) -> web.Response:
    return web.json_response(describe(request.app))
