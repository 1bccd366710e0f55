"""Typed settings shared by every service: environment only, safe local defaults."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from typing import Literal, Self

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: Placeholder secrets that ship in examples; refused when a service is reachable from the network.
DEFAULT_SECRETS = frozenset({"changeme", "cinebridge", "secret", "password", ""})


def is_loopback_host(host: str) -> bool:
    """True when `host` only accepts connections from this machine."""
    if host in ("localhost", ""):
        return host == "localhost"
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ServiceSettings(BaseSettings):
    """The settings every service has. Subclasses add their own with the same `CB_` prefix."""

    model_config = SettingsConfigDict(env_prefix="CB_", extra="ignore", frozen=True)

    nats_url: str = "nats://127.0.0.1:4222"
    database_url: SecretStr = SecretStr("postgresql://cinebridge@127.0.0.1:5432/cinebridge")
    media_root: Path = Path(".run/media")
    instance_id: str = Field(default_factory=socket.gethostname)
    log_level: str = "INFO"
    #: Log line format: `text` (`time level service logger event k=v ...`) or `json` (one JSON
    #: object per line with service, instance, room and the event's ids; for log collectors).
    log_format: Literal["text", "json"] = "text"
    #: Health and Prometheus metrics endpoint of this service (`/healthz`, `/metrics`).
    health_host: str = "127.0.0.1"
    health_port: int = 0
    heartbeat_interval_s: float = 5.0
    #: Published outbox rows are deleted after this many seconds (the table stays bounded).
    outbox_retention_s: float = 24 * 3600.0
    #: How often a service looks for work lost with NATS's JetStream store, besides at start
    #: and after its bus reconnected (`cinebridge_common.replay`).
    replay_interval_s: float = 300.0
    #: Below this many free bytes on the media store's filesystem the service is not ready and
    #: its health says `media: full` (captures, conversions and received instances need room).
    media_min_free_bytes: int = 64 * 1024 * 1024
    #: Temporary files of the media store untouched this long are swept (a writer that was
    #: killed and whose process never ran again; a process started again empties its own).
    media_temp_max_age_s: float = 3600.0
    #: DICOM UID root of the organisation; empty means UUID-derived `2.25.` UIDs (PS3.5 B.2).
    org_uid_root: str = ""
    #: Secret used to sign sessions/tokens; must be set when anything binds beyond loopback.
    secret_key: SecretStr = SecretStr("changeme")
    shutdown_timeout_s: float = 8.0

    def bound_beyond_loopback(self) -> bool:
        """Whether any listener of this service is reachable from other machines."""
        return not is_loopback_host(self.health_host)

    @model_validator(mode="after")
    def _refuse_default_secrets(self) -> Self:
        if self.bound_beyond_loopback() and self.secret_key.get_secret_value() in DEFAULT_SECRETS:
            raise ValueError(
                "CB_SECRET_KEY is a default placeholder while a listener binds beyond loopback; "
                "set CB_SECRET_KEY to a long random value (e.g. `openssl rand -hex 32`)"
            )
        return self
