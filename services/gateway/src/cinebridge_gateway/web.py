"""The FastAPI application: routers, body size limit, one error body shape, the static web UI."""

from __future__ import annotations

import contextlib
import logging
import re
import uuid
from importlib import resources
from typing import Any

import asyncpg
from cinebridge_common.bus import BusError
from cinebridge_common.db import DB_DOWN
from cinebridge_common.logging import kv
from cinebridge_common.read_models import UNDEFINED, explain_undefined
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from . import (
    room_study,
    routes_audit,
    routes_auth,
    routes_deliveries,
    routes_export,
    routes_media,
    routes_ops,
    routes_purge,
    routes_rooms,
    routes_send,
    routes_settings,
    routes_statement,
    routes_studies,
    routes_upload,
    routes_worklist,
)
from .api_docs import install_api_docs
from .deps import ERROR_RESPONSES, READ_MODELS, ApiError, Gateway, error_body
from .metrics import RequestMetrics

log = logging.getLogger(__name__)
STATIC = resources.files("cinebridge_gateway") / "static"


class BodySizeLimit:
    """Refuses bodies over `limit` bytes with 413: by Content-Length before reading, and by
    counting while streaming (chunked bodies have no Content-Length; starlette#2155)."""

    def __init__(self, app: ASGIApp, limit: int, streamed: tuple[str, ...] = ()) -> None:
        self.app = app
        self.limit = limit
        #: Path patterns of routes that stream their body to disk and enforce their own limit
        #: with their own error (file uploads): passed through untouched.
        self.streamed = tuple(re.compile(pattern) for pattern in streamed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or any(rx.match(scope.get("path", "")) for rx in self.streamed):
            await self.app(scope, receive, send)
            return
        limit = self.limit
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                if not value.isdigit() or int(value) > limit:
                    await self._refuse(send, limit)
                    return
        seen = 0
        started = refused = False

        async def counting_receive() -> Message:
            nonlocal seen, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # Answer now and tell the app the client left: whatever it does next
                    # (FastAPI turns body errors into 400) must not reach the client.
                    refused = True
                    if not started:
                        await self._refuse(send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if refused:
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        with contextlib.suppress(ClientDisconnect):
            await self.app(scope, counting_receive, tracking_send)

    async def _refuse(self, send: Send, limit: int) -> None:
        response = JSONResponse(
            error_body("body_too_large", f"request body exceeds {limit} bytes"), 413
        )
        await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def _field(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc) or "body"


def _validation_message(errors: list[dict[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    details = []
    for err in errors:
        if err.get("type") == "json_invalid":
            reason = (err.get("ctx") or {}).get("error", "invalid JSON")
            details.append({"field": "body", "message": f"malformed JSON: {reason}"})
        else:
            details.append({"field": _field(err.get("loc", ())), "message": err.get("msg", "")})
    summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:5])
    return summary or "invalid request", details


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def api_error(_: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(error_body(exc.code, exc.message), exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        message, details = _validation_message(list(exc.errors()))
        return JSONResponse(error_body("validation_error", message, details), 422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and exc.detail == "There was an error parsing the body":
            # FastAPI's answer to a body that is not UTF-8 JSON: say so, like other bad JSON.
            message = "malformed JSON: the body is not UTF-8 encoded JSON"
            return JSONResponse(error_body("validation_error", message), 422)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(
            error_body(code, str(exc.detail)),
            exc.status_code,
            headers=getattr(exc, "headers", None),
        )

    @app.exception_handler(BusError)
    async def bus_error(_: Request, exc: BusError) -> JSONResponse:
        return JSONResponse(error_body("service_unavailable", str(exc)), 503)

    async def db_down(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(error_body("database_unavailable", "database unavailable"), 503)

    for kind in DB_DOWN:
        if kind is not OSError:  # a file error is not an outage; pool connects raise subclasses
            app.add_exception_handler(kind, db_down)
    app.add_exception_handler(ConnectionRefusedError, db_down)

    @app.exception_handler(TimeoutError)
    async def timed_out(request: Request, exc: TimeoutError) -> JSONResponse:
        # A database statement past CB_GATEWAY_DB_TIMEOUT_S (PostgreSQL hung rather than down),
        # or a wait on another part that never ended: the station is not answering, the
        # gateway is not at fault.
        log.warning("request timed out", extra=kv(path=request.url.path, error=repr(exc)[:200]))
        message = "the station did not answer in time: PostgreSQL or a service is not answering"
        return JSONResponse(error_body("timed_out", f"{message} (see Ops)"), 503)

    @app.exception_handler(asyncpg.DataError)
    async def bad_data(_: Request, exc: asyncpg.DataError) -> JSONResponse:
        return JSONResponse(error_body("validation_error", "a value is out of range"), 422)

    @app.exception_handler(Exception)
    async def internal(request: Request, exc: Exception) -> JSONResponse:
        ref = uuid.uuid4().hex[:12]
        log.exception("request failed", extra=kv(ref=ref, path=request.url.path))
        # No stack trace or exception text to the client; the reference finds it in the log.
        return JSONResponse(error_body("internal_error", f"internal error (ref {ref})"), 500)

    async def read_model_missing(request: Request, exc: Exception) -> JSONResponse:
        """Another owner's read model that does not exist yet (its service never started on
        this station, docs/architecture.md): a state to wait out, not a fault of the gateway."""
        gw: Gateway = request.app.state.gateway
        missing = await explain_undefined(gw.pool, exc, READ_MODELS)
        if missing is None:
            return await internal(request, exc)
        return JSONResponse(error_body("read_model_missing", str(missing)), 503)

    for kind in UNDEFINED:
        app.add_exception_handler(kind, read_model_missing)


def create_app(gw: Gateway) -> FastAPI:
    app = FastAPI(
        title="CineBridge gateway",
        version="1",
        description="REST + server-sent events for the CineBridge web UI and ops tools.",
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
        responses=ERROR_RESPONSES,
    )
    app.state.gateway = gw
    install_error_handlers(app)
    install_api_docs(app)
    routers = (
        routes_auth,
        routes_audit,
        routes_studies,
        routes_media,
        routes_deliveries,
        routes_export,
        room_study,
        routes_rooms,
        routes_worklist,
        routes_settings,
        routes_ops,
        routes_purge,
        routes_send,
        routes_statement,
        routes_upload,
    )
    for module in routers:
        app.include_router(module.router)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return FileResponse(str(STATIC / "index.html"), headers=_UI_HEADERS)

    app.mount("/ui", StaticFiles(directory=str(STATIC)), name="ui")
    app.add_middleware(
        BodySizeLimit,
        limit=gw.settings.gateway_max_body_bytes,
        streamed=(routes_send.UPLOAD_PATH, routes_upload.UPLOAD_PATH),
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestMetrics)
    return app


_UI_HEADERS = {"Cache-Control": "no-store"}


class SecurityHeaders:
    """Headers that keep the UI from being framed or sniffed; CSP allows only our own origin."""

    HEADERS = [
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", b"DENY"),
        (b"referrer-policy", b"no-referrer"),
        (
            b"content-security-policy",
            b"default-src 'self'; img-src 'self' blob: data:; media-src 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
        ),
    ]

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + self.HEADERS
            await send(message)

        await self.app(scope, receive, with_headers)
