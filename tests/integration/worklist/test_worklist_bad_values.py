"""A misbehaving worklist server: bad values and character sets, over real NATS and PostgreSQL.

Each bad value of an answer reaches the operator flagged (never silently, the patient never
missing), is replaced in the item (left empty or cut), and the DICOM object made from the
item — the gateway's study row, the converter's attributes, a snapshot — passes dciodvfy with
no error and holds none of the bad values.
"""

from __future__ import annotations

import datetime as dt
import logging
import subprocess
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common.bus import Bus
from cinebridge_common.messages import (
    WorklistItem,
    WorklistQuery,
    WorklistQueryReply,
    WorklistServer,
)
from cinebridge_common.store import MediaStore, sha256_file
from cinebridge_converter import convert, mwl
from cinebridge_converter.dicomize import Station
from cinebridge_gateway.studies import new_study_from_worklist
from cinebridge_testkit import require_tool
from cinebridge_testkit.worklist_peers import FakeRis
from cinebridge_worklist.app import WorklistApp
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import service_class

from .conftest import running_worklist, worklist_settings

pytestmark = pytest.mark.integration


def entry(n: int, charset: str | None = "ISO_IR 192", **values: Any) -> Dataset:
    ds = Dataset()
    if charset:
        ds.SpecificCharacterSet = charset
    ds.AccessionNumber = f"ACC{n:04d}"
    ds.PatientName = f"CASE{n}^ANNA"
    ds.PatientID = f"BAD{n:04d}"
    ds.PatientBirthDate = "19800101"
    ds.PatientSex = "F"
    ds.StudyInstanceUID = f"1.2.826.0.1.3680043.10.99.{n}"
    ds.RequestedProcedureID = f"RP{n:04d}"
    ds.RequestedProcedureDescription = "Gastroscopy"
    sps = Dataset()
    sps.Modality = "ES"
    sps.ScheduledStationAETitle = "ROOM1"
    sps.ScheduledProcedureStepStartDate = "20261207"
    sps.ScheduledProcedureStepStartTime = "093000"
    sps.ScheduledProcedureStepID = f"SPS{n:04d}"
    ds.ScheduledProcedureStepSequence = Sequence([sps])
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


#: Patient ID → (what the server sends, the tag flagged, the action taken)
CASES: dict[str, tuple[dict[str, Any], str, str]] = {
    "BAD0001": ({"PatientBirthDate": "1980-13-45"}, "(0010,0030)", "left empty"),
    "BAD0002": ({"PatientSex": "FEMALEXXXXXXXXXXX"}, "(0010,0040)", "left empty"),
    "BAD0003": ({"StudyInstanceUID": "1.2.03.abc"}, "(0020,000D)", "left empty"),
    "BAD0004": ({"PatientName": "L" * 70 + "^ANNA"}, "(0010,0010)", "cut to 64 characters"),
    "BAD0005": ({}, "(0040,0100)", "sequence dropped"),  # SPS made malformed on the wire
    "BAD0006": ({"PatientName": "MXLLER^ANNA"}, "(0010,0010)", "decoded as Latin-1 (ISO_IR 100)"),
    "BAD0007": ({"PatientName": "MXLLER^ANNA"}, "(0010,0010)", "undecodable"),
}


def answers() -> Iterator[Dataset]:
    yield entry(0)
    for n, pid in enumerate(CASES, start=1):
        values = CASES[pid][0]
        yield entry(n, charset=None if pid == "BAD0006" else "ISO_IR 192", **values)


@pytest.fixture
def misbehaving_encoder(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bytes pydicom would not write: Latin-1 in a name (undeclared, or declared UTF-8), and
    a Scheduled Procedure Step ID sent with VR US inside its sequence (explicit VR LE)."""
    real_encode = service_class.encode

    def encode(*args: Any, **kwargs: Any) -> bytes | None:
        data = real_encode(*args, **kwargs)
        if not data:
            return data
        data = data.replace(b"MXLLER", b"M\xdcLLER")
        return data.replace(b"SH\x08\x00SPS0005", b"US\x08\x00SPS0005")

    monkeypatch.setattr(service_class, "encode", encode)


@pytest.fixture
async def bad_ris(misbehaving_encoder: None) -> AsyncIterator[FakeRis]:
    with FakeRis(entries=answers, transfer_syntaxes=[ExplicitVRLittleEndian]) as ris:
        yield ris


@pytest.fixture
async def service(
    nats_url: str, database_url: str, tmp_path: Path, bad_ris: FakeRis
) -> AsyncIterator[WorklistApp]:
    server = WorklistServer(
        id="badris",
        host="127.0.0.1",
        port=bad_ris.port,
        called_ae="FAKERIS",
        modality="ES",
        character_set="ISO_IR 192",
    )
    settings = worklist_settings(nats_url, database_url, tmp_path, [server], worklist_timeout_s=20)
    async with running_worklist(settings) as app:
        yield app


async def _query(nats_url: str) -> WorklistQueryReply:
    bus = await Bus.connect(nats_url, f"bad-values-{uuid.uuid4().hex[:6]}")
    try:
        return await bus.request(WorklistQuery(), WorklistQueryReply, timeout_s=30)
    finally:
        await bus.close()


def _snapshot_object(item: WorklistItem, tmp_path: Path) -> Dataset:
    """The item as the station turns it into an object: the gateway's study row, then the
    converter's attributes on a JPEG snapshot."""
    now = dt.datetime(2026, 12, 7, 9, 30, tzinfo=dt.UTC)
    row = new_study_from_worklist(item, "room1", "", now)
    study = mwl.StudyInfo(
        id=str(row["id"]),
        created_at=now,
        edited=False,
        **{k: row[k] for k in ("study_instance_uid", "origin", "patient_name", "patient_id")},
        **{
            k: row[k] for k in ("patient_birth_date", "patient_sex", "accession_number", "study_id")
        },
        **{
            k: row[k]
            for k in ("study_description", "referring_physician", "study_date", "study_time")
        },
        worklist_item=row["worklist_item"],
    )
    store = MediaStore(tmp_path / f"store-{item.patient_id}")
    jpeg = store.temp_path(".jpg")
    Image.new("RGB", (64, 48), (200, 40, 40)).save(jpeg, "JPEG")
    media = convert.MediaInfo(
        id=str(uuid.uuid4()),
        kind="snapshot",
        path=jpeg,
        sha256=sha256_file(jpeg),
        source="tower",
        captured_at=now,
    )
    station = Station("ROOM1", "ISO_IR 192", "vl", ("38266002", "SCT", "Entire body"))
    prepared = convert.prepare(
        media, "", store, convert.Limits(), lambda f, s: None, threading.Event()
    )
    try:
        attributes = mwl.study_attributes(study, default_modality="OT", uid_root="")
        built = convert.write(
            prepared, media, attributes, station, (1, 1), store, "", lambda f, s: None
        )
    finally:
        prepared.cleanup()
    path = built[0].temp
    tool = require_tool("dciodvfy")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
    assert errors == [], (item.patient_id, errors)
    return dcmread(path)


# The misbehaving server writes its bad values on purpose; pydicom warns while encoding them.
@pytest.mark.filterwarnings("ignore::UserWarning")
async def test_every_bad_value_is_flagged_replaced_and_kept_out_of_the_objects(
    service: WorklistApp, nats_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="cinebridge_worklist")
    reply = await _query(nats_url)
    assert reply.ok and reply.outcome == "complete", reply.error
    by_id = {item.patient_id: item for item in reply.items}
    # Every patient is listed: none skipped for a bad value or a character set.
    assert sorted(by_id) == ["BAD0000", *CASES], reply.warnings
    assert not by_id["BAD0000"].flags
    assert any("7 entries have flagged values" in w for w in reply.warnings), reply.warnings
    for pid, (_, tag, action) in CASES.items():
        flags = by_id[pid].flags
        assert [f.tag for f in flags] == [tag], (pid, flags)
        assert flags[0].action.startswith(action) and flags[0].problem, (pid, flags)

    assert by_id["BAD0001"].patient_birth_date is None
    assert by_id["BAD0001"].flags[0].value == "1980-13-45"
    assert by_id["BAD0002"].patient_sex is None
    assert by_id["BAD0003"].study_instance_uid is None
    assert by_id["BAD0004"].patient_name == "L" * 64
    assert by_id["BAD0005"].modality is None and "VR US" in by_id["BAD0005"].flags[0].problem
    assert by_id["BAD0005"].accession_number == "ACC0005"  # the rest of the entry is read
    assert by_id["BAD0006"].patient_name == "MÜLLER^ANNA"
    assert by_id["BAD0007"].patient_name == "M\ufffdLLER^ANNA"
    logged = [r for r in caplog.records if r.getMessage() == "worklist entry with invalid values"]
    assert len(logged) == 7 and all(r.kv["server"] == "badris" for r in logged)  # type: ignore[attr-defined]
    ours = [r for r in caplog.records if r.name.startswith("cinebridge")]
    assert not any("1980-13-45" in repr(r.__dict__) for r in ours)  # patient data: DEBUG only

    objects = {pid: _snapshot_object(by_id[pid], tmp_path) for pid in ["BAD0000", *CASES]}
    assert objects["BAD0000"].PatientBirthDate == "19800101"
    assert objects["BAD0001"].PatientBirthDate == ""
    assert objects["BAD0002"].PatientSex == ""
    uid = str(objects["BAD0003"].StudyInstanceUID)
    assert uid != "1.2.03.abc" and uid.startswith("2.25.")
    assert str(objects["BAD0004"].PatientName) == "L" * 64
    assert str(objects["BAD0006"].PatientName) == "MÜLLER^ANNA"
    assert str(objects["BAD0007"].PatientName) == "M\ufffdLLER^ANNA"
    for pid, ds in objects.items():
        assert ds.Modality in ("ES", "OT"), pid
    assert objects["BAD0001"].Modality == "ES"
