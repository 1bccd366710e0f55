"""One log format for every service: `time level service event k=v ...`, no PHI above DEBUG."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from typing import Any

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


class KeyValueFormatter(logging.Formatter):
    """Renders `extra={"kv": {...}}` as sorted key=value pairs after the message."""

    def __init__(self, service: str) -> None:
        super().__init__("%(asctime)s %(levelname)s " + service + " %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        kv: Mapping[str, Any] = getattr(record, "kv", {}) or {}
        if not kv:
            return base
        parts = []
        for key, value in kv.items():
            if key in PHI_KEYS and record.levelno > logging.DEBUG:
                value = "<redacted>"
            parts.append(f"{key}={_quote(value)}")
        return base + " " + " ".join(parts)


def _quote(value: Any) -> str:
    text = str(value)
    return f'"{text}"' if (" " in text or not text) else text


def configure_logging(service: str, level: str = "INFO") -> None:
    """Configure the root logger once for a service process."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(KeyValueFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs identifiers (PHI) at INFO/DEBUG; keep it at WARNING unless debugging.
    if level.upper() != "DEBUG":
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def kv(**pairs: Any) -> dict[str, Any]:
    """`log.info("stored", extra=kv(sop_uid=...))` helper."""
    return {"kv": pairs}
