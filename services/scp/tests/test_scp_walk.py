"""The structural walker: complete files pass, every kind of truncation and overrun is caught."""

from __future__ import annotations

import io
import zlib
from pathlib import Path

import pytest
from cinebridge_scp.walk import MalformedDataset, walk_file
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)

PATIENT_NAME = (0x0010, 0x0010)


def make(tmp_path: Path, ts: str, *, depth: int = 2, encapsulated: bool = False) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.PatientName = "Doe^John"
    inner = Dataset()
    inner.CodeValue = "X"
    for _ in range(depth):
        outer = Dataset()
        outer.ContentSequence = Sequence([inner, Dataset()])
        inner = outer
    ds.ContentSequence = inner.ContentSequence
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = 8
    if encapsulated:
        ds.PixelData = encapsulate([b"\xff\xd8" + bytes(30) + b"\xff\xd9"] * 2)
        ds["PixelData"].VR = "OB"
    else:
        ds.PixelData = bytes(64)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    path = tmp_path / "x.dcm"
    little = ts != ExplicitVRBigEndian
    if ts == DeflatedExplicitVRLittleEndian:
        ds.save_as(path, enforce_file_format=True)
    else:
        ds.save_as(
            path,
            enforce_file_format=True,
            implicit_vr=ts == ImplicitVRLittleEndian,
            little_endian=little,
        )
    return path.read_bytes()


def walk(data: bytes, depth: int = 64) -> dict[tuple[int, int], bytes]:
    return walk_file(io.BytesIO(data), len(data), {PATIENT_NAME}, depth).values


@pytest.mark.parametrize(
    "ts",
    [
        ExplicitVRLittleEndian,
        ImplicitVRLittleEndian,
        ExplicitVRBigEndian,
        DeflatedExplicitVRLittleEndian,
    ],
)
def test_complete_files_pass(tmp_path: Path, ts: str) -> None:
    values = walk(make(tmp_path, ts))
    assert values[PATIENT_NAME].rstrip(b" ") == b"Doe^John"


def test_encapsulated_fragments_pass(tmp_path: Path) -> None:
    data = make(tmp_path, JPEGBaseline8Bit, encapsulated=True)
    assert walk(data)[PATIENT_NAME].startswith(b"Doe^John")


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGBaseline8Bit])
def test_every_truncation_is_caught(tmp_path: Path, ts: str) -> None:
    """A cut anywhere but between two top-level elements is refused (between two, the dataset
    is merely shorter and the attribute checks of ingest decide)."""
    data = make(tmp_path, ts, encapsulated=ts == JPEGBaseline8Bit)
    boundaries = _top_level_boundaries(tmp_path / "x.dcm")
    for cut in range(min(boundaries), len(data)):
        if cut in boundaries:
            walk(data[:cut])
        else:
            with pytest.raises(MalformedDataset):
                walk(data[:cut])


def _top_level_boundaries(path: Path) -> set[int]:
    ds = dcmread(path)
    data = path.read_bytes()
    implicit = ds.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
    meta_end = len(data) - _encoded_length(ds, len(ds), implicit)
    return {meta_end + _encoded_length(ds, n, implicit) for n in range(len(ds) + 1)}


def _encoded_length(ds: Dataset, count: int, implicit: bool) -> int:
    part = Dataset()
    for element in list(ds)[:count]:
        part.add(element)
    buffer = DicomBytesIO()
    buffer.is_little_endian, buffer.is_implicit_VR = True, implicit
    write_dataset(buffer, part)
    return len(buffer.getvalue())


def test_deflated_truncation_is_caught(tmp_path: Path) -> None:
    data = make(tmp_path, DeflatedExplicitVRLittleEndian)
    body = 144 + int.from_bytes(data[140:144], "little")  # after the file meta group
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    inflater.decompress(data[body:])
    stream_end = len(data) - len(inflater.unused_data)  # pydicom pads to an even length
    for cut in range(body + 1, stream_end):
        with pytest.raises(MalformedDataset):
            walk(data[:cut])


def test_nesting_limit(tmp_path: Path) -> None:
    data = make(tmp_path, ExplicitVRLittleEndian, depth=10)
    walk(data, depth=11)
    with pytest.raises(MalformedDataset, match="deeper"):
        walk(data, depth=5)


def test_length_overrunning_the_file(tmp_path: Path) -> None:
    data = bytearray(make(tmp_path, ExplicitVRLittleEndian))
    at = data.rfind(b"\xe0\x7f\x10\x00O")
    assert at > 0
    data[at + 8 : at + 12] = (10_000).to_bytes(4, "little")
    with pytest.raises(MalformedDataset):
        walk(bytes(data))


def test_not_part10() -> None:
    with pytest.raises(MalformedDataset, match="DICM"):
        walk(bytes(200))


def test_garbage_inflate_stream(tmp_path: Path) -> None:
    data = make(tmp_path, DeflatedExplicitVRLittleEndian)
    head = data[: data.index(b"1.2.840.10008.1.2.1.99") + 24]
    with pytest.raises(MalformedDataset):
        walk(head + zlib.compress(b"junk")[2:] + bytes(20))
