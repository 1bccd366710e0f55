"""Sample Part 10 instances for tests and benchmarks: JPEG stills, MPEG-4 videos of any size."""

from __future__ import annotations

import io
import struct
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    MPEG4HP41,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    generate_uid,
)
from pynetdicom.dsutils import split_dataset

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
VERIFICATION = "1.2.840.10008.1.1"


def jpeg_bytes(width: int = 64, height: int = 48, seed: int = 0) -> bytes:
    from PIL import Image  # only tests and the benchmark make JPEGs

    img = Image.new("RGB", (width, height), ((seed * 37) % 256, (seed * 91) % 256, 128))
    out = io.BytesIO()
    img.save(out, format="JPEG", quality=90)
    return out.getvalue()


def make_instance(
    path: Path,
    *,
    kind: str = "jpeg",
    study_uid: str | None = None,
    sop_instance_uid: str | None = None,
    payload_bytes: int = 0,
    seed: int = 0,
) -> Dataset:
    """Write a Secondary Capture Part 10 file: `jpeg` (JPEG Baseline still), `raw` (Explicit VR
    LE, `payload_bytes` of 8-bit grey pixels) or `video` (MPEG-4 AVC, `payload_bytes` of opaque
    stream bytes: nothing here decodes it). Returns the dataset (pixel data included)."""
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Test^Sender"
    ds.PatientID = "SENDER-1"
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.InstanceNumber = seed + 1
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if kind == "jpeg":
        ts = JPEGBaseline8Bit
        ds.Rows, ds.Columns = 48, 64
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PlanarConfiguration = 0
        ds.PixelData = encapsulate([jpeg_bytes(seed=seed)])
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    elif kind == "raw":
        ts = ExplicitVRLittleEndian
        side = max(2, int((payload_bytes or 4096) ** 0.5))
        side += side % 2
        ds.Rows = ds.Columns = side
        ds.PixelData = bytes((i * 7 + seed) % 256 for i in range(256)) * (
            side * side // 256
        ) + bytes(side * side % 256)
    elif kind == "video":
        ts = MPEG4HP41
        ds.Rows, ds.Columns = 1080, 1920
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "YBR_PARTIAL_420"
        ds.PlanarConfiguration = 0
        ds.NumberOfFrames = 1
        ds.FrameIncrementPointer = 0x00181063
        ds.FrameTime = 33.3
        size = payload_bytes or 65536
        size += size % 2
        ds.PixelData = encapsulate([(bytes(range(256)) * (size // 256 + 1))[:size]], has_bot=False)
        ds["PixelData"].VR = "OB"
        ds["PixelData"].is_undefined_length = True
    else:
        raise ValueError(f"unknown kind {kind!r}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return ds


def write_large_video(path: Path, size: int) -> None:
    """A Part 10 MPEG-4 AVC instance with `size` bytes of opaque stream, written in 1 MB pieces
    (the generator never holds the video in memory): the multi-GB case of the sender's tests
    and benchmark."""
    make_instance(path, kind="video", payload_bytes=2)
    data = path.read_bytes()
    cut = data.rfind(b"\xe0\x7f\x10\x00")  # (7FE0,0010) Pixel Data, the last element
    size += size % 2
    with open(path, "wb") as fh:
        fh.write(data[:cut])
        fh.write(b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff")  # OB, undefined length
        fh.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", 0))  # empty Basic Offset Table
        fh.write(b"\xfe\xff\x00\xe0" + struct.pack("<I", size))  # one fragment
        block = bytes(range(256)) * 4096
        left = size
        while left:
            n = min(left, len(block))
            fh.write(block[:n])
            left -= n
        fh.write(b"\xfe\xff\xdd\xe0" + struct.pack("<I", 0))  # sequence delimiter


def dataset_bytes(path: Path) -> bytes:
    """The data set part of a Part 10 file (after the file meta): what crosses the wire."""
    _, offset = split_dataset(path)
    with open(path, "rb") as fh:
        fh.seek(offset)
        return fh.read()


StatusScript = Callable[[str, int], int | float]


def instances(root: Path, count: int, **kwargs: Any) -> Iterator[tuple[Path, Dataset]]:
    for n in range(count):
        path = root / f"i{n:05d}.dcm"
        yield path, make_instance(path, seed=n, **kwargs)


def dataset_bytes_of(part10: bytes) -> bytes:
    """The data set part of a Part 10 file held in memory."""
    with tempfile.NamedTemporaryFile(suffix=".dcm") as fh:
        fh.write(part10)
        fh.flush()
        return dataset_bytes(Path(fh.name))
