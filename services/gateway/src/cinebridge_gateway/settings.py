"""Settings of the gateway: where it listens, how sessions behave, where previews come from."""

from __future__ import annotations

from typing import Self

from cinebridge_common.settings import DEFAULT_SECRETS, ServiceSettings, is_loopback_host
from pydantic import Field, SecretStr, model_validator


class GatewaySettings(ServiceSettings):
    """`CB_GATEWAY_*` on top of the common `CB_*` settings."""

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    #: First start: the `admin` user gets this password; unset prints a one-time password.
    gateway_admin_password: SecretStr | None = None
    #: Idle timeout and absolute lifetime of a browser session.
    gateway_session_idle_s: float = 8 * 3600
    gateway_session_max_s: float = 24 * 3600
    #: Largest accepted request body (JSON); bigger bodies get 413 before they are read.
    gateway_max_body_bytes: int = 1 << 20
    #: Largest DICOM file `POST /api/v1/send/{destination}` takes (streamed to disk, not memory).
    gateway_send_max_bytes: int = 8 << 30
    #: Largest file the Room page's "Add file" accepts (streamed to the media store, not held
    #: in memory); bigger uploads get 413 and leave nothing behind.
    gateway_upload_max_bytes: int = 4 << 30
    #: The ops page lists studies stored at a destination that requires Storage Commitment and
    #: not committed this long after they were sent (PS3.4 Annex J).
    gateway_commitment_overdue_s: float = 3600.0
    #: Mark the session cookie Secure (set when a TLS proxy fronts the gateway).
    gateway_cookie_secure: bool = False
    #: {room: base_url} of each capture instance's MJPEG preview server (`/preview/<src>.mjpg`).
    gateway_preview_upstreams: dict[str, str] = {}
    #: A heartbeat older than this marks an instance "stale"; 3x this, "down".
    gateway_stale_after_s: float = 15.0
    #: Seconds a session/token lookup is cached in memory (0: every request asks the database).
    gateway_auth_cache_s: float = 5.0
    #: A database statement of a request with no answer this long (PostgreSQL hung rather than
    #: down, its disk stalled) fails: the request gets 503 and the page says the database is not
    #: answering, instead of waiting for it.
    gateway_db_timeout_s: float = Field(default=10.0, gt=0)
    #: /api/health without a login (it shows service names, states and versions, no patient
    #: data): for monitoring that cannot log in. Off: a session, an API token, or the token below.
    gateway_public_health: bool = False
    #: A bearer token that reads /api/health without the database (monitoring during outages).
    gateway_health_token: SecretStr | None = None
    #: Connections of the LOCAL search's own pool (`catalog_repository.open_search_pool`): on a
    #: small box more than a few only make PostgreSQL switch between the same cores.
    gateway_search_connections: int = 4
    #: Timeout of RPCs to other services (capture, worklist, sender echo).
    gateway_rpc_timeout_s: float = 10.0
    #: Longest wait for the converter to write an export (a burned-in caption re-encodes
    #: every recording of the study).
    gateway_export_timeout_s: float = 1800.0

    def bound_beyond_loopback(self) -> bool:
        return super().bound_beyond_loopback() or not is_loopback_host(self.gateway_host)

    @model_validator(mode="after")
    def _refuse_weak_admin(self) -> Self:
        pw = self.gateway_admin_password
        if pw is not None and pw.get_secret_value() in DEFAULT_SECRETS:
            raise ValueError("CB_GATEWAY_ADMIN_PASSWORD is a placeholder; choose a real password")
        return self
