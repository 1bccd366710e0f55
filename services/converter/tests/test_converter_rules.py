"""Which streams fit which video transfer syntax (PS3.5 8.2.5-8.2.8), and what we encode to."""

from __future__ import annotations

import dataclasses
from fractions import Fraction

import pytest
from cinebridge_converter import rules
from cinebridge_converter.probe import VideoProbe

BASE = VideoProbe(
    container="mp4",
    codec="h264",
    profile="High",
    level=40,
    width=1920,
    height=1080,
    rate=Fraction(30),
    interlaced=False,
    pix_fmt="yuv420p",
    duration_s=10.0,
    frames=300,
    audio_codecs=(),
    other_streams=0,
    size=10_000_000,
)


def probe(**changes: object) -> VideoProbe:
    return dataclasses.replace(BASE, **changes)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("changes", "ts", "fits"),
    [
        ({}, rules.H264_HP41, True),
        ({"profile": "Main", "level": 31, "width": 1280, "height": 720}, rules.H264_HP41, True),
        ({"level": 42}, rules.H264_HP41, False),
        ({"profile": "High 4:2:2", "pix_fmt": "yuv422p"}, rules.H264_HP41, False),
        ({"rate": Fraction(60), "level": 41}, rules.H264_HP41, False),  # 1080p60 is beyond 4.1
        ({"rate": Fraction(15)}, rules.H264_HP41, False),  # odd rate
        ({"codec": "hevc", "profile": "Main"}, rules.H264_HP41, False),
        ({"rate": Fraction(24)}, rules.H264_BD, True),
        ({"rate": Fraction(30000, 1001), "interlaced": True}, rules.H264_BD, True),
        ({}, rules.H264_BD, False),  # 1080p30 is not a BD format
        ({"width": 1280, "height": 720, "rate": Fraction(60000, 1001)}, rules.H264_BD, True),
        (
            {
                "codec": "mpeg2video",
                "profile": "Main",
                "width": 720,
                "height": 576,
                "rate": Fraction(25),
            },
            rules.MPEG2_MPML,
            True,
        ),
        (
            {
                "codec": "mpeg2video",
                "profile": "Main",
                "width": 720,
                "height": 576,
                "rate": Fraction(30000, 1001),
            },
            rules.MPEG2_MPML,
            False,
        ),  # 576 lines only at 25 Hz
        (
            {
                "codec": "mpeg2video",
                "profile": "Main",
                "width": 1920,
                "height": 1080,
                "rate": Fraction(25),
            },
            rules.MPEG2_MPHL,
            True,
        ),
        (
            {
                "codec": "mpeg2video",
                "profile": "Main",
                "width": 1440,
                "height": 1080,
                "rate": Fraction(25),
            },
            rules.MPEG2_MPHL,
            False,
        ),
    ],
)
def test_misfits(changes: dict[str, object], ts: str, fits: bool) -> None:
    assert (rules.misfits(probe(**changes), ts) == []) is fits


def test_29_97_and_30_stay_apart() -> None:
    assert rules.standard_rate(Fraction(30)) == Fraction(30)
    assert rules.standard_rate(Fraction(30000, 1001)) == rules.NTSC
    assert rules.standard_rate(Fraction(2997, 100)) == rules.NTSC


@pytest.mark.parametrize(
    ("changes", "ts", "size", "rate"),
    [
        (
            {"codec": "hevc", "width": 3840, "height": 2160},
            rules.H264_HP41,
            (1920, 1080),
            Fraction(30),
        ),
        ({"rate": Fraction(60)}, rules.H264_HP41, (1280, 720), Fraction(60)),
        ({"rate": Fraction(15)}, rules.H264_HP41, (1920, 1080), Fraction(25)),
        ({}, rules.H264_BD, (1280, 720), Fraction(60000, 1001)),
        ({"rate": Fraction(25)}, rules.H264_BD, (1280, 720), Fraction(50)),
        ({}, rules.MPEG2_MPML, (720, 404), Fraction(30)),
        ({"rate": Fraction(25)}, rules.MPEG2_MPHL, (1920, 1080), Fraction(25)),
    ],
)
def test_encode_targets_fit_their_syntax(
    changes: dict[str, object], ts: str, size: tuple[int, int], rate: Fraction
) -> None:
    target = rules.encode_target(probe(**changes), ts, "veryfast")
    assert (target.width, target.height, target.rate) == (*size, rate)
    made = probe(
        codec="h264" if "x264" in target.codec else "mpeg2video",
        profile="Main",
        level=41,
        width=target.width,
        height=target.height,
        rate=target.rate,
    )
    assert rules.misfits(made, ts) == []


def test_variable_rate_is_detected_and_resampled_to_the_timestamps_rate() -> None:
    from cinebridge_converter.probe import variable_rate

    assert variable_rate(Fraction(1230, 83), Fraction(30))
    assert not variable_rate(Fraction(25), Fraction(25))
    assert not variable_rate(Fraction(25), Fraction(50))  # a field rate, not a variable one
    vfr = probe(rate=Fraction(1230, 83), base_rate=Fraction(30), vfr=True)
    assert any("variable frame rate" in r for r in rules.misfits(vfr, rules.H264_HP41))
    assert rules.encode_target(vfr, rules.H264_HP41, "ultrafast").rate == 30


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"bit_rate": 48_000_000}, "above BD's 40 Mbit/s"),
        ({"profile": "Constrained Baseline"}, "not a BD profile"),
        ({"rate": Fraction(25)}, "1920x1080p at 25.000 fps is not a BD format"),
    ],
)
def test_bd_compatibility_checks_profile_format_and_bit_rate(
    changes: dict[str, object], reason: str
) -> None:
    film = probe(rate=Fraction(24), bit_rate=20_000_000)
    assert rules.misfits(film, rules.H264_BD) == []
    reasons = rules.misfits(dataclasses.replace(film, **changes), rules.H264_BD)  # type: ignore[arg-type]
    assert len(reasons) == 1 and reason in reasons[0]


def test_interlaced_source_keeps_its_motion() -> None:
    i50 = probe(interlaced=True, rate=Fraction(25), profile="High 4:2:2", pix_fmt="yuv422p")
    # H.264: one frame per field, 1080p50 is beyond level 4.1, so 720p50.
    h264 = rules.encode_target(i50, rules.H264_HP41, "ultrafast")
    assert (h264.rate, h264.width, h264.height) == (50, 1280, 720)
    assert not rules.interlaced_target(i50, h264)
    # MPEG-2 MP@ML stays interlaced at the frame rate, fields in the source's order.
    sd = dataclasses.replace(i50, width=720, height=576)
    ml = rules.encode_target(sd, rules.MPEG2_MPML, "ultrafast")
    assert (ml.rate, ml.height) == (25, 576) and rules.interlaced_target(sd, ml)
