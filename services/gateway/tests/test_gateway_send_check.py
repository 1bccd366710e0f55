"""The Part 10 check of `POST /api/v1/send/{destination}` on files made with pydicom."""

from __future__ import annotations

from pathlib import Path

import pytest
from cinebridge_gateway.routes_send import NotPart10, read_identity
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def part10(path: Path, *, meta_differs: bool = False, preamble: bool = True) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.Rows = ds.Columns = 2
    ds.BitsAllocated = 8
    ds.PixelData = b"\0" * 4
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    data = path.read_bytes()
    if meta_differs:  # the meta (written first) names another instance of the same length
        uid = str(ds.SOPInstanceUID).encode()
        other = uid[:-1] + (b"1" if uid[-1:] != b"1" else b"2")
        data = data.replace(uid, other, 1)
    path.write_bytes(data if preamble else data[132:])
    return ds


def test_a_part10_file_gives_its_sop_class_instance_and_transfer_syntax(tmp_path: Path) -> None:
    ds = part10(tmp_path / "a.dcm")
    identity = read_identity(tmp_path / "a.dcm")
    assert identity.sop_class_uid == SecondaryCaptureImageStorage
    assert identity.sop_instance_uid == ds.SOPInstanceUID
    assert identity.transfer_syntax_uid == ExplicitVRLittleEndian


def test_files_that_are_not_part10_are_refused_with_the_reason(tmp_path: Path) -> None:
    part10(tmp_path / "bare.dcm", preamble=False)
    with pytest.raises(NotPart10, match="DICM"):
        read_identity(tmp_path / "bare.dcm")
    part10(tmp_path / "mismatch.dcm", meta_differs=True)
    with pytest.raises(NotPart10, match=r"\(0008,0018\) differs"):
        read_identity(tmp_path / "mismatch.dcm")
    (tmp_path / "text.txt").write_bytes(b"x" * 128 + b"DICM" + b"garbage")
    with pytest.raises(NotPart10):
        read_identity(tmp_path / "text.txt")
    (tmp_path / "short").write_bytes(b"DICM")
    with pytest.raises(NotPart10, match="preamble"):
        read_identity(tmp_path / "short")
