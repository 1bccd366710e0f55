"""Fixtures of the converter's unit tests: media made here with PyAV/Pillow, a converter helper."""

from __future__ import annotations

import datetime as dt
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import av
import pytest
from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_converter import convert, mwl
from cinebridge_converter.dicomize import Station
from cinebridge_testkit import require_tool
from pydicom import dcmread
from pydicom.encaps import generate_fragments

STUDY = mwl.StudyInfo(
    id="6f1c1e36-2f0c-4f43-9a55-6c3b0b0d8a01",
    study_instance_uid="1.2.826.0.1.3680043.8.498.1",
    origin="unscheduled",
    patient_name="Doe^Jane",
    patient_id="P-001",
    patient_birth_date="19800101",
    patient_sex="F",
    accession_number="",
    study_id="",
    study_description="",
    referring_physician="",
    study_date="",
    study_time="",
    worklist_item=None,
    edited=False,
    created_at=dt.datetime(2026, 11, 29, 8, 15, 30, 250000, tzinfo=dt.UTC),
)


@dataclass
class Converted:
    built: list[convert.Built]
    prepared_notes: list[str]


@pytest.fixture
def study_info() -> mwl.StudyInfo:
    """The study every conversion of these tests goes to."""
    return STUDY


@pytest.fixture
def store(tmp_path: Path) -> MediaStore:
    return MediaStore(tmp_path / "store")


@pytest.fixture
def run_convert(store: MediaStore) -> Callable[..., list[convert.Built]]:
    """Convert a file as the service does (prepare, numbers (1, 1), write)."""

    def run(
        path: Path,
        kind: str = "recording",
        *,
        ts: str = "1.2.840.10008.1.2.4.102",
        iod: str = "sc",
        study: mwl.StudyInfo = STUDY,
        limits: convert.Limits | None = None,
        media_id: str = "3d0f8a4e-8d7a-4a59-b2d7-1f5b8c3e9a10",
    ) -> list[convert.Built]:
        media = convert.MediaInfo(
            id=media_id,
            kind=kind,
            path=path,
            sha256=sha256_file(path),
            source="tower-1",
            captured_at=dt.datetime(2026, 11, 29, 8, 20, tzinfo=dt.UTC),
        )
        station = Station("ROOM1", "ISO_IR 192", iod, ("38266002", "SCT", "Entire body"))
        lim = limits or convert.Limits(preset="ultrafast")
        prepared = convert.prepare(media, ts, store, lim, lambda f, s: None, threading.Event())
        try:
            ds = mwl.study_attributes(study, default_modality="OT", uid_root="")
            return convert.write(prepared, media, ds, station, (1, 1), store, "", lambda f, s: None)
        finally:
            prepared.cleanup()

    return run


class Tools:
    """Outside checkers: dicom3tools, DCMTK, and PyAV on the extracted stream."""

    @staticmethod
    def dciodvfy(path: Path) -> tuple[list[str], list[str]]:
        """(errors, warnings) of dicom3tools' dciodvfy, one finding per line."""
        tool = require_tool("dciodvfy")
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
        lines = (out.stdout + out.stderr).splitlines()
        return (
            [x for x in lines if x.startswith("Error")],
            [x for x in lines if x.startswith("Warning")],
        )

    @staticmethod
    def dcmdump(path: Path, *tags: str) -> str:
        tool = require_tool("dcmdump")
        args = [tool, "-q", "-Un"] + [a for t in tags for a in ("+P", t)] + [str(path)]
        out = subprocess.run(args, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert "E:" not in out.stderr, out.stderr
        return out.stdout

    @staticmethod
    def extract_stream(path: Path, dest: Path) -> Path:
        """Concatenate the Pixel Data fragments (the recipient's view, PS3.5 A.4)."""
        ds = dcmread(path)
        with open(dest, "wb") as fh:
            for fragment in generate_fragments(ds.PixelData):
                fh.write(fragment)
        return dest

    @staticmethod
    def decoded(path: Path) -> tuple[int, int, int]:
        """(frames, width, height) when the stream is fully decoded by PyAV."""
        frames, width, height = 0, 0, 0
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                frames += 1
                width, height = frame.width, frame.height
        return frames, width, height


@pytest.fixture
def tools() -> type[Tools]:
    return Tools


@pytest.fixture
def base_study() -> mwl.StudyInfo:
    """An unscheduled study (no worklist item) created 2026-11-29 08:15:30.25 UTC."""
    return STUDY
