"""Settings: environment only, safe defaults, default secrets refused beyond loopback."""

from __future__ import annotations

import pytest
from cinebridge_common.settings import ServiceSettings, is_loopback_host
from pydantic import ValidationError


def test_defaults_are_local(monkeypatch: pytest.MonkeyPatch) -> None:
    s = ServiceSettings()
    assert s.health_host == "127.0.0.1"
    assert s.nats_url.startswith("nats://127.0.0.1")


def test_environment_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_NATS_URL", "nats://bus:4222")
    assert ServiceSettings().nats_url == "nats://bus:4222"


def test_default_secret_refused_beyond_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_HEALTH_HOST", "0.0.0.0")
    with pytest.raises(ValidationError, match="CB_SECRET_KEY"):
        ServiceSettings()
    monkeypatch.setenv("CB_SECRET_KEY", "a-long-random-value-0123456789")
    assert ServiceSettings().bound_beyond_loopback()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("::1", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("10.0.0.5", False),
        ("", False),
    ],
)
def test_loopback_detection(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback
