"""Presentation context negotiation and the AE's configuration."""

from __future__ import annotations

import pytest
from cinebridge_common import conformance
from cinebridge_dicom.negotiation import negotiate as pdu_negotiate
from cinebridge_dicom.pdu import AssociateRq, ProposedContext
from cinebridge_scp.listener import preferred_transfer_syntaxes, supported_syntaxes
from cinebridge_scp.settings import ScpSettings
from pydantic import ValidationError

CT = "1.2.840.10008.5.1.4.1.1.2"
JPEG = "1.2.840.10008.1.2.4.50"
ELE = "1.2.840.10008.1.2.1"
ILE = "1.2.840.10008.1.2"


def request(
    *proposals: tuple[str, list[str]], roles: dict[str, tuple[int, int]] | None = None
) -> AssociateRq:
    contexts = tuple(
        ProposedContext(2 * n + 1, abstract, tuple(syntaxes))
        for n, (abstract, syntaxes) in enumerate(proposals)
    )
    return AssociateRq(
        1, "CINEBRIDGE", "SCU", "1.2.840.10008.3.1.1.1", contexts, 0, "1.2", "", roles or {}
    )


def negotiate(*proposals: tuple[str, list[str]]) -> list[tuple[int, str]]:
    results, _ = pdu_negotiate(request(*proposals), supported_syntaxes())
    return [(r.result, r.transfer_syntax) for r in results]


def test_supported_syntaxes_cover_tables_22_and_23() -> None:
    table = supported_syntaxes()
    assert len(table) == 1 + len(conformance.STORAGE_SOP_CLASSES)
    assert table[conformance.VERIFICATION_SOP_CLASS[1]] == {ILE}
    assert sorted(preferred_transfer_syntaxes()) == sorted(
        uid for _, uid in conformance.SCP_TRANSFER_SYNTAXES
    )
    storage = [v for k, v in table.items() if k != conformance.VERIFICATION_SOP_CLASS[1]]
    assert all(len(syntaxes) == 45 for syntaxes in storage)


def test_requestor_order_wins() -> None:
    assert negotiate((CT, [JPEG, ELE, ILE])) == [(0, JPEG)]
    assert negotiate((CT, [ILE, ELE])) == [(0, ILE)]
    assert negotiate((CT, ["1.2.840.10008.1.2.4.201", ELE])) == [(0, ELE)]


def test_unsupported_syntax_and_class() -> None:
    assert negotiate((CT, ["1.2.840.10008.1.2.4.201"]))[0][0] == 4
    assert negotiate(("1.2.3.4.5.6", [ELE]))[0][0] == 3
    assert negotiate(("1.2.840.10008.1.1", [ELE]))[0][0] == 4  # Verification: ILE only


def test_role_selection_scp_only() -> None:
    """PS3.7 D.3.3.4: we take the SCP role only; a requestor refusing the SCU role is refused."""
    rq = request((CT, [ELE]), roles={CT: (1, 1)})
    results, roles = pdu_negotiate(rq, supported_syntaxes())
    assert results[0].result == 0 and roles == {CT: (1, 0)}
    rq = request((CT, [ELE]), roles={CT: (0, 1)})
    results, roles = pdu_negotiate(rq, supported_syntaxes())
    assert results[0].result == 1 and roles == {CT: (0, 0)}


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


def test_worker_environment_carries_the_effective_settings(monkeypatch: pytest.MonkeyPatch) -> None:
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
    # monkeypatch puts back what the environment held before (several services share a test
    # process; none may inherit another's settings).
    for key, value in env.items():
        if key.startswith("CB_"):
            monkeypatch.setenv(key, value)
    again = ScpSettings()
    assert again.scp_allowed_calling_ae_titles == ["A", "B"] and again.scp_worker_index == 1


def test_advertised_host_for_the_settings_page_echo() -> None:
    assert ScpSettings().advertised_host == "127.0.0.1"
    assert ScpSettings(scp_host="0.0.0.0").advertised_host == "127.0.0.1"
    assert ScpSettings(scp_host="10.1.2.3").advertised_host == "10.1.2.3"
    assert ScpSettings(scp_host="0.0.0.0", scp_advertised_host="scp").advertised_host == "scp"


def test_storage_commitment_requestor_may_be_the_scp() -> None:
    """PS3.4 J.3.3: an archive reporting on its own association proposes SCU 0 / SCP 1 for the
    Storage Commitment Push Model; it gets both roles back as proposed, other classes do not."""
    sc_class = "1.2.840.10008.1.20.1"
    supported = {**supported_syntaxes(), sc_class: frozenset([ELE, ILE])}
    both = frozenset([sc_class])
    rq = request((sc_class, [ELE]), (CT, [ELE]), roles={sc_class: (0, 1), CT: (0, 1)})
    results, roles = pdu_negotiate(rq, supported, both)
    assert [r.result for r in results] == [0, 1]
    assert roles == {sc_class: (0, 1), CT: (0, 0)}
    results, roles = pdu_negotiate(
        request((sc_class, [ELE]), roles={sc_class: (1, 1)}), supported, both
    )
    assert results[0].result == 0 and roles == {sc_class: (1, 1)}
