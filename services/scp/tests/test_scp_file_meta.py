"""The File Meta Information written ahead of each received data set (PS3.10 7.1)."""

from __future__ import annotations

from io import BytesIO

import pytest
from cinebridge_common import conformance
from cinebridge_scp.receive import file_meta_bytes
from pydicom.filereader import read_file_meta_info, read_preamble

CT = "1.2.840.10008.5.1.4.1.1.2"


def decode(raw: bytes) -> object:
    fp = BytesIO(raw + b"\x08\x00\x16\x00")  # a data set element follows the meta
    read_preamble(fp, False)
    from pydicom.filereader import _read_file_meta_info

    return _read_file_meta_info(fp)


@pytest.mark.parametrize("instance", ["1.2.3.4", "1.2.3.45", "2.25." + "9" * 59, "1"])
@pytest.mark.parametrize("syntax", [uid for _, uid in conformance.SCP_TRANSFER_SYNTAXES])
def test_pydicom_reads_what_we_write(instance: str, syntax: str) -> None:
    raw = file_meta_bytes(CT, instance, syntax, "1.2.3.4.5", "CINEBRIDGE_01", "MODALITY1")
    assert raw[128:132] == b"DICM"
    meta = decode(raw)
    assert meta.MediaStorageSOPClassUID == CT  # type: ignore[attr-defined]
    assert meta.MediaStorageSOPInstanceUID == instance  # type: ignore[attr-defined]
    assert meta.TransferSyntaxUID == syntax  # type: ignore[attr-defined]
    assert meta.ImplementationClassUID == "1.2.3.4.5"  # type: ignore[attr-defined]
    assert meta.ImplementationVersionName == "CINEBRIDGE_01"  # type: ignore[attr-defined]
    assert meta.SourceApplicationEntityTitle == "MODALITY1"  # type: ignore[attr-defined]
    assert meta.FileMetaInformationVersion == b"\x00\x01"  # type: ignore[attr-defined]
    length = meta.FileMetaInformationGroupLength  # type: ignore[attr-defined]
    assert length == len(raw) - 132 - 12


@pytest.mark.parametrize("hostile", ["../../etc/x\x00", "é" * 10, "1." * 60, "A\\B\x07"])
def test_peer_values_are_cleaned_and_bounded(hostile: str) -> None:
    raw = file_meta_bytes(CT, hostile, conformance.EXPLICIT_VR_LITTLE_ENDIAN, "1.2", "V", hostile)
    meta = decode(raw)
    uid = str(meta.MediaStorageSOPInstanceUID)  # type: ignore[attr-defined]
    assert len(uid) <= 64 and uid.isascii() and uid.isprintable()
    source = str(getattr(meta, "SourceApplicationEntityTitle", ""))
    assert len(source) <= 16 and "\\" not in source and source.isprintable()


def test_blank_source_ae_is_left_out() -> None:
    raw = file_meta_bytes(CT, "1.2", conformance.EXPLICIT_VR_LITTLE_ENDIAN, "1.2", "V", "  ")
    assert "SourceApplicationEntityTitle" not in decode(raw)  # type: ignore[operator]
    assert read_file_meta_info  # the public reader exists (used by dcmread)
