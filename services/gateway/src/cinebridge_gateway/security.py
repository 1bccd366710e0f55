"""Passwords (argon2id), opaque session ids and API tokens (only their SHA-256 is stored)."""

from __future__ import annotations

import hashlib
import secrets
import time
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

#: Each role may do what the ones before it may: `viewer` reads (dashboards, ops page),
#: `operator` captures and handles studies, `administrator` manages settings, users, tokens.
ROLES = ("viewer", "operator", "administrator")
TOKEN_PREFIX = "cbt_"  # noqa: S105 - a marker that makes leaked tokens greppable, no secret

_hasher = PasswordHasher()
#: Verified against when the user does not exist, so both cases cost the same (no user probing).
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(stored_hash or _DUMMY_HASH, password) and stored_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def needs_rehash(stored_hash: str) -> bool:
    return _hasher.check_needs_rehash(stored_hash)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_api_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_one_time_password() -> str:
    return secrets.token_urlsafe(12)


def digest(secret: str) -> str:
    """What the database keeps of a session id or token: a stolen table is useless."""
    return hashlib.sha256(secret.encode()).hexdigest()


def role_allows(role: str, needed: str) -> bool:
    if role not in ROLES or needed not in ROLES:
        return False
    return ROLES.index(role) >= ROLES.index(needed)


class PrincipalCache:
    """Who a session id / token digest belongs to, for a few seconds: the hot path (search,
    health) then costs no database round trip for authentication. Logout, revocation and user
    changes evict here; other gateway instances see them within `ttl_s`."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000) -> None:
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Any]] = {}

    def get(self, key: str) -> Any | None:
        hit = self._entries.get(key)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._entries[key]
            return None
        return hit[1]

    def put(self, key: str, value: Any) -> None:
        if self.ttl_s <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key] = (time.monotonic() + self.ttl_s, value)

    def evict(self, key: str | None = None) -> None:
        if key is None:
            self._entries.clear()
        else:
            self._entries.pop(key, None)


class LoginThrottle:
    """Slows password guessing: after `limit` failures for one user name within `window_s`,
    further attempts for that name are refused until the window has passed (no lockout of the
    account itself, so an attacker cannot lock the operator out for long)."""

    def __init__(self, limit: int = 5, window_s: float = 300.0) -> None:
        self.limit = limit
        self.window_s = window_s
        self._failures: dict[str, list[float]] = {}

    def _recent(self, username: str, now: float) -> list[float]:
        kept = [t for t in self._failures.get(username.lower(), []) if now - t < self.window_s]
        if kept:
            self._failures[username.lower()] = kept
        else:
            self._failures.pop(username.lower(), None)
        return kept

    def retry_after(self, username: str, now: float | None = None) -> float:
        """Seconds until `username` may try again (0: now)."""
        now = time.monotonic() if now is None else now
        recent = self._recent(username, now)
        if len(recent) < self.limit:
            return 0.0
        return max(0.0, self.window_s - (now - recent[-self.limit]))

    def failed(self, username: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if len(self._failures) > 10_000:
            self._failures.clear()
        self._failures.setdefault(username.lower(), []).append(now)

    def succeeded(self, username: str) -> None:
        self._failures.pop(username.lower(), None)
