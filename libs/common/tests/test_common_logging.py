"""One log format; patient data redacted above DEBUG."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.logging import JsonFormatter, KeyValueFormatter, configure_logging, kv
from cinebridge_common.settings import ServiceSettings
from pydantic import ValidationError


def _render(level: int, **pairs: object) -> str:
    record = logging.LogRecord("x", level, __file__, 1, "stored", None, None)
    record.kv = kv(**pairs)["kv"]
    return KeyValueFormatter("scp").format(record)


def test_key_values_rendered() -> None:
    line = _render(logging.INFO, sop_uid="1.2.3", size=10)
    assert "scp" in line and "stored" in line and "sop_uid=1.2.3" in line and "size=10" in line


def test_phi_redacted_above_debug() -> None:
    assert "DOE^JOHN" not in _render(logging.INFO, patient_name="DOE^JOHN")
    assert "<redacted>" in _render(logging.WARNING, patient_id="12345")
    assert "DOE^JOHN" in _render(logging.DEBUG, patient_name="DOE^JOHN")


# ---------------------------------------------------------------- CB_LOG_FORMAT=json


def _json(level: int, msg: str = "stored", exc: bool = False, **pairs: object) -> dict[str, Any]:
    exc_info = None
    if exc:
        try:
            raise ValueError("boom")
        except ValueError:
            exc_info = sys.exc_info()
    record = logging.LogRecord("cinebridge_scp.ingest", level, __file__, 1, msg, None, exc_info)
    record.kv = kv(**pairs)["kv"]
    line = JsonFormatter("scp", "box1-w0", "or1").format(record)
    assert "\n" not in line
    parsed = json.loads(line)
    assert isinstance(parsed, dict)
    return parsed


def test_json_line_carries_identity_and_ids() -> None:
    out = _json(logging.INFO, study="s-1", media="m-2", delivery="d-3", association="a-4")
    assert out["service"] == "scp" and out["instance"] == "box1-w0" and out["room"] == "or1"
    assert out["level"] == "INFO" and out["event"] == "stored"
    assert out["logger"] == "cinebridge_scp.ingest"
    assert out["time"].endswith("Z") and out["time"][:4].isdigit()
    ids = (out["study"], out["media"], out["delivery"], out["association"])
    assert ids == ("s-1", "m-2", "d-3", "a-4")


def test_json_redacts_phi_above_debug() -> None:
    out = _json(logging.INFO, patient_name="DOE^JOHN", patient_id="12345", media="m-1")
    assert out["patient_name"] == out["patient_id"] == "<redacted>" and out["media"] == "m-1"
    assert "DOE^JOHN" not in json.dumps(_json(logging.WARNING, patient_name="DOE^JOHN"))
    assert _json(logging.DEBUG, patient_name="DOE^JOHN")["patient_name"] == "DOE^JOHN"


def test_json_keeps_a_pair_that_collides_with_the_identity() -> None:
    out = _json(logging.INFO, instance="row-7", room="or1", service="scp")
    assert out["instance"] == "box1-w0" and out["instance_id"] == "row-7"
    assert "room_id" not in out and "service_id" not in out  # same value: written once


def test_json_includes_the_exception_and_odd_values() -> None:
    out = _json(logging.ERROR, "crashed", exc=True, path=Path("/x"), size=3)
    assert "ValueError: boom" in out["exception"]
    assert out["path"] == "/x" and out["size"] == 3


def test_configure_logging_json_writes_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    # configure_logging is for a whole service process: put back the root logger and the
    # levels it sets, since the rest of the suite runs in this process.
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    quieted = [logging.getLogger(name) for name in ("pynetdicom", "asyncpg.pool")]
    levels = [logger.level for logger in quieted]
    try:
        configure_logging("sender", "INFO", fmt="json", instance="i1")
        logging.getLogger("cinebridge_sender").info("sent", extra=kv(delivery="d-1"))
        logging.getLogger("cinebridge_sender").debug("hidden at INFO")
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
        for logger, old_level in zip(quieted, levels, strict=True):
            logger.setLevel(old_level)
    lines = [json.loads(x) for x in capsys.readouterr().err.splitlines()]
    assert lines == [
        {**lines[0], "service": "sender", "instance": "i1", "event": "sent", "delivery": "d-1"}
    ]
    assert "room" not in lines[0]


def test_unknown_format_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="log format"):
        configure_logging("scp", fmt="xml")
    monkeypatch.setenv("CB_LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        ServiceSettings()
    monkeypatch.setenv("CB_LOG_FORMAT", "json")
    assert ServiceSettings().log_format == "json"
