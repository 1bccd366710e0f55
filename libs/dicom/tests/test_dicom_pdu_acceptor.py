"""Our Upper Layer codec against pynetdicom's (an independent implementation of PS3.8/PS3.7)."""

from __future__ import annotations

import pytest
from cinebridge_dicom import dimse, negotiation, pdu
from pydicom.dataset import Dataset
from pynetdicom import build_context
from pynetdicom.dsutils import encode as pydicom_encode
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
)

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
ILE = "1.2.840.10008.1.2"


def pynetdicom_rq(max_pdu: int = 16384, roles: bool = False) -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = pdu.APPLICATION_CONTEXT
    primitive.calling_ae_title = "MODALITY1"
    primitive.called_ae_title = "CINEBRIDGE"
    contexts = [build_context("1.2.840.10008.1.1"), build_context(CT, [ELE, ILE])]
    for n, cx in enumerate(contexts):
        cx.context_id = 2 * n + 1
    primitive.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = "PYNETDICOM_304"
    items: list[object] = [length, impl, version]
    if roles:
        role = SCP_SCU_RoleSelectionNegotiation()
        role.sop_class_uid = CT
        role.scu_role = True
        role.scp_role = False
        items.append(role)
    primitive.user_information = items
    rq = A_ASSOCIATE_RQ()
    rq.from_primitive(primitive)
    return bytes(rq.encode())


def test_parse_associate_rq_from_pynetdicom() -> None:
    raw = pynetdicom_rq(max_pdu=32768, roles=True)
    rq = pdu.parse_associate_rq(raw[6:])
    assert (rq.called_ae, rq.calling_ae, rq.protocol_version) == ("CINEBRIDGE", "MODALITY1", 1)
    assert rq.application_context == pdu.APPLICATION_CONTEXT
    assert [(c.id, c.abstract_syntax, c.transfer_syntaxes) for c in rq.contexts] == [
        (1, "1.2.840.10008.1.1", (ILE, ELE, "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2")),
        (3, CT, (ELE, ILE)),
    ]
    assert rq.max_pdu == 32768 and rq.implementation_version_name == "PYNETDICOM_304"
    assert rq.roles == {CT: (1, 0)}


def test_associate_ac_decodes_in_pynetdicom() -> None:
    rq = pdu.parse_associate_rq(pynetdicom_rq(roles=True)[6:])
    results, roles = negotiation.negotiate(
        rq, {"1.2.840.10008.1.1": frozenset([ILE]), CT: frozenset([ILE])}
    )
    raw = pdu.associate_ac(rq, results, roles, 1 << 20, "1.2.3.4", "CINEBRIDGE_01")
    ac = A_ASSOCIATE_AC()
    ac.decode(raw)
    primitive = ac.to_primitive()
    assert primitive.called_ae_title == "CINEBRIDGE"
    assert primitive.calling_ae_title == "MODALITY1"
    got = [
        (cx.context_id, cx.result, str(cx.transfer_syntax[0]))
        for cx in primitive.presentation_context_definition_results_list
    ]
    assert got == [(1, 0, ILE), (3, 0, ILE)]
    assert primitive.maximum_length_received == 1 << 20
    assert primitive.implementation_class_uid == "1.2.3.4"
    role = [
        i for i in primitive.user_information if isinstance(i, SCP_SCU_RoleSelectionNegotiation)
    ]
    assert role and role[0].scu_role and not role[0].scp_role


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[:60], id="shorter than fixed fields"),
        pytest.param(lambda b: b[:68] + b"\x10\x00\xff\xff" + b[72:], id="item length lies"),
        pytest.param(lambda b: b[:68], id="no items"),
        pytest.param(lambda b: b + b"\x99\x00\x00\x00", id="unknown item"),
        pytest.param(lambda b: b[:4] + b"\xff" * 16 + b[20:], id="non-ascii called AE"),
    ],
)
def test_malformed_associate_rq_raises(mutate: object) -> None:
    body = pynetdicom_rq()[6:]
    with pytest.raises(pdu.ProtocolError):
        pdu.parse_associate_rq(mutate(body))  # type: ignore[operator]


def test_even_or_repeated_context_id_refused() -> None:
    body = bytearray(pynetdicom_rq()[6:])
    first = body.index(b"\x20\x00", 68)
    body[first + 4] = 2
    with pytest.raises(pdu.ProtocolError, match="even or repeated"):
        pdu.parse_associate_rq(bytes(body))


def _command(**elements: object) -> bytes:
    ds = Dataset()
    for key, value in elements.items():
        setattr(ds, key, value)
    encoded = pydicom_encode(ds, True, True)
    assert encoded is not None
    group = Dataset()
    group.CommandGroupLength = len(encoded)
    head = pydicom_encode(group, True, True)
    assert head is not None
    return head + encoded


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45"])
@pytest.mark.parametrize("status", [0x0000, 0xA700, 0x0110])
def test_store_response_equals_pydicom_encoding(instance: str, status: int) -> None:
    ours = dimse.response(dimse.C_STORE_RSP, 7, status, CT, instance)
    theirs = _command(
        AffectedSOPClassUID=CT,
        CommandField=0x8001,
        MessageIDBeingRespondedTo=7,
        CommandDataSetType=0x0101,
        Status=status,
        AffectedSOPInstanceUID=instance,
    )
    assert ours == theirs


def test_echo_response_equals_pydicom_encoding() -> None:
    ours = dimse.response(dimse.C_ECHO_RSP, 65535, 0, "1.2.840.10008.1.1")
    theirs = _command(
        AffectedSOPClassUID="1.2.840.10008.1.1",
        CommandField=0x8030,
        MessageIDBeingRespondedTo=65535,
        CommandDataSetType=0x0101,
        Status=0,
    )
    assert ours == theirs


def test_parse_command_reads_pydicom_encoding() -> None:
    raw = _command(
        AffectedSOPClassUID=CT,
        CommandField=1,
        MessageID=9,
        Priority=0,
        CommandDataSetType=0,
        AffectedSOPInstanceUID="1.2.3",
    )
    elements = dimse.parse_command(raw)
    assert dimse.command_us(elements, 0x0100) == 1 and dimse.command_us(elements, 0x0110) == 9
    assert (
        dimse.command_ui(elements, 0x0002) == CT and dimse.command_ui(elements, 0x1000) == "1.2.3"
    )
    assert dimse.command_us(elements, 0x0900) is None
