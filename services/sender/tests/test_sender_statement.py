"""The Storage Client's part of the conformance statement: what `contexts_for` proposes for each
kind of object the station sends, its destinations and its security; the Storage Commitment
Client's section."""

from __future__ import annotations

from cinebridge_common.messages import Destination
from cinebridge_common.messages.conformance import SenderConformance
from cinebridge_sender import statement
from cinebridge_sender.settings import SenderSettings

VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"
H264, JPEG, ILE, ELE = (
    "1.2.840.10008.1.2.4.102",
    "1.2.840.10008.1.2.4.50",
    "1.2.840.10008.1.2",
    "1.2.840.10008.1.2.1",
)


def _syntaxes(reply: object, uid: str) -> list[str]:
    storage = reply.application_entities[0]  # type: ignore[attr-defined]
    [sop] = [s for s in storage.sop_classes if s.uid == uid]
    assert sop.role == "SCU"
    return [t.uid for t in sop.transfer_syntaxes]


def test_own_syntax_then_implicit_vr_and_decompressed_stills_when_a_destination_asks() -> None:
    request = SenderConformance(objects=[(VIDEO_ENDOSCOPIC, H264), (VL_ENDOSCOPIC, JPEG)])
    pacs = Destination(name="PACS", ae_title="PACS", host="pacs", port=104, tls=True)
    reply = statement.describe(request, [pacs], "SPACS", SenderSettings())
    assert _syntaxes(reply, VIDEO_ENDOSCOPIC) == [H264, ILE]
    assert _syntaxes(reply, VL_ENDOSCOPIC) == [JPEG, ILE]
    storage, echo, _commitment = reply.application_entities
    assert storage.peers == ["PACS@pacs:104 (TLS) [PACS]"] and storage.ae_title == "SPACS"
    assert storage.security.startswith("TLS") and echo.sop_classes[0].uid == "1.2.840.10008.1.1"

    viewer = pacs.model_copy(update={"profile": "decompress-stills", "tls": False})
    reply = statement.describe(request, [viewer], "SPACS", SenderSettings())
    assert _syntaxes(reply, VL_ENDOSCOPIC) == [JPEG, ILE, ELE]
    assert reply.application_entities[0].security.startswith("none")


def test_dicomweb_destinations_are_listed_apart_from_the_associations() -> None:
    request = SenderConformance(objects=[(VL_ENDOSCOPIC, JPEG)])
    pacs = Destination(name="PACS", ae_title="PACS", host="pacs", port=104)
    web = Destination(name="cloud", kind="dicomweb", base_url="https://archive/dicom-web")
    storage, _, _ = statement.describe(
        request, [pacs, web], "SPACS", SenderSettings()
    ).application_entities
    assert storage.peers == ["PACS@pacs:104 [PACS]"]
    policy = storage.policies["DICOMweb destinations (STOW-RS, PS3.18 §10.5; echo by QIDO-RS)"]
    assert policy == "https://archive/dicom-web [cloud]"


def test_storage_commitment_client_section() -> None:
    """PS3.4 Annex J as the statement says it (PS3.2 A.4.2): SOP class and role, the destinations
    that require commitment with their time-out and retries, the activity and statuses."""
    request = SenderConformance(objects=[(VL_ENDOSCOPIC, JPEG)])
    pacs = Destination(
        name="PACS",
        ae_title="PACS",
        host="pacs",
        port=104,
        commitment_required=True,
        commitment_timeout_s=600,
        commitment_retries=2,
    )
    other = Destination(name="viewer", ae_title="VIEW", host="view", port=104)
    *_, commitment = statement.describe(
        request, [pacs, other], "SPACS", SenderSettings()
    ).application_entities
    assert commitment.name == "Storage Commitment Client" and commitment.ae_title == "SPACS"
    [sop] = commitment.sop_classes
    assert (sop.uid, sop.role) == ("1.2.840.10008.1.20.1", "SCU")
    assert [t.uid for t in sop.transfer_syntaxes] == [ELE, ILE]
    assert commitment.peers == ["PACS@pacs:104 [PACS]"]
    assert commitment.policies["Report time-out, retries"] == "PACS: 600 s, 2"
    assert "Failed SOP Sequence" in commitment.activity
    assert {(r.service, r.code) for r in commitment.statuses} >= {("N-ACTION-RSP", "0000")}
