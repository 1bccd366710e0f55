"""Settings from the environment: seed servers as JSON, Table 26 defaults, refusals."""

from __future__ import annotations

import pytest
from cinebridge_worklist import scu
from cinebridge_worklist.settings import WorklistSettings
from pydantic import ValidationError
from pydicom.dataset import Dataset


def test_seed_servers_come_from_json_and_limits_default_to_table_26(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(
        "CB_WORKLIST_SEED_SERVERS",
        '[{"id":"ris","host":"10.0.0.5","port":104,"called_ae":"RIS","modality":"ES"}]',
    )
    settings = WorklistSettings()
    (server,) = settings.worklist_seed_servers
    assert (server.id, server.port, server.called_ae, server.modality) == ("ris", 104, "RIS", "ES")
    assert server.calling_ae is None and server.wildcards is None
    assert settings.worklist_timeout_s == 10 and settings.worklist_connect_timeout_s == 10


@pytest.mark.parametrize(
    "server",
    [
        '{"id":"../x","host":"h","port":104,"called_ae":"RIS"}',
        '{"id":"ris","host":"h","port":70000,"called_ae":"RIS"}',
        '{"id":"ris","host":"h","port":104,"called_ae":"A\\\\B"}',
        '{"id":"ris","host":"h","port":104,"called_ae":"SEVENTEEN_CHARS_X"}',
    ],
)
def test_bad_seed_servers_are_refused(monkeypatch: pytest.MonkeyPatch, server: str) -> None:
    monkeypatch.setenv("CB_WORKLIST_SEED_SERVERS", f"[{server}]")
    with pytest.raises(ValidationError):
        WorklistSettings()


def test_invalid_ae_titles_never_reach_the_wire() -> None:
    for title in ("", "ÄRZTE", "A\\B", "X" * 17, "NUL\x00"):
        peer = scu.Peer(host="127.0.0.1", port=9, called_ae="RIS", calling_ae=title)
        result = scu.find_worklist(peer, Dataset(), scu.FindLimits(connect_timeout_s=1), "")
        assert result.outcome == "unreachable" and "AE title" in result.detail
