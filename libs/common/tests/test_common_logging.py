"""One log format; patient data redacted above DEBUG."""

from __future__ import annotations

import logging

from cinebridge_common.logging import KeyValueFormatter, kv


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
