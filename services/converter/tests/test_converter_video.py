"""Recordings made here with PyAV become DICOM that dciodvfy, dcmdump and PyAV accept.

Every case checks the object with dicom3tools' dciodvfy and DCMTK's dcmdump, then pulls the
stream back out of Pixel Data and decodes it: the frame count and picture size must be the ones
the instance states.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import pytest
from cinebridge_converter import convert
from cinebridge_converter.dicomize import resolve_iod
from cinebridge_testkit.media import make_video
from pydicom import dcmread

H264, BD, MPEG2_ML, MPEG2_HL = (f"1.2.840.10008.1.2.4.{n}" for n in (102, 103, 100, 101))
SC, MF_SC = "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.4"
VIDEO_ES, VIDEO_XC = "1.2.840.10008.5.1.4.1.1.77.1.1.1", "1.2.840.10008.5.1.4.1.1.77.1.4.1"

SOURCES: dict[str, dict[str, Any]] = {
    "h264-1080p30.mp4": dict(
        width=1920,
        height=1080,
        rate=30,
        frames=30,
        options={"preset": "superfast", "profile": "high"},
    ),
    "h264-720p60.mp4": dict(
        width=1280, height=720, rate=60, frames=60, options={"preset": "superfast"}
    ),
    "mpeg2-576i25.ts": dict(
        codec="mpeg2video",
        width=720,
        height=576,
        rate=25,
        frames=25,
        container="mpegts",
        interlaced=True,
        options={"flags": "+ilme+ildct", "top": "1"},
    ),
    "hevc.mkv": dict(
        codec="libx265",
        width=640,
        height=360,
        rate=25,
        frames=25,
        options={"preset": "ultrafast", "x265-params": "log-level=error"},
    ),
    "mjpeg.avi": dict(codec="mjpeg", width=640, height=360, rate=25, frames=25, pix_fmt="yuvj420p"),
    "h264.mov": dict(
        width=640, height=360, rate=25, frames=25, container="mov", options={"preset": "ultrafast"}
    ),
    # What capture writes: fragmented MP4 (no sample table in moov), High@4.1.
    "capture-fragmented.mp4": dict(
        width=1280,
        height=720,
        rate=30,
        frames=45,
        options={"preset": "ultrafast", "profile": "high", "level": "4.1"},
        container_options={
            "movflags": "frag_keyframe+empty_moov+default_base_moof",
            "frag_duration": "1000000",
        },
    ),
    "one-frame.mp4": dict(
        width=320, height=240, rate=25, frames=1, options={"preset": "ultrafast"}
    ),
}

#: dciodvfy findings that follow from the statement's choice of the single-frame Secondary
#: Capture SOP class for video (docs/conformance-notes.md explains each); nothing else allowed.
SC_VIDEO_ERRORS = ("Error - Unrecognized enumerated value",)  # Number of Frames must be 1
SC_VIDEO_WARNINGS = (
    "Warning - Attribute is not present in standard DICOM IOD",  # Multi-frame and Cine attrs
    "Warning - Dicom dataset contains attributes not present in standard DICOM IOD",
    # Statement Table 32: Laterality "always empty"; dciodvfy wants it absent if unpaired.
    "Warning - is only permitted to be empty when actually unknown",
)
SC_ONLY_ATTRIBUTES = (
    "Number of Frames",
    "Frame Increment Pointer",
    "Frame Time",
    "Cine Rate",
    "Start Trim",
    "Stop Trim",
    "Recommended Display Frame Rate",
    "Actual Frame Duration",
    "Preferred Playback Sequencing",
)


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("media")
    return {name: make_video(folder / name, **kw) for name, kw in SOURCES.items()}


CASES = [
    # source, transfer syntax, IOD, expected path (verbatim | remux | transcode), rate
    ("h264-1080p30.mp4", H264, "vl", "verbatim", Fraction(30)),
    ("h264-1080p30.mp4", H264, "sc", "verbatim", Fraction(30)),
    ("h264-1080p30.mp4", H264, "mf-sc", "verbatim", Fraction(30)),
    ("h264-720p60.mp4", H264, "vl-photographic", "verbatim", Fraction(60)),
    ("mpeg2-576i25.ts", MPEG2_ML, "vl", "verbatim", Fraction(25)),
    ("hevc.mkv", H264, "vl", "transcode", Fraction(25)),
    ("mjpeg.avi", H264, "mf-sc", "transcode", Fraction(25)),
    ("h264.mov", H264, "vl", "remux", Fraction(25)),
    ("one-frame.mp4", H264, "vl", "verbatim", Fraction(25)),
    ("capture-fragmented.mp4", H264, "sc", "verbatim", Fraction(30)),
    ("h264-720p60.mp4", MPEG2_HL, "vl", "transcode", Fraction(60)),
    ("h264-720p60.mp4", BD, "vl", "transcode", Fraction(60000, 1001)),
    ("h264-1080p30.mp4", MPEG2_ML, "sc", "transcode", Fraction(30)),
]


@pytest.mark.parametrize(
    ("source", "ts", "iod", "path", "rate"),
    CASES,
    ids=[f"{c[0]}-{c[1][-3:]}-{c[2]}" for c in CASES],
)
def test_recording_becomes_valid_dicom(
    media: dict[str, Path],
    run_convert: Any,
    tools: Any,
    tmp_path: Path,
    source: str,
    ts: str,
    iod: str,
    path: str,
    rate: Fraction,
) -> None:
    [built] = run_convert(media[source], ts=ts, iod=iod)
    ds = dcmread(built.temp, stop_before_pixels=True)
    assert ds.file_meta.TransferSyntaxUID == ts
    assert ds.PhotometricInterpretation == "YBR_PARTIAL_420"
    assert (ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (3, 8, 8, 7)
    assert ds.FrameIncrementPointer == 0x00181063
    assert float(ds.FrameTime) == pytest.approx(1000 / float(rate), abs=0.001)
    assert ds.CineRate == round(rate)
    assert "PixelAspectRatio" not in ds
    transcoded = path == "transcode"
    assert ("DerivationDescription" in ds) is transcoded
    # Statement Table 35: four values, the third and fourth empty.
    assert list(ds.ImageType) == ["DERIVED" if transcoded else "ORIGINAL", "PRIMARY", "", ""]
    assert (
        ds.SOPClassUID
        == {
            "sc": SC,
            "mf-sc": MF_SC,
            "vl": VIDEO_ES,
            "vl-photographic": VIDEO_XC,
        }[iod]
    )
    assert ds.LossyImageCompression == "01"
    if path == "verbatim":
        # The captured file itself is the fragment: not a byte changed.
        stream = tools.extract_stream(built.temp, tmp_path / "x.bin")
        assert stream.read_bytes()[: media[source].stat().st_size] == media[source].read_bytes()

    errors, warnings = tools.dciodvfy(built.temp)
    if iod == "sc":
        assert all(e.startswith(SC_VIDEO_ERRORS) and "Number of Frames" in e for e in errors)
        assert all(w.startswith(SC_VIDEO_WARNINGS) for w in warnings), warnings
        assert all(
            any(a in w for a in SC_ONLY_ATTRIBUTES)
            for w in warnings
            if w.startswith("Warning - Attribute is not present")
        ), warnings
    else:
        assert errors == []
        # Laterality (2C): present and empty, unknown at capture (docs/conformance-notes.md).
        assert all("<Laterality>" in w for w in warnings) and len(warnings) == (iod == "mf-sc")
    dump = tools.dcmdump(built.temp, "0028,0008", "0002,0010")
    assert f"[{ts}]" in dump

    frames, width, height = tools.decoded(tools.extract_stream(built.temp, tmp_path / "s.bin"))
    assert (frames, width, height) == (ds.NumberOfFrames, ds.Columns, ds.Rows)


def test_redelivered_job_writes_the_same_uid(media: dict[str, Path], run_convert: Any) -> None:
    [first] = run_convert(media["one-frame.mp4"])
    [again] = run_convert(media["one-frame.mp4"])
    assert first.sop_instance_uid == again.sop_instance_uid
    [other] = run_convert(media["one-frame.mp4"], iod="vl")
    assert other.sop_instance_uid != first.sop_instance_uid  # other options: other instance


def test_long_recording_splits_into_playable_instances(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    source = make_video(
        tmp_path / "long.mp4",
        width=320,
        height=240,
        rate=25,
        frames=100,
        options={"preset": "ultrafast", "x264-params": "keyint=25:scenecut=0"},
    )
    limit = source.stat().st_size // 2
    parts = run_convert(source, iod="vl", limits=convert.Limits(max_fragment_bytes=limit))
    assert len(parts) >= 2
    total = 0
    for index, part in enumerate(parts):
        ds = dcmread(part.temp)
        assert ds.InstanceNumber == index + 1
        assert ds.ImageComments.startswith(f"Part {index + 1} of {len(parts)}")
        fragments = tools.extract_stream(part.temp, tmp_path / f"p{index}.mp4")
        assert fragments.stat().st_size <= limit
        frames, width, height = tools.decoded(fragments)
        assert (frames, width, height) == (ds.NumberOfFrames, 320, 240)
        total += frames
        assert tools.dciodvfy(part.temp) == ([], [])
    assert total == 100
    assert len({dcmread(p.temp).SeriesInstanceUID for p in parts}) == 1


def _streams(path: Path) -> list[str]:
    import av

    with av.open(str(path)) as container:
        return sorted(s.type for s in container.streams)


def test_allowed_audio_is_kept_and_other_audio_dropped(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    # AAC in MP4 is allowed with H.264 (PS3.5 8.2.12): the file goes in as it is, audio and all.
    with_aac = make_video(
        tmp_path / "aac.mp4", frames=25, audio="aac", options={"preset": "ultrafast"}
    )
    [built] = run_convert(with_aac)
    kept = tools.extract_stream(built.temp, tmp_path / "kept.mp4")
    assert _streams(kept) == ["audio", "video"]
    # MPEG-2 video allows MPEG-1 Layer III only (8.2.5): MP2 audio makes it a remux without it.
    with_mp2 = make_video(
        tmp_path / "mp2.ts",
        codec="mpeg2video",
        container="mpegts",
        width=720,
        height=576,
        frames=25,
        audio="mp2",
    )
    [built] = run_convert(with_mp2, ts=MPEG2_ML, iod="vl")
    dropped = tools.extract_stream(built.temp, tmp_path / "dropped.ts")
    assert _streams(dropped) == ["video"]
    assert tools.decoded(dropped)[0] == dcmread(built.temp).NumberOfFrames == 25
    assert tools.dciodvfy(built.temp) == ([], [])


def test_fragment_index_counts_samples_and_cut_files_fall_back(
    media: dict[str, Path], tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    import av
    from cinebridge_converter.probe import fragmented_sample_count

    source = media["capture-fragmented.mp4"]
    with av.open(str(source)) as container:
        track = container.streams.video[0].id
    assert fragmented_sample_count(source, track) == 45
    assert fragmented_sample_count(media["h264-720p60.mp4"], track) is None  # not fragmented
    # A recording cut off mid-fragment (power loss during capture): the index no longer adds
    # up, packets are counted instead, and the instance still states what decodes.
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(source.read_bytes()[: int(source.stat().st_size * 0.8)])
    assert fragmented_sample_count(cut, track) is None
    [built] = run_convert(cut, iod="vl")
    ds = dcmread(built.temp, stop_before_pixels=True)
    frames, _, _ = tools.decoded(tools.extract_stream(built.temp, tmp_path / "x.mp4"))
    assert frames == ds.NumberOfFrames
    assert 0 < frames < 45


def test_anamorphic_pal_keeps_its_aspect(tmp_path: Path, run_convert: Any, tools: Any) -> None:
    """720x576 with 64:45 pixels (16:9 PAL from an SD tower): MP@ML states the pixel aspect;
    H.264 (square pixels only) gets a 1024x576 transcode instead of a squeezed picture."""
    source = make_video(
        tmp_path / "pal169.ts",
        codec="mpeg2video",
        container="mpegts",
        width=720,
        height=576,
        rate=25,
        frames=10,
        sar=Fraction(64, 45),
    )
    [ml] = run_convert(source, ts=MPEG2_ML, iod="vl")
    ds = dcmread(ml.temp, stop_before_pixels=True)
    assert [int(v) for v in ds.PixelAspectRatio] == [45, 64]  # vertical \ horizontal
    assert "DerivationDescription" not in ds
    assert tools.dciodvfy(ml.temp) == ([], [])
    [h264] = run_convert(source, ts=H264, iod="vl")
    ds = dcmread(h264.temp, stop_before_pixels=True)
    assert (ds.Columns, ds.Rows) == (1024, 576) and "PixelAspectRatio" not in ds
    assert "720x576 with 64:45 pixels" in ds.DerivationDescription
    assert tools.dciodvfy(h264.temp) == ([], [])
    frames, width, height = tools.decoded(tools.extract_stream(h264.temp, tmp_path / "s.mp4"))
    assert (frames, width, height) == (10, 1024, 576)


@pytest.mark.parametrize(
    ("modality", "profile"),
    [
        ("ES", "vl-endoscopic"),
        ("es", "vl-endoscopic"),
        ("XC", "vl-photographic"),
        ("OT", "mf-sc"),
        ("", "mf-sc"),
        (None, "mf-sc"),
    ],
)
def test_standard_profile_follows_the_modality(modality: str | None, profile: str) -> None:
    assert resolve_iod("standard", modality) == profile
    assert resolve_iod("videostation", modality) == "videostation"
    with pytest.raises(ValueError, match="unknown IOD profile"):
        resolve_iod("ct", modality)


def test_interlaced_source_keeps_fields_in_mpeg2_and_its_motion_in_h264(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    """576i25 in H.264 High 4:2:2 (fits neither): MPEG-2 MP@ML keeps 25 interlaced frames, top
    field first; H.264 deinterlaces one frame per field, 50 frames a second."""
    source = make_video(
        tmp_path / "i576-422.mp4",
        width=720,
        height=576,
        rate=25,
        frames=25,
        interlaced=True,
        pix_fmt="yuv422p",
        options={"preset": "ultrafast", "flags": "+ildct+ilme", "x264-params": "tff=1"},
    )
    [ml] = run_convert(source, ts=MPEG2_ML, iod="vl")
    ds = dcmread(ml.temp, stop_before_pixels=True)
    stream = tools.extract_stream(ml.temp, tmp_path / "ml.ts")
    with av.open(str(stream)) as out:
        frames = list(out.decode(video=0))
        assert out.streams.video[0].codec_context.field_order == 2  # AV_FIELD_TT
    assert len(frames) == ds.NumberOfFrames == 25
    assert all(f.interlaced_frame for f in frames)
    assert float(ds.FrameTime) == pytest.approx(40.0)

    [h264] = run_convert(source, ts=H264, iod="vl")
    ds = dcmread(h264.temp, stop_before_pixels=True)
    frames, width, height = tools.decoded(tools.extract_stream(h264.temp, tmp_path / "h.mp4"))
    assert frames == ds.NumberOfFrames == 50
    assert float(ds.FrameTime) == pytest.approx(20.0)
    assert (width, height) == (ds.Columns, ds.Rows)
