"""The File Meta Information written for each received instance: our direct encoding must give
pydicom's bytes exactly, and anything unusual must still go through pydicom."""

from __future__ import annotations

from io import BytesIO

import pytest
from cinebridge_common import conformance
from cinebridge_scp.receive import MetaRequest, _write_meta, file_meta_bytes, install
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import UID
from pynetdicom import dimse_messages
from pynetdicom.dsutils import create_file_meta

CT = "1.2.840.10008.5.1.4.1.1.2"


def pydicom_bytes(sop_class: str, sop_instance: str, syntax: str) -> bytes:
    out = BytesIO()
    meta = create_file_meta(
        sop_class_uid=UID(sop_class),
        sop_instance_uid=UID(sop_instance),
        transfer_syntax=UID(syntax),
    )
    write_file_meta_info(out, meta)
    return out.getvalue()


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "2.25." + "9" * 59, "1"])
@pytest.mark.parametrize("syntax", [uid for _, uid in conformance.SCP_TRANSFER_SYNTAXES])
def test_direct_encoding_equals_pydicom(instance: str, syntax: str) -> None:
    assert file_meta_bytes(MetaRequest(CT, instance, syntax)) == pydicom_bytes(CT, instance, syntax)


@pytest.mark.parametrize("instance", ["", "1.2.3\x00.4", "..x", "1.2 .3", "1." * 40, "é"])
def test_unusual_uids_fall_back_to_pydicom(instance: str) -> None:
    request = MetaRequest(CT, instance, "1.2.840.10008.1.2.1")
    assert file_meta_bytes(request) is None
    ours, theirs = BytesIO(), BytesIO()
    try:
        write_file_meta_info(
            theirs,
            create_file_meta(
                sop_class_uid=UID(CT),
                sop_instance_uid=UID(instance),
                transfer_syntax=UID("1.2.840.10008.1.2.1"),
            ),
        )
    except Exception as exc:  # pydicom refuses it: so must we, with the same error
        with pytest.raises(type(exc)):
            _write_meta(ours, request)
    else:
        _write_meta(ours, request)
        assert ours.getvalue() == theirs.getvalue()


def test_installed_into_pynetdicom() -> None:
    install()
    meta = dimse_messages.create_file_meta(
        sop_class_uid=UID(CT),
        sop_instance_uid=UID("1.2.3"),
        transfer_syntax=UID("1.2.840.10008.1.2"),
    )
    out = BytesIO()
    dimse_messages.write_file_meta_info(out, meta)
    assert out.getvalue() == pydicom_bytes(CT, "1.2.3", "1.2.840.10008.1.2")
