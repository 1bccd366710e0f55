"""Log in/out, users, API tokens and the audit log."""

from __future__ import annotations

import datetime as dt
import secrets
import uuid
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel, ConfigDict, Field

from .deps import SESSION_COOKIE, Admin, ApiError, Gw, User, client_of, not_found
from .metrics import LOGIN_FAILURES
from .security import digest, hash_password, new_api_token, new_session_id, verify_password

router = APIRouter(prefix="/api/v1", tags=["auth"])

Username = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.@-]+$")]
Password = Annotated[str, Field(min_length=1, max_length=256)]
Role = Literal["viewer", "operator", "administrator"]
NewPassword = Annotated[str, Field(min_length=8, max_length=256)]


class Login(BaseModel):
    model_config = ConfigDict(extra="forbid")
    username: Annotated[str, Field(min_length=1, max_length=64)]
    password: Password


class Me(BaseModel):
    username: str
    role: str
    kind: str
    csrf_token: str | None = None
    #: A first-run or reset password: the UI asks for a new one before anything else.
    must_change_password: bool = False


class PasswordChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    current_password: Password
    new_password: NewPassword


class NewUser(BaseModel):
    """A new user logs in with this password once, then sets their own."""

    model_config = ConfigDict(extra="forbid")
    username: Username
    password: NewPassword
    role: Role = "operator"


class UserChange(BaseModel):
    """An administrator's change: role, disable/enable, or a reset password (to be changed at
    the next log-in)."""

    model_config = ConfigDict(extra="forbid")
    password: NewPassword | None = None
    role: Role | None = None
    disabled: bool | None = None


class UserOut(BaseModel):
    id: uuid.UUID
    username: str
    role: str
    disabled: bool
    must_change_password: bool
    created_at: dt.datetime


class NewToken(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: Annotated[str, Field(min_length=1, max_length=64)]
    role: Role = "viewer"
    #: Days until the token stops working; none: until revoked.
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None


class TokenOut(BaseModel):
    id: uuid.UUID
    name: str
    role: str
    created_by: str | None
    created_at: dt.datetime
    expires_at: dt.datetime | None
    last_used: dt.datetime | None
    revoked_at: dt.datetime | None
    #: Only in the answer to the creation; never stored, never shown again.
    token: str | None = None


@router.post("/auth/login", response_model=Me)
async def login(body: Login, request: Request, response: Response, gw: Gw) -> Me:
    wait_s = gw.throttle.retry_after(body.username)
    if wait_s > 0:
        raise ApiError(
            429,
            "too_many_attempts",
            "too many failed log-ins; try again later",
            {"Retry-After": str(int(wait_s) + 1)},
        )
    user = await gw.repo.user_by_name(body.username)
    ok = verify_password(user["password_hash"] if user else None, body.password)
    if not user or not ok or user["disabled"]:
        LOGIN_FAILURES.inc()
        gw.throttle.failed(body.username)
        await gw.repo.audit(gw.pool, body.username, "login_failed", client=client_of(request))
        raise ApiError(401, "bad_credentials", "wrong user name or password")
    gw.throttle.succeeded(body.username)
    session_id, csrf = new_session_id(), secrets.token_urlsafe(24)
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=gw.settings.gateway_session_idle_s)
    await gw.repo.create_session(digest(session_id), user["id"], csrf, expires, client_of(request))
    await gw.repo.audit(gw.pool, user["username"], "login", client=client_of(request))
    response.set_cookie(
        SESSION_COOKIE,
        session_id,
        httponly=True,
        samesite="strict",
        path="/",
        secure=gw.settings.gateway_cookie_secure,
        max_age=int(gw.settings.gateway_session_max_s),
    )
    return Me(
        username=user["username"],
        role=user["role"],
        kind="session",
        csrf_token=csrf,
        must_change_password=user["must_change_password"],
    )


@router.post("/auth/logout", status_code=204)
async def logout(principal: User, response: Response, gw: Gw) -> Response:
    if principal.session_hash:
        await gw.repo.delete_session(principal.session_hash)
        gw.auth_cache.evict("s:" + principal.session_hash)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.status_code = 204
    return response


@router.get("/auth/me", response_model=Me)
async def me(principal: User) -> Me:
    return Me(
        username=principal.name,
        role=principal.role,
        kind=principal.kind,
        csrf_token=principal.csrf_token,
        must_change_password=principal.must_change_password,
    )


@router.post("/auth/password", status_code=204)
async def change_password(
    body: PasswordChange, principal: User, request: Request, gw: Gw
) -> Response:
    """Change one's own password (needs the current one); other sessions of the user end."""
    if principal.kind != "session":
        raise ApiError(403, "forbidden", "an API token has no password")
    user = await gw.repo.user_by_name(principal.name)
    if user is None or not verify_password(user["password_hash"], body.current_password):
        gw.throttle.failed(principal.name)
        raise ApiError(403, "bad_credentials", "the current password is wrong")
    if body.new_password == body.current_password:
        raise ApiError(422, "validation_error", "new_password: must differ from the current one")
    await gw.repo.change_own_password(
        principal.name, hash_password(body.new_password), principal.session_hash
    )
    gw.auth_cache.evict()
    await gw.repo.audit(gw.pool, principal.name, "password_changed", client=client_of(request))
    return Response(status_code=204)


@router.get("/users", response_model=list[UserOut])
async def list_users(_: Admin, gw: Gw) -> list[dict[str, Any]]:
    return await gw.repo.list_users()


@router.post("/users", response_model=UserOut, status_code=201)
async def create_user(body: NewUser, principal: Admin, request: Request, gw: Gw) -> dict[str, Any]:
    row = await gw.repo.create_user(
        body.username, hash_password(body.password), body.role, must_change_password=True
    )
    if not row:
        raise ApiError(409, "conflict", f"user {body.username!r} exists")
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "user_created",
        target=body.username,
        detail={"role": body.role},
        client=client_of(request),
    )
    return row


@router.patch("/users/{username}", response_model=UserOut)
async def change_user(
    username: Username, body: UserChange, principal: Admin, request: Request, gw: Gw
) -> dict[str, Any]:
    row = await gw.repo.update_user(
        username,
        password_hash=hash_password(body.password) if body.password else None,
        role=body.role,
        disabled=body.disabled,
    )
    if row is None:
        raise not_found("user")
    gw.auth_cache.evict()  # role, password or disabled: no cached session may outlive it
    changed = sorted(body.model_dump(exclude_none=True))
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "user_changed",
        target=username,
        detail={"fields": changed},
        client=client_of(request),
    )
    return row


@router.get("/tokens", response_model=list[TokenOut])
async def list_tokens(_: Admin, gw: Gw) -> list[dict[str, Any]]:
    return await gw.repo.list_tokens()


@router.post("/tokens", response_model=TokenOut, status_code=201)
async def create_token(
    body: NewToken, principal: Admin, request: Request, gw: Gw
) -> dict[str, Any]:
    token = new_api_token()
    expires = (
        dt.datetime.now(dt.UTC) + dt.timedelta(days=body.expires_in_days)
        if body.expires_in_days
        else None
    )
    row = await gw.repo.create_token(body.name, digest(token), body.role, principal.name, expires)
    await gw.repo.audit(
        gw.pool,
        principal.name,
        "token_created",
        target=body.name,
        detail={"role": body.role, "expires_at": expires.isoformat() if expires else None},
        client=client_of(request),
    )
    return {**row, "token": token}


@router.delete("/tokens/{token_id}", status_code=204)
async def revoke_token(token_id: uuid.UUID, principal: Admin, request: Request, gw: Gw) -> Response:
    if not await gw.repo.revoke_token(token_id):
        raise not_found("active token")
    gw.auth_cache.evict()
    await gw.repo.audit(
        gw.pool, principal.name, "token_revoked", target=str(token_id), client=client_of(request)
    )
    return Response(status_code=204)
