"""Presentation context negotiation and the AE's configuration."""

from __future__ import annotations

import pytest
from cinebridge_common import conformance
from cinebridge_scp.listener import preferred_transfer_syntaxes, supported_contexts
from cinebridge_scp.negotiation import negotiate_in_requestor_order
from cinebridge_scp.settings import ScpSettings
from pydantic import ValidationError
from pynetdicom import build_context

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
ELE = "1.2.840.10008.1.2.1"
ILE = "1.2.840.10008.1.2"


def negotiate(*proposals: tuple[str, list[str]]) -> list[tuple[int, str]]:
    contexts = []
    for n, (abstract, syntaxes) in enumerate(proposals):
        cx = build_context(abstract, syntaxes)
        cx.context_id = 2 * n + 1
        contexts.append(cx)
    results, _ = negotiate_in_requestor_order(contexts, supported_contexts(), {})
    return [(int(cx.result), str(cx.transfer_syntax[0])) for cx in results]


def test_supported_contexts_cover_tables_22_and_23() -> None:
    contexts = supported_contexts()
    assert len(contexts) == 1 + len(conformance.STORAGE_SOP_CLASSES)
    assert str(contexts[0].abstract_syntax) == conformance.VERIFICATION_SOP_CLASS[1]
    assert sorted(preferred_transfer_syntaxes()) == sorted(
        uid for _, uid in conformance.SCP_TRANSFER_SYNTAXES
    )
    assert all(len(cx.transfer_syntax) == 45 for cx in contexts[1:])


def test_requestor_order_wins() -> None:
    assert negotiate((CT, [JPEG, ELE, ILE])) == [(0, JPEG)]
    assert negotiate((CT, [ILE, ELE])) == [(0, ILE)]


def test_unsupported_syntax_and_class() -> None:
    assert negotiate((CT, ["1.2.840.10008.1.2.4.201"]))[0][0] == 4
    assert negotiate(("1.2.3.4.5.6", [ELE]))[0][0] == 3
    assert negotiate(("1.2.840.10008.1.1", [ELE]))[0][0] == 4  # Verification: ILE only


def test_settings_defaults_follow_table_25_and_dev_port() -> None:
    s = ScpSettings()
    assert s.scp_ae_title == "CINEBRIDGE" and s.scp_port == 11112
    assert s.scp_host == "127.0.0.1" and s.scp_tls_port == 2762
    assert s.effective_max_associations() >= 16
    assert not s.tls_enabled


@pytest.mark.parametrize(
    "bad",
    [
        {"scp_ae_title": ""},
        {"scp_ae_title": "X" * 17},
        {"scp_max_pdu": 100},
        {"scp_tls_cert": "/x.pem"},
    ],
)
def test_settings_refuse(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        ScpSettings(**bad)  # type: ignore[arg-type]


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CB_SCP_PORT", "104")
    monkeypatch.setenv("CB_SCP_ALLOWED_CALLING_AE_TITLES", '["ENDO1","US2"]')
    s = ScpSettings()
    assert s.scp_port == 104 and s.scp_allowed_calling_ae_titles == ["ENDO1", "US2"]


def test_worker_environment_carries_the_effective_settings() -> None:
    from cinebridge_scp.workers import child_environment
    from pydantic import SecretStr

    s = ScpSettings(
        scp_port=11113,
        scp_workers=2,
        scp_allowed_calling_ae_titles=["A", "B"],
        scp_require_called_ae=False,
        database_url=SecretStr("postgresql://u:pw@h/db"),
        instance_id="box1",
    )
    env = child_environment(s, 1)
    assert env["CB_SCP_PORT"] == "11113" and env["CB_SCP_WORKER_INDEX"] == "1"
    assert env["CB_DATABASE_URL"] == "postgresql://u:pw@h/db"
    assert env["CB_INSTANCE_ID"] == "box1-w1" and env["CB_HEALTH_PORT"] == "0"
    assert env["CB_SCP_REQUIRE_CALLED_AE"] == "false"
    assert "CB_SCP_TLS_CERT" not in env
    import os

    os.environ.update({k: v for k, v in env.items() if k.startswith("CB_")})
    try:
        again = ScpSettings()
        assert again.scp_allowed_calling_ae_titles == ["A", "B"] and again.scp_worker_index == 1
    finally:
        for key in [k for k in env if k.startswith("CB_")]:
            os.environ.pop(key, None)
