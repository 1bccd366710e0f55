"""First start: create the administrator from CB_GATEWAY_ADMIN_PASSWORD or a one-time password."""

from __future__ import annotations

import logging
import sys

from cinebridge_common.logging import kv

from .repository import Repository
from .security import hash_password, new_one_time_password
from .settings import GatewaySettings

log = logging.getLogger(__name__)
ADMIN = "admin"


async def ensure_admin(repo: Repository, settings: GatewaySettings) -> str | None:
    """Create `admin` when there is no user at all; returns the one-time password if generated."""
    if await repo.count_users() > 0:
        return None
    configured = settings.gateway_admin_password
    password = configured.get_secret_value() if configured else new_one_time_password()
    # A printed one-time password is changed at the first log-in (the UI asks for it).
    created = await repo.create_user(
        ADMIN, hash_password(password), "administrator", must_change_password=configured is None
    )
    if not created:
        return None  # another gateway instance created it first
    log.info("administrator created", extra=kv(user=ADMIN, from_env=configured is not None))
    if configured is None:
        # Printed once to the console, never logged; the first log-in must replace it.
        print(
            f"CineBridge gateway: one-time password for user 'admin': {password}",
            file=sys.stderr,
            flush=True,
        )
        return password
    return None
