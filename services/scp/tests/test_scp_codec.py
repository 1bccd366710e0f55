"""Direct command-set encoding: byte-identical to pydicom, pydicom for anything unusual."""

from __future__ import annotations

from io import BytesIO

import pytest
from cinebridge_scp import codec
from pydicom.dataset import Dataset
from pynetdicom import dimse_messages
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode as pydicom_encode

CT = "1.2.840.10008.5.1.4.1.1.2"


def store_rsp(status: int, instance: str = "1.2.3.45") -> Dataset:
    primitive = C_STORE()
    primitive.MessageIDBeingRespondedTo = 7
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = instance
    primitive.Status = status
    msg = dimse_messages.C_STORE_RSP()
    msg.primitive_to_message(primitive)
    return msg.command_set


def store_rq() -> Dataset:
    primitive = C_STORE()
    primitive.MessageID = 65535
    primitive.AffectedSOPClassUID = CT
    primitive.AffectedSOPInstanceUID = "1.2.3.4"
    primitive.Priority = 2
    primitive.MoveOriginatorApplicationEntityTitle = "MOVER"
    primitive.MoveOriginatorMessageID = 3
    primitive.DataSet = BytesIO(b"\0")
    msg = dimse_messages.C_STORE_RQ()
    msg.primitive_to_message(primitive)
    return msg.command_set


def echo_rsp() -> Dataset:
    primitive = C_ECHO()
    primitive.MessageIDBeingRespondedTo = 1
    primitive.AffectedSOPClassUID = "1.2.840.10008.1.1"
    primitive.Status = 0
    msg = dimse_messages.C_ECHO_RSP()
    msg.primitive_to_message(primitive)
    return msg.command_set


@pytest.mark.parametrize(
    "command",
    [
        store_rsp(0x0000),
        store_rsp(0xA700),
        store_rsp(0x0110, "1.2.3.4"),
        store_rsp(0xB000, "2.25." + "1" * 59),
        store_rq(),
        echo_rsp(),
    ],
)
def test_direct_encoding_equals_pydicom(command: Dataset) -> None:
    ours = codec.encode_command(command)
    assert ours is not None
    assert ours == pydicom_encode(command, True, True)
    assert codec.encode(command, True, True) == ours


def test_unusual_elements_go_to_pydicom() -> None:
    command = store_rsp(0x0110)
    command.ErrorComment = "malformed dataset"  # (0000,0902) LO: not in the table
    assert codec.encode_command(command) is None
    assert codec.encode(command, True, True) == pydicom_encode(command, True, True)
    odd = store_rsp(0)
    odd.AffectedSOPInstanceUID = "1.2.é"
    assert codec.encode_command(odd) is None
    assert codec.encode(odd, True, True) == pydicom_encode(odd, True, True)


def test_other_encodings_go_to_pydicom() -> None:
    command = store_rsp(0)
    assert codec.encode(command, False, True) == pydicom_encode(command, False, True)
