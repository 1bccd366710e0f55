"""The shared Upper Layer encodings against independent decoders (pynetdicom, pydicom)."""

from __future__ import annotations

import struct
from io import BytesIO

import pytest
from cinebridge_dicom import dimse, pdu
from pydicom.filereader import read_dataset
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext

CT = "1.2.840.10008.5.1.4.1.1.2"
ELE = "1.2.840.10008.1.2.1"
ILE = "1.2.840.10008.1.2"


def test_associate_rq_decodes_with_pynetdicom() -> None:
    raw = pdu.associate_rq(
        "PACS", "SPACS", [(1, CT, [ELE]), (3, CT, [ILE, ELE])], 32768, "1.2.3.4", "CB_TEST"
    )
    rq = A_ASSOCIATE_RQ()
    rq.decode(raw)
    assert (rq.called_ae_title, rq.calling_ae_title) == ("PACS", "SPACS")
    assert rq.application_context_name == pdu.APPLICATION_CONTEXT
    contexts = {cx.context_id: cx for cx in rq.presentation_context}
    assert contexts[3].transfer_syntax == [ILE, ELE]
    assert rq.user_information.maximum_length == 32768
    assert rq.user_information.implementation_class_uid == "1.2.3.4"
    assert rq.user_information.implementation_version_name == "CB_TEST"


@pytest.mark.parametrize("title", ["", "X" * 17, "A\\B", "É"])
def test_bad_ae_titles_refused(title: str) -> None:
    with pytest.raises(ValueError):
        pdu.ae_field(title)


def _pynetdicom_ac() -> bytes:
    primitive = A_ASSOCIATE()
    primitive.application_context_name = pdu.APPLICATION_CONTEXT
    primitive.calling_ae_title = "SCU"
    primitive.called_ae_title = "SCP"
    primitive.result = 0
    results = []
    for cid, result, ts in [(1, 0, ELE), (3, 4, ILE)]:
        cx = PresentationContext()
        cx.context_id = cid
        cx.result = result
        cx.transfer_syntax = [ts]
        results.append(cx)
    primitive.presentation_context_definition_results_list = results
    length = MaximumLengthNotification()
    length.maximum_length_received = 65536
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = "1.2.826.0.1.3680043.9.3811.3.0.4"
    primitive.user_information = [length, impl]
    ac = A_ASSOCIATE_AC()
    ac.from_primitive(primitive)
    return bytes(ac.encode())


def test_parse_associate_ac_from_pynetdicom() -> None:
    ac = pdu.parse_associate_ac(_pynetdicom_ac()[6:])
    assert ac.max_pdu == 65536
    assert ac.accepted(1) == ELE and ac.accepted(3) is None and ac.accepted(5) is None
    assert ac.contexts[3][0] == 4


def test_parse_associate_ac_refuses_lying_lengths() -> None:
    body = bytearray(_pynetdicom_ac()[6:])
    body[70:72] = b"\xff\xff"  # the first item's length
    with pytest.raises(pdu.ProtocolError):
        pdu.parse_associate_ac(bytes(body))


def test_rejection_words() -> None:
    assert pdu.rejection(bytes([0, 1, 1, 7])) == (True, "called AE title not recognised")
    assert pdu.rejection(bytes([0, 2, 3, 2])) == (False, "local limit exceeded")
    assert pdu.rejection(bytes([0, 1, 9, 9]))[1] == "source 9, reason 9"


def test_abort_and_p_data_bytes() -> None:
    assert pdu.a_abort() == bytes([7, 0, 0, 0, 0, 4, 0, 0, 0, 0])
    assert pdu.a_abort(6, source=2)[-2:] == bytes([2, 6])
    raw = pdu.p_data(3, 0x03, b"abcd")
    assert struct.unpack(">BBIIBB", raw[:12]) == (4, 0, 10, 6, 3, 3) and raw[12:] == b"abcd"


def test_command_set_round_trip_through_pydicom() -> None:
    raw = dimse.command_set(
        [
            (0x0002, pdu.uid_value(CT)),
            (0x0100, dimse.us(dimse.C_FIND_RQ)),
            (0x0110, dimse.us(9)),
            (0x0800, dimse.us(0x0000)),
        ]
    )
    ds = read_dataset(BytesIO(raw), is_implicit_VR=True, is_little_endian=True)
    assert ds.CommandGroupLength == len(raw) - 12
    assert ds.AffectedSOPClassUID == CT and ds.CommandField == 0x0020 and ds.MessageID == 9
    elements = dimse.parse_command(raw)
    assert dimse.command_us(elements, 0x0100) == 0x0020
    assert dimse.command_ui(elements, 0x0002) == CT
    assert dimse.command_us(elements, 0x0900) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"\x00\x00\x00",
        struct.pack("<HHI", 0, 0x100, 50) + b"\x01\x00",
        struct.pack("<HHI", 8, 0, 0),
    ],
)
def test_parse_command_refuses_garbage(raw: bytes) -> None:
    with pytest.raises(pdu.ProtocolError):
        dimse.parse_command(raw)
