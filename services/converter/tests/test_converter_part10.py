"""The Part 10 copy of a bit stream (`part10.write_encapsulated`): a large stream goes to the
disk with direct I/O, byte for byte what the page-cache path writes, with both SHA-256s from
the one read of the source; a source kept as it is must still match its recorded SHA-256; a
store that cannot take the file is a lack of resources."""

from __future__ import annotations

import datetime as dt
import fcntl
import hashlib
import os
import resource
import struct
import threading
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.store import sha256_file
from cinebridge_converter import convert, mwl, part10
from cinebridge_converter.dicomize import Station
from cinebridge_converter.errors import RESOURCE_ERRNOS, BadMedia
from cinebridge_testkit.media import make_video
from pydicom.dataset import Dataset, FileMetaDataset

H264 = "1.2.840.10008.1.2.4.102"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"


def _dataset() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = H264
    ds.file_meta.MediaStorageSOPClassUID = VIDEO_PHOTOGRAPHIC
    ds.file_meta.MediaStorageSOPInstanceUID = "2.25.7"
    ds.SOPClassUID = VIDEO_PHOTOGRAPHIC
    ds.SOPInstanceUID = "2.25.7"
    ds.PatientName = "Doe^Jane"
    return ds


def _expected(ds: Dataset, data: bytes) -> bytes:
    """PS3.5 A.4: Pixel Data OB of undefined length, an empty Basic Offset Table item, one
    fragment (even length, one pad byte), the Sequence Delimitation Item."""
    padded = data + b"\x00" * (len(data) & 1)
    return (
        part10.header_bytes(ds)
        + b"\xe0\x7f\x10\x00OB\x00\x00\xff\xff\xff\xff"
        + b"\xfe\xff\x00\xe0"
        + struct.pack("<I", 0)
        + b"\xfe\xff\x00\xe0"
        + struct.pack("<I", len(padded))
        + padded
        + b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    )


def _head_length(ds: Dataset) -> int:
    return len(_expected(ds, b"")) - 8


@pytest.mark.parametrize(
    "extra",
    [
        0,  # the threshold itself
        1,  # odd: one pad byte
        "tail splits",  # the last block has room for part of the tail only
        "tail alone",  # the source ends a block exactly: the tail is a block of its own
    ],
)
def test_a_large_stream_is_written_direct_and_byte_for_byte(tmp_path: Path, extra: Any) -> None:
    ds = _dataset()
    head = _head_length(ds)
    blocks = part10.DIRECT_FROM // part10.CHUNK + 1
    size = {
        "tail splits": blocks * part10.CHUNK - head - 5,
        "tail alone": blocks * part10.CHUNK - head,
    }.get(extra, part10.DIRECT_FROM + (extra if isinstance(extra, int) else 0))
    data = os.urandom(size)
    source = tmp_path / "stream.bin"
    source.write_bytes(data)
    direct: list[bool] = []
    target = tmp_path / "out.dcm"
    with open(target, "xb") as out:

        def progress(_fraction: float) -> None:  # called by the copying thread, mid-copy
            direct.append(bool(fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT))

        written = part10.write_encapsulated(out, ds, source, progress=progress)
        assert not fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT, "left on"
    assert direct and all(direct), "the copy did not use direct I/O"
    expected = _expected(ds, data)
    assert target.read_bytes() == expected
    assert written.size == len(expected)
    assert written.sha256 == hashlib.sha256(expected).hexdigest()
    assert written.source_sha256 == hashlib.sha256(data).hexdigest()


def test_a_small_stream_goes_through_the_page_cache(tmp_path: Path) -> None:
    ds = _dataset()
    data = os.urandom(3 * part10.CHUNK + 3)
    source = tmp_path / "stream.bin"
    source.write_bytes(data)
    direct: list[bool] = []
    target = tmp_path / "out.dcm"
    with open(target, "xb") as out:

        def progress(_fraction: float) -> None:
            direct.append(bool(fcntl.fcntl(out.fileno(), fcntl.F_GETFL) & os.O_DIRECT))

        written = part10.write_encapsulated(out, ds, source, progress=progress, hash_source=False)
    assert direct and not any(direct)
    assert target.read_bytes() == _expected(ds, data)
    assert written.sha256 == hashlib.sha256(_expected(ds, data)).hexdigest()
    assert written.source_sha256 is None


def test_a_full_store_fails_the_direct_copy_as_a_lack_of_resources(tmp_path: Path) -> None:
    """A file size limit cuts a direct write short (and an unaligned one is refused): the
    error is the limit's, which a retry may get past, never a bad-media verdict."""
    ds = _dataset()
    source = tmp_path / "stream.bin"
    source.write_bytes(os.urandom(part10.DIRECT_FROM + 11))
    limit = resource.getrlimit(resource.RLIMIT_FSIZE)
    with open(tmp_path / "out.dcm", "xb") as out:
        resource.setrlimit(resource.RLIMIT_FSIZE, ((6 << 20) + 100, limit[1]))
        try:
            with pytest.raises(OSError) as failed:
                part10.write_encapsulated(out, ds, source)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, limit)
    assert failed.value.errno in RESOURCE_ERRNOS


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "page-cache"])
def test_a_source_kept_as_it_is_must_match_its_recorded_sha256(
    tmp_path: Path, store: Any, study_info: Any, monkeypatch: pytest.MonkeyPatch, direct: bool
) -> None:
    """The one read of the source that feeds the copy also checks it against the media row's
    SHA-256: a changed source leaves no instance and no temporary file; the same source with
    its true hash comes out with the output's SHA-256 of the file as written."""
    monkeypatch.setattr(part10, "DIRECT_FROM", 0 if direct else 1 << 40)
    path = make_video(tmp_path / "rec.mp4", frames=30, options={"preset": "ultrafast", "g": "10"})
    station = Station("ROOM1", "ISO_IR 192", "sc", ("38266002", "SCT", "Entire body"))
    ds = mwl.study_attributes(study_info, default_modality="OT", uid_root="")
    for claimed in ("0" * 64, sha256_file(path)):
        media = convert.MediaInfo(
            id="rec",
            kind="recording",
            path=path,
            sha256=claimed,
            source="tower-1",
            captured_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
        )
        lim = convert.Limits(preset="ultrafast")
        prepared = convert.prepare(media, H264, store, lim, lambda f, s: None, threading.Event())
        assert prepared.verbatim
        try:
            if claimed == "0" * 64:
                with pytest.raises(BadMedia, match="recorded SHA-256"):
                    convert.write(prepared, media, ds, station, (1, 1), store, "", _quiet)
                assert list(store.tmp.iterdir()) == []
                continue
            [built] = convert.write(prepared, media, ds, station, (1, 1), store, "", _quiet)
        finally:
            prepared.cleanup()
        assert built.sha256 == sha256_file(built.temp)
        assert built.temp.read_bytes().find(path.read_bytes()) > 0
        built.temp.unlink()


def _quiet(_fraction: float, _step: str) -> None:
    pass
