"""One log format for every service, no PHI above DEBUG.

`text` (default): `time level service logger event k=v ...`. `json` (`CB_LOG_FORMAT=json`): one
JSON object per line with `time`, `level`, `service`, `instance`, `room`, `logger`, `event` and
the event's key/value pairs (study, media, delivery, association ids ...) as fields, for a log
collector. In both, the values of PHI_KEYS are rendered only at DEBUG.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .settings import ServiceSettings

#: Keys whose values may carry patient data; they are only rendered at DEBUG.
PHI_KEYS = frozenset(
    {
        "patient_name",
        "patient_id",
        "birth_date",
        "patient_birth_date",
        "accession",
        "accession_number",
    }
)
REDACTED = "<redacted>"


def _pairs(record: logging.LogRecord) -> Mapping[str, Any]:
    return getattr(record, "kv", {}) or {}


def _safe(key: str, value: Any, record: logging.LogRecord) -> Any:
    return REDACTED if key in PHI_KEYS and record.levelno > logging.DEBUG else value


class KeyValueFormatter(logging.Formatter):
    """Renders `extra={"kv": {...}}` as sorted key=value pairs after the message."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        kv = _pairs(record)
        if not kv:
            return base
        parts = [f"{key}={_quote(_safe(key, value, record))}" for key, value in kv.items()]
        return base + " " + " ".join(parts)


class JsonFormatter(logging.Formatter):
    """One JSON object per record; the process's identity first, then the event's pairs.

    A pair whose key names an identity field with another value (the SCP's `instance` is the
    received instance's id, not the process) is written as `<key>_id`.
    """

    def __init__(self, service: str, instance: str | None = None, room: str | None = None) -> None:
        super().__init__()
        self.identity: dict[str, str] = {"service": service}
        if instance:
            self.identity["instance"] = instance
        if room:
            self.identity["room"] = room

    def format(self, record: logging.LogRecord) -> str:
        when = dt.datetime.fromtimestamp(record.created, dt.UTC)
        out: dict[str, Any] = {
            "time": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            **self.identity,
            "logger": record.name,
            "event": record.getMessage(),
        }
        for key, value in _pairs(record).items():
            safe = _safe(key, value, record)
            if key not in out:
                out[key] = safe
            elif out[key] != safe:
                out[f"{key}_id" if f"{key}_id" not in out else f"kv_{key}"] = safe
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return json.dumps(out, default=str, ensure_ascii=False)


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def configure_logging(
    service: str,
    level: str = "INFO",
    *,
    fmt: str = "text",
    instance: str | None = None,
    room: str | None = None,
) -> None:
    """Configure the root logger once for a service process."""
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JsonFormatter(service, instance, room))
    elif fmt == "text":
        handler.setFormatter(KeyValueFormatter(service))
    else:
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs identifiers (PHI) at INFO/DEBUG; keep it at WARNING unless debugging.
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
        # While PostgreSQL is away asyncpg's pool logs a traceback every second for its lost
        # floor connection; the service's dependency watcher already says "dependency lost"
        # once and /readyz names the cause.
        logging.getLogger("asyncpg.pool").setLevel(logging.ERROR)


def configure_service_logging(
    service: str, settings: ServiceSettings, *, room: str | None = None
) -> None:
    """`configure_logging` from a service's settings (CB_LOG_LEVEL, CB_LOG_FORMAT, identity)."""
    configure_logging(
        service,
        settings.log_level,
        fmt=settings.log_format,
        instance=settings.instance_id,
        room=room,
    )


def kv(**pairs: Any) -> dict[str, Any]:
    """`log.info("stored", extra=kv(sop_uid=...))` helper."""
    return {"kv": pairs}
