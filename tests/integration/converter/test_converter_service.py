"""The converter service on real NATS and PostgreSQL: job in, instance row and events out.

Redelivered jobs make no second instance; broken media end the job with a recorded reason and
the service keeps converting; Orthanc accepts every kind of object and serves it back unchanged.
"""

from __future__ import annotations

import asyncio
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
from cinebridge_converter.dicomize import VIDEO_ENDOSCOPIC, VL_ENDOSCOPIC
from cinebridge_gateway.settings_repository import save_station_settings
from cinebridge_testkit import wait_for
from cinebridge_testkit.media import huge_jpeg_header, make_still, make_video
from pydicom import dcmread

pytestmark = pytest.mark.integration

H264, MPEG2_ML = "1.2.840.10008.1.2.4.102", "1.2.840.10008.1.2.4.100"


async def converted(converter: Any, media_id: str, timeout_s: float = 60) -> list[Any]:
    async def done() -> list[Any] | None:
        state = await converter.outcome(media_id)
        assert state["state"] != "failed", state["error"]
        rows = await converter.instances(media_id)
        return rows if rows and state["state"] == "converted" else None

    return await wait_for(done, timeout_s, 0.1, what=f"media {media_id} converted")


async def test_job_makes_one_instance_and_events(converter: Any, tmp_path: Path) -> None:
    study = await converter.add_study()
    clip = make_video(
        tmp_path / "clip.mp4", width=640, height=360, frames=25, options={"preset": "ultrafast"}
    )
    media = await converter.add_media(study, clip, "recording")
    job = await converter.submit(media, study)
    [row] = await converted(converter, media)
    path = converter.store.resolve(row["rel_path"])
    ds = dcmread(path, stop_before_pixels=True)
    assert ds.SOPInstanceUID == row["sop_instance_uid"]
    assert ds.file_meta.TransferSyntaxUID == H264
    assert (ds.Rows, ds.Columns, ds.NumberOfFrames) == (360, 640, 25)
    assert ds.SeriesDescription == "tower-1" and ds.ConversionType == "DV"
    assert converter.store.sha256(row["rel_path"]) == row["sha256"]

    async def announced() -> list[Any] | None:
        return converter.events.get("cb.evt.instance.created")

    [event] = await wait_for(announced, 10, what="InstanceCreated")
    assert event["sop_instance_uid"] == row["sop_instance_uid"]
    assert event["rel_path"] == row["rel_path"] and event["media_id"] == media
    # What the worklist's MPPS Performed Series Sequence lists (PS3.4 F.7.2).
    assert event["series_instance_uid"] == ds.SeriesInstanceUID
    assert event["series_description"] == ds.SeriesDescription
    assert (event["part"], event["parts"]) == (1, 1)
    assert converter.events.get("cb.evt.conversion.progressed")

    # A redelivered job (same job, new delivery): same UID, still one row, no second event.
    await converter.submit(media, study, msg_id=f"{job.job_key}-again")
    await converter.submit(media, study, msg_id=f"{job.job_key}-third")

    async def both_acked() -> bool:  # work queue: an acked job leaves the stream
        info = await converter.bus.js.consumer_info("CB_JOBS", "converter-convert")
        return info.delivered.consumer_seq >= 3 and info.num_pending + info.num_ack_pending == 0

    await wait_for(both_acked, 20, what="the repeated jobs acked")
    assert [r["sop_instance_uid"] for r in await converter.instances(media)] == [
        row["sop_instance_uid"]
    ]
    assert len(converter.events.get("cb.evt.instance.created", [])) == 1
    assert await converter.pool.fetchval("SELECT count(*) FROM instances") == 1


async def test_job_without_options_takes_the_stations_profile_and_syntax(
    converter: Any, tmp_path: Path
) -> None:
    """A job that names no IOD or transfer syntax (a converter CLI hand-off, an older producer)
    is converted with the station's settings at the time it runs, not the message defaults."""
    await save_station_settings(
        converter.pool, {"iod": "vl", "video_transfer_syntax": MPEG2_ML}, by="test"
    )
    study = await converter.add_study()
    still = make_still(tmp_path / "still.jpg", width=320, height=240)
    clip = make_video(
        tmp_path / "clip.mp4", width=352, height=288, frames=6, options={"preset": "ultrafast"}
    )
    snap = await converter.add_media(study, still, "snapshot")
    rec = await converter.add_media(study, clip, "recording")
    await converter.submit(snap, study)
    await converter.submit(rec, study)
    [snap_row] = await converted(converter, snap)
    [rec_row] = await converted(converter, rec)
    snap_ds = dcmread(converter.store.resolve(snap_row["rel_path"]), stop_before_pixels=True)
    rec_ds = dcmread(converter.store.resolve(rec_row["rel_path"]), stop_before_pixels=True)
    assert snap_ds.SOPClassUID == VL_ENDOSCOPIC and snap_ds.Modality == "ES"
    assert rec_ds.SOPClassUID == VIDEO_ENDOSCOPIC
    assert rec_ds.file_meta.TransferSyntaxUID == MPEG2_ML


async def test_numbers_series_per_source_and_worklist_study(converter: Any, tmp_path: Path) -> None:
    study = await converter.add_study(accession_number="ACC-1", study_id="S-1")
    still = make_still(tmp_path / "s.jpg", width=320, height=240)
    clip = make_video(tmp_path / "c.mp4", frames=5, options={"preset": "ultrafast"})
    first = await converter.add_media(study, still, "snapshot", name="tower-1")
    second = await converter.add_media(study, clip, "recording", name="tower-1")
    third = await converter.add_media(study, still, "snapshot", name="microscope")
    rows = []
    for media in (first, second, third):
        await converter.submit(media, study, iod="vl")
        rows += await converted(converter, media)
    assert [r["instance_number"] for r in rows] == [1, 2, 3]
    assert rows[0]["series_instance_uid"] == rows[1]["series_instance_uid"]
    assert rows[2]["series_instance_uid"] != rows[0]["series_instance_uid"]
    assert [r["series_number"] for r in rows] == [1, 1, 2]
    ds = dcmread(converter.store.resolve(rows[0]["rel_path"]), stop_before_pixels=True)
    assert (ds.AccessionNumber, ds.StudyID, ds.Modality) == ("ACC-1", "S-1", "ES")


def _bad_media(folder: Path) -> dict[str, tuple[Path, str, str]]:
    full = make_video(folder / "full.mp4", frames=50, options={"preset": "ultrafast"})
    truncated = folder / "truncated.mp4"
    truncated.write_bytes(full.read_bytes()[: full.stat().st_size // 2])
    text = folder / "text.mp4"
    text.write_text("not a video\n" * 50)
    empty = folder / "empty.mp4"
    empty.touch()
    audio = folder / "audio.mp4"
    _audio_only(audio)
    data = full.read_bytes()
    index_cut = folder / "index-cut.mp4"  # cut inside the moov box at the end
    index_cut.write_bytes(data[: data.find(b"moov") + 200])
    still = folder / "still.mp4"  # a JPEG picture under a video's name
    still.write_bytes(make_still(folder / "still.jpg").read_bytes())
    return {
        "truncated": (truncated, "recording", "truncated"),
        "text": (text, "recording", "not a video"),
        "empty": (empty, "recording", "empty file"),
        "audio": (audio, "recording", "no video stream"),
        "index-cut": (index_cut, "recording", "no complete index (moov box)"),
        "still-as-recording": (still, "recording", "not a video format"),
        "bomb": (huge_jpeg_header(folder / "bomb.jpg"), "snapshot", "exceeds the limit"),
    }


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as out:
        stream: Any = out.add_stream("aac", rate=48000)
        frame = av.AudioFrame(format="fltp", layout="stereo", samples=1024)
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.sample_rate = 48000
        for n in range(5):
            frame.pts = n * 1024
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode(None):
            out.mux(packet)


async def test_bad_media_fail_with_reason_and_service_stays_up(
    converter: Any, tmp_path: Path
) -> None:
    study = await converter.add_study()
    cases = _bad_media(tmp_path)
    ids = {}
    for name, (path, kind, _) in cases.items():
        ids[name] = await converter.add_media(study, path, kind)
        await converter.submit(ids[name], study)
    for name, (_, _, reason) in cases.items():

        async def failed(media: str = ids[name]) -> Any:
            row = await converter.outcome(media)
            return row if row["state"] == "failed" else None

        row = await wait_for(failed, 30, 0.1, what=f"{name} failed")
        assert reason in row["error"], (name, row["error"])
        assert await converter.instances(ids[name]) == []

    # Dead letters reach the table through the JetStream DLQ and its mirror consumer.
    async def all_recorded() -> bool:
        return await converter.pool.fetchval("SELECT count(*) FROM dead_letters") == len(cases)

    await wait_for(all_recorded, 30, what="a dead letter per bad media item")

    async def all_announced() -> bool:
        return len(converter.events.get("cb.evt.conversion.failed", [])) == len(cases)

    await wait_for(all_announced, 10, what="ConversionFailed events")
    assert not (converter.store.root / "dicom").exists()  # no partial DICOM file
    assert converter.store.temp_files() == []
    deleted = await converter.add_media(study, make_still(tmp_path / "gone.jpg"), "snapshot")
    await converter.pool.execute(
        "UPDATE media SET state = 'deleted' WHERE id = $1", uuid.UUID(deleted)
    )
    await converter.submit(deleted, study)
    good = await converter.add_media(study, make_still(tmp_path / "ok.jpg"), "snapshot")
    await converter.submit(good, study)
    assert len(await converted(converter, good)) == 1
    # Left alone: no job recorded, nothing made, nothing announced for it.
    assert (await converter.outcome(deleted))["state"] == "none"
    assert await converter.instances(deleted) == []
    announced = [
        e["media_id"]
        for subject in ("cb.evt.instance.created", "cb.evt.conversion.failed")
        for e in converter.events.get(subject, [])
    ]
    assert good in announced and deleted not in announced


async def test_orthanc_accepts_and_returns_each_object(
    converter: Any, orthanc: Any, tmp_path: Path
) -> None:
    study = await converter.add_study()
    sources = [
        (
            make_video(
                tmp_path / "a.mp4",
                width=640,
                height=360,
                frames=25,
                options={"preset": "ultrafast"},
            ),
            "recording",
            {},
        ),
        (tmp_path / "a.mp4", "recording", {"iod": "vl"}),
        (
            make_video(
                tmp_path / "b.mkv",
                codec="libx265",
                width=320,
                height=240,
                frames=10,
                options={"preset": "ultrafast", "x265-params": "log-level=error"},
            ),
            "recording",
            {"iod": "vl-photographic"},
        ),
        (tmp_path / "a.mp4", "recording", {"iod": "vl", "video_transfer_syntax": MPEG2_ML}),
        (make_still(tmp_path / "s.jpg", width=320, height=240), "snapshot", {}),
        (
            make_still(tmp_path / "s.png", width=320, height=240, fmt="PNG"),
            "snapshot",
            {"iod": "vl"},
        ),
    ]
    files = []
    for path, kind, options in sources:
        media = await converter.add_media(study, path, kind)
        await converter.submit(media, study, **options)
        files += [converter.store.resolve(r["rel_path"]) for r in await converted(converter, media)]
    for path in files:
        assert orthanc.store_and_fetch(path) == orthanc.data_set(path.read_bytes()), path.name


def _worklist_json() -> dict[str, Any]:
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = Dataset()
    ds.AccessionNumber, ds.PatientName, ds.PatientID = "ACC-77", "Roe^Richard", "PID-77"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.4242"
    ds.RequestedProcedureID, ds.RequestedProcedureDescription = "RP-1", "Gastroscopy"
    ds.add_new(0x001021C0, "US", 2)
    step = Dataset()
    step.Modality, step.ScheduledProcedureStepID = "ES", "SPS-9"
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds.to_json_dict()


async def test_worklist_study_and_edit_rule(converter: Any, tmp_path: Path) -> None:
    item = _worklist_json()
    still = make_still(tmp_path / "w.jpg", width=320, height=240)
    scheduled = await converter.add_study(
        study_instance_uid="1.2.826.0.1.3680043.8.498.4242",
        origin="worklist",
        worklist_item=item,
        patient_name="Roe^Richard",
        patient_id="PID-77",
    )
    media = await converter.add_media(scheduled, still, "snapshot")
    await converter.submit(media, scheduled)
    [row] = await converted(converter, media)
    ds = dcmread(converter.store.resolve(row["rel_path"]), stop_before_pixels=True)
    assert ds.StudyInstanceUID == "1.2.826.0.1.3680043.8.498.4242"
    assert (ds.AccessionNumber, ds.StudyID, ds.StudyDescription) == (
        "ACC-77",
        "RP-1",
        "Gastroscopy",
    )
    assert ds.RequestAttributesSequence[0].ScheduledProcedureStepID == "SPS-9"
    assert ds.PregnancyStatus == 2 and ds.Modality == "ES"

    # §8.1.5: patient data edited by hand -> "New" attributes dropped, study UID regenerated.
    await converter.pool.execute(
        "UPDATE studies SET edited = true, patient_name = 'Roe^Rick' WHERE id = $1",
        uuid.UUID(scheduled),
    )
    again = await converter.add_media(scheduled, still, "snapshot")
    await converter.submit(again, scheduled)
    [edited] = await converted(converter, again)
    ds = dcmread(converter.store.resolve(edited["rel_path"]), stop_before_pixels=True)
    assert ds.PatientName == "Roe^Rick"
    assert ds.StudyInstanceUID != "1.2.826.0.1.3680043.8.498.4242"
    assert "RequestAttributesSequence" not in ds and "PregnancyStatus" not in ds


async def test_stop_mid_transcode_leaves_nothing_and_job_is_redone(
    client: Any, make_settings: Any, tmp_path: Path
) -> None:
    """Stopping during a transcode: no file appears, and the next converter finishes the job."""
    from cinebridge_converter import app

    settings = make_settings(converter_x264_preset="medium")
    clip = make_video(
        tmp_path / "long.avi", codec="mjpeg", width=1280, height=720, frames=150, pix_fmt="yuvj420p"
    )
    study = await client.add_study()
    media = await client.add_media(study, clip, "recording")
    first = asyncio.create_task(app.run(settings))

    async def transcoding() -> bool:
        return any(
            e["stage"] == "transcode" for e in client.events.get("cb.evt.conversion.progressed", [])
        )

    await client.submit(media, study)
    await wait_for(transcoding, 30, what="transcode under way")
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)

    async def thread_gone() -> bool:  # the worker thread stops at its next frame
        return not client.store.temp_files()

    await wait_for(thread_gone, 10, what="temporary files removed")
    assert await client.instances(media) == []
    assert not (client.store.root / "dicom").exists()
    second = asyncio.create_task(app.run(make_settings()))
    try:
        [row] = await converted(client, media, timeout_s=120)
        assert row["transcoded"]
    finally:
        second.cancel()
        await asyncio.gather(second, return_exceptions=True)


async def test_console_process_converts_and_stops_on_sigterm(
    client: Any, nats_url: str, database_url: str, tmp_path: Path
) -> None:
    """`python -m cinebridge_converter` configured from the environment, as compose runs it."""
    import os
    import signal
    import sys
    import urllib.request

    from cinebridge_common.embedded import free_port

    port = free_port()
    env = {
        **os.environ,
        "CB_NATS_URL": nats_url,
        "CB_DATABASE_URL": database_url,
        "CB_MEDIA_ROOT": str(client.store.root),
        "CB_HEALTH_PORT": str(port),
        "CB_CONVERTER_ANATOMIC_REGION": "71854001^SCT^Colon",
        "CB_LOG_LEVEL": "WARNING",
    }
    log = open(tmp_path / "converter.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "cinebridge_converter"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:

        def health() -> dict[str, Any] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    import json

                    body: dict[str, Any] = json.loads(r.read())
                    return body
            except OSError:
                return None

        async def up() -> dict[str, Any] | None:
            return await asyncio.to_thread(health)

        status = await wait_for(up, 30, 0.2, what="converter /readyz ready")
        assert status["service"] == "converter" and status["state"] == "up"
        study = await client.add_study()
        clip = make_video(tmp_path / "c.mp4", frames=10, options={"preset": "ultrafast"})
        media = await client.add_media(study, clip, "recording")
        await client.submit(media, study, iod="vl")
        [row] = await converted(client, media)
        ds = dcmread(client.store.resolve(row["rel_path"]), stop_before_pixels=True)
        assert ds.AnatomicRegionSequence[0].CodeMeaning == "Colon"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 15) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        log.close()


async def test_concurrent_duplicate_jobs_make_one_instance_and_file(
    client: Any, make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries of one job converting at once (two workers): one row, one event, and the
    file on disk is the one the row describes."""
    import itertools
    import threading

    from cinebridge_converter import app, convert, metrics

    both_writing = threading.Barrier(2, timeout=30)
    side_by_side: list[int] = []  # writes that began while the other delivery was writing
    entered = itertools.count()
    write = convert.write

    def write_side_by_side(*args: Any, **kwargs: Any) -> Any:
        # Neither of the first two may commit before the other has started writing. A later
        # delivery (JetStream redelivers a job whose ack is late on a loaded machine) goes on.
        if next(entered) < 2:
            side_by_side.append(both_writing.wait())
        return write(*args, **kwargs)

    monkeypatch.setattr(convert, "write", write_side_by_side)
    from cinebridge_common.store import MediaStore

    renamed: list[str] = []
    commit_temp = MediaStore.commit_temp

    def counting_commit(self: MediaStore, tmp: Path, rel: str, **kw: Any) -> Path:
        renamed.append(rel)
        return commit_temp(self, tmp, rel, **kw)

    monkeypatch.setattr(MediaStore, "commit_temp", counting_commit)

    def converted_count() -> float:
        return float(metrics.CONVERSIONS.labels("converted")._value.get())

    before = converted_count()
    task = asyncio.create_task(app.run(make_settings(converter_workers=2)))
    try:
        study = await client.add_study()
        clip = make_video(
            tmp_path / "d.avi", codec="mjpeg", width=640, height=360, frames=50, pix_fmt="yuvj420p"
        )
        media = await client.add_media(study, clip, "recording")
        job = await client.submit(media, study)
        await client.submit(media, study, msg_id=f"{job.job_key}-twin")
        [row] = await converted(client, media)

        async def both_acked() -> bool:
            info = await client.bus.js.consumer_info("CB_JOBS", "converter-convert")
            return info.delivered.consumer_seq >= 2 and info.num_pending + info.num_ack_pending == 0

        await wait_for(both_acked, 60, what="both deliveries acked")
        assert sorted(side_by_side) == [0, 1]  # both really wrote, side by side
        assert converted_count() - before >= 1
        assert await client.pool.fetchval("SELECT count(*) FROM instances") == 1
        assert client.store.sha256(row["rel_path"]) == row["sha256"]
        # The loser never replaced the winner's file.
        assert [r for r in renamed if r.startswith("dicom/")] == [row["rel_path"]]
        assert client.store.temp_files() == []

        async def announced() -> list[Any] | None:
            return client.events.get("cb.evt.instance.created")

        assert len(await wait_for(announced, 10, what="InstanceCreated")) == 1
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
