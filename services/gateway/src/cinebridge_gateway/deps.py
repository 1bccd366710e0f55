"""What every route needs: the gateway's resources, the caller (session or token), errors."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from typing import Annotated, Any

import asyncpg
from cinebridge_common.bus import Bus
from cinebridge_common.service import Dependencies
from cinebridge_common.store import MediaStore
from fastapi import Depends, Request
from pydantic import BaseModel

from .conversion_progress import ConversionProgress
from .health_board import HealthBoard
from .hub import EventHub
from .repository import Principal, Repository
from .security import LoginThrottle, PrincipalCache, digest, role_allows
from .settings import GatewaySettings
from .worklist_pages import WorklistPages

SESSION_COOKIE = "cb_session"
CSRF_HEADER = "X-CSRF-Token"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: The only writes a read-only (`viewer`) caller, or a user who must first change a one-time
#: password, may make.
OWN_ACCOUNT_WRITES = frozenset({"/api/v1/auth/logout", "/api/v1/auth/password"})
#: The other owners' read models the gateway reads (docs/architecture.md): until one exists, its
#: health and the pages that need it say whose start they wait for. Capture's views also stand
#: for the columns its migrations add to the study catalog.
READ_MODELS = [
    "capture_purging_studies",
    "capture_served_rooms",
    "converted_instances",
    "delivery_attempt_log",
    "delivery_states",
    "destination_names",
    "mpps_step_states",
    "received_study_index",
    "received_totals",
]


class ApiError(Exception):
    """An error with its HTTP status, a stable code and a message for people."""

    def __init__(
        self, status: int, code: str, message: str, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def not_found(what: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} not found")


@dataclass
class Gateway:
    """The resources of one gateway process (the composition root builds it)."""

    settings: GatewaySettings
    pool: asyncpg.Pool
    bus: Bus
    store: MediaStore
    repo: Repository
    board: HealthBoard
    hub: EventHub
    auth_cache: PrincipalCache
    #: The latest report of each conversion in progress (the study detail shows it).
    progress: ConversionProgress = field(default_factory=ConversionProgress)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    #: This process's view of PostgreSQL and NATS (the components of /api/health).
    dependencies: Dependencies = field(default_factory=Dependencies)
    worklist_pages: WorklistPages = field(default_factory=WorklistPages)


async def get_gateway(request: Request) -> Gateway:
    # async: a plain `def` dependency would run in a worker thread on every request.
    gw: Gateway = request.app.state.gateway
    return gw


Gw = Annotated[Gateway, Depends(get_gateway)]


def client_of(request: Request) -> str:
    return request.client.host if request.client else "?"


async def current_principal(request: Request, gw: Gw) -> Principal:
    principal = await _authenticate(request, gw)
    if request.method in UNSAFE_METHODS and request.url.path not in OWN_ACCOUNT_WRITES:
        if principal.must_change_password:
            raise ApiError(403, "password_change_required", "change your password first")
        if not role_allows(principal.role, "operator"):
            raise ApiError(403, "forbidden", f"the {principal.role} role is read-only")
    return principal


async def _authenticate(request: Request, gw: Gw) -> Principal:
    """Bearer API token, or the session cookie plus the CSRF header on state-changing calls.

    The cookie is SameSite=Strict and HttpOnly; the CSRF header is a per-session secret the page
    got from /auth/me, which another origin can neither read nor send without CORS (none here).
    """
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        key = "t:" + digest(auth[7:].strip())
        try:
            principal = gw.auth_cache.get(key) or await gw.repo.token_principal(key[2:])
        except TimeoutError as exc:
            raise _database_not_answering(gw) from exc
        if principal is not None:
            gw.auth_cache.put(key, principal)
        if principal is None:
            raise ApiError(
                401,
                "unauthenticated",
                "invalid or revoked API token",
                {"WWW-Authenticate": "Bearer"},
            )
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if not cookie:
        raise ApiError(
            401, "unauthenticated", "log in or send an API token", {"WWW-Authenticate": "Bearer"}
        )
    key = "s:" + digest(cookie)
    principal = gw.auth_cache.get(key)
    if principal is None:
        try:
            found = await gw.repo.session_principal(
                key[2:], gw.settings.gateway_session_idle_s, gw.settings.gateway_session_max_s
            )
        except TimeoutError as exc:
            raise _database_not_answering(gw) from exc
        if found is None:
            raise ApiError(401, "session_expired", "the session has expired; log in again")
        principal = found[0]
        gw.auth_cache.put(key, principal)
    if request.method in UNSAFE_METHODS:
        sent = request.headers.get(CSRF_HEADER, "")
        if not principal.csrf_token or not hmac.compare_digest(sent, principal.csrf_token):
            raise ApiError(403, "csrf", f"missing or wrong {CSRF_HEADER} header")
    return principal


def _database_not_answering(gw: Gateway) -> ApiError:
    """Who the caller is cannot be checked: PostgreSQL gave no answer in time (hung)."""
    return ApiError(
        503,
        "database_unavailable",
        f"the database (PostgreSQL) did not answer within {gw.settings.gateway_db_timeout_s:g} s",
    )


User = Annotated[Principal, Depends(current_principal)]


async def administrator(principal: User) -> Principal:
    if not role_allows(principal.role, "administrator"):
        raise ApiError(403, "forbidden", "this action needs the administrator role")
    return principal


Admin = Annotated[Principal, Depends(administrator)]


class ErrorDetail(BaseModel):
    field: str
    message: str


class ErrorInfo(BaseModel):
    code: str
    message: str
    details: list[ErrorDetail] | None = None


class ErrorBody(BaseModel):
    """Every error answer has this shape (no stack traces, no exception text)."""

    error: ErrorInfo


_ERROR_STATUSES = {
    400: "Malformed request",
    401: "Not logged in, session expired, or invalid API token",
    403: "Role not allowed, or missing CSRF header",
    404: "Not found",
    409: "Conflict, or refused by the service that owns the resource",
    413: "Request body too large",
    422: "Validation failed (the message names each field)",
    428: "Confirmation required",
    429: "Too many failed log-ins for this user name; retry after Retry-After seconds",
    502: "An upstream (preview, metrics) failed",
    503: "The service behind this call is unavailable",
}
#: Documented on every operation, so the OpenAPI schema says what a client may get.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text} for status, text in _ERROR_STATUSES.items()
}


def error_body(code: str, message: str, details: list[Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if details:
        body["error"]["details"] = details
    return body
