"""Nothing unplayable becomes an instance; errors say whether a retry can ever help."""

from __future__ import annotations

import dataclasses
import datetime as dt
import errno
import threading
from pathlib import Path
from typing import Any

import av
import pytest
from cinebridge_common.store import sha256_file
from cinebridge_converter import convert, mwl
from cinebridge_converter.dicomize import Station
from cinebridge_converter.errors import BadMedia, TransientFailure
from cinebridge_converter.verify import Unplayable, check_playable
from cinebridge_testkit.media import make_video
from pydicom import dcmread

H264 = "1.2.840.10008.1.2.4.102"


def _without_first_key_frame(src: Path, dest: Path) -> int:
    """An MP4 whose first packets (the key frame among them) are gone: it cannot play whole."""
    written = 0
    with av.open(str(src)) as inp, av.open(str(dest), "w", format="mp4") as out:
        video = inp.streams.video[0]
        stream = out.add_stream_from_template(video)
        for index, packet in enumerate(inp.demux(video)):
            if packet.size == 0 or index < 2:
                continue
            packet.stream = stream
            out.mux(packet)
            written += 1
    return written


def test_a_stream_that_does_not_play_whole_is_re_encoded(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    source = make_video(
        tmp_path / "whole.mp4", frames=30, options={"preset": "ultrafast", "g": "10"}
    )
    broken = tmp_path / "broken.mp4"
    kept = _without_first_key_frame(source, broken)
    with pytest.raises(Unplayable, match="key frame"):
        check_playable(broken, kept)
    [built] = run_convert(broken)
    ds = dcmread(built.temp, stop_before_pixels=True)
    assert "not playable as coded" in ds.DerivationDescription
    stream = tools.extract_stream(built.temp, tmp_path / "s.mp4")
    assert tools.decoded(stream)[0] == ds.NumberOfFrames > 0


def test_the_as_is_check_runs_beside_the_write_and_a_failure_re_encodes(
    tmp_path: Path, store: Any, study_info: Any
) -> None:
    """A source kept as it is is checked while it is copied: a good one comes out verbatim;
    one that fails is re-encoded in `write` under the same numbers, and what the first write
    made is gone."""
    good = make_video(tmp_path / "good.mp4", frames=30, options={"preset": "ultrafast", "g": "10"})
    broken = tmp_path / "broken.mp4"
    _without_first_key_frame(good, broken)
    for path, verbatim in ((good, True), (broken, False)):
        media = convert.MediaInfo(
            id=path.stem,
            kind="recording",
            path=path,
            sha256=sha256_file(path),
            source="tower-1",
            captured_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
        )
        lim = convert.Limits(preset="ultrafast")
        prepared = convert.prepare(media, H264, store, lim, lambda f, s: None, threading.Event())
        assert prepared.verbatim and prepared.deferred_check[:2] == (
            path,
            prepared.pixels[0].frames,
        )
        try:
            ds = mwl.study_attributes(study_info, default_modality="OT", uid_root="")
            station = Station("ROOM1", "ISO_IR 192", "sc", ("38266002", "SCT", "Entire body"))
            [built] = convert.write(
                prepared, media, ds, station, (3, 7), store, "", lambda f, s: None
            )
        finally:
            prepared.cleanup()
        assert prepared.verbatim is verbatim
        head = dcmread(built.temp, stop_before_pixels=True)
        assert (head.SeriesNumber, head.InstanceNumber) == (3, 7)
        assert ("not playable as coded" in head.get("DerivationDescription", "")) is not verbatim
        assert [p for p in store.tmp.iterdir() if p != built.temp] == []
        built.temp.unlink()


def test_a_frame_count_that_differs_from_the_stream_is_refused(tmp_path: Path) -> None:
    source = make_video(tmp_path / "ten.mp4", frames=10, options={"preset": "ultrafast"})
    assert check_playable(source, 10).frames == 10
    with pytest.raises(Unplayable, match="holds 10 frames where 11"):
        check_playable(source, 11)


def test_only_resource_errors_are_transient(tmp_path: Path) -> None:
    full = convert.classify(OSError(errno.ENOSPC, "No space left on device", "/x/.tmp/a.mp4"))
    assert isinstance(full, TransientFailure)
    gone = convert.classify(FileNotFoundError(errno.ENOENT, "No such file", "/x/.tmp/a.mp4"))
    assert isinstance(gone, BadMedia)
    assert ".tmp" not in gone.reason and "No such file" in gone.reason
    bad = convert.classify(av.error.InvalidDataError(errno.EINVAL, "Invalid data", "/x/a.h264"))
    assert isinstance(bad, BadMedia) and "/x" not in bad.reason


def test_a_ts_kept_as_it_is_is_checked_with_the_probes_pass(tmp_path: Path, store: Any) -> None:
    """MPEG-TS has no index: the probe counted its packets and kept its last GOP, which the
    check decodes after the first GOP instead of demuxing the file again; a last GOP that does
    not decode, or another count, still fails the check."""
    source = make_video(
        tmp_path / "kept.ts",
        frames=40,
        container="mpegts",
        options={"preset": "ultrafast", "g": "10"},
    )
    media = convert.MediaInfo(
        id="ts",
        kind="recording",
        path=source,
        sha256=sha256_file(source),
        source="tower-1",
        captured_at=dt.datetime(2026, 12, 7, tzinfo=dt.UTC),
    )
    lim = convert.Limits(preset="ultrafast")
    prepared = convert.prepare(media, H264, store, lim, lambda f, s: None, threading.Event())
    assert prepared.verbatim and prepared.deferred_check is not None
    path, frames, counted = prepared.deferred_check
    assert (path, frames) == (source, 40)
    assert counted is not None and counted.packets == 40 and counted.last_gop is not None
    assert len(counted.last_gop) == 10 and counted.last_gop[0].is_keyframe
    assert check_playable(source, 40, counted) == check_playable(source, 40)
    with pytest.raises(Unplayable, match="holds 39 frames where 40"):
        check_playable(source, 40, dataclasses.replace(counted, packets=39))
    # The last GOP without its key frame: its pictures cannot decode.
    headless = dataclasses.replace(counted, last_gop=counted.last_gop[1:])
    with pytest.raises(Unplayable, match="last GOP"):
        check_playable(source, 40, headless)
