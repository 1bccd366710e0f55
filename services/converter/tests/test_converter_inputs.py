"""What a hospital feeds the converter besides capture's own files, made here with FFmpeg/Pillow.

Each input becomes valid DICOM (dciodvfy: no error with the Multi-frame True Color SC profile;
the stream decodes to exactly Number of Frames at the stated Rows and Columns), or is refused
with a reason that names the cause and leaves nothing behind. The converter README's "Inputs"
table lists the same inputs with their outcome.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest
from cinebridge_common.store import MediaStore
from cinebridge_converter import cli
from cinebridge_converter.errors import BadMedia
from cinebridge_testkit import require_tool
from PIL import Image
from pydicom import dcmread

Make = Callable[[Path], None]
PATTERN = "testsrc2=size={size}:rate=25"


def ffmpeg(*args: str, size: str = "320x240", before: tuple[str, ...] = ()) -> Make:
    """A file made by the FFmpeg command line from its lavfi test pattern."""

    def make(path: Path) -> None:
        command = [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y"]
        source = ("-f", "lavfi", "-i", PATTERN.format(size=size))
        subprocess.run(
            [*command, *before, *source, *args, str(path)],
            check=True,
            timeout=300,
            capture_output=True,
        )

    return make


def remade(make: Make, before: tuple[str, ...], after: tuple[str, ...] = ()) -> Make:
    """A file made by `make`, then copied by FFmpeg (no re-encode) with input options `before`
    and output options `after`."""

    def again(path: Path) -> None:
        first = path.with_name(f"first-{path.name}")
        make(first)
        command = [require_tool("ffmpeg"), "-hide_banner", "-loglevel", "error", "-y"]
        subprocess.run(
            [*command, *before, "-i", str(first), *after, "-c", "copy", str(path)],
            check=True,
            timeout=120,
            capture_output=True,
        )

    return again


def cut(make: Make, keep: Callable[[bytes], int]) -> Make:
    """A file made by `make`, cut off after `keep(data)` bytes (a recorder killed)."""

    def shorter(path: Path) -> None:
        make(path)
        data = path.read_bytes()
        path.write_bytes(data[: keep(data)])

    return shorter


def pillow(mode: str, fmt: str, **save: Any) -> Make:
    """A still of the test pattern in a Pillow mode, with the left half transparent for RGBA."""

    def make(path: Path) -> None:
        png = path.with_name(f"pattern-{path.stem}.png")
        ffmpeg("-frames:v", "1")(png)
        with Image.open(png) as img:
            picture = img.convert("RGBA")
        if mode == "RGBA":
            alpha = np.full((240, 320), 255, np.uint8)
            alpha[:, :160] = 0
            picture.putalpha(Image.fromarray(alpha))
        picture.convert(mode).save(path, fmt, **save)

    return make


def grey16(path: Path) -> None:
    """A 16-bit greyscale PNG: a ramp over the whole 16-bit range, left dark, right bright."""
    ramp = np.tile(np.linspace(0, 65535, 320).astype(np.uint16), (240, 1))
    Image.fromarray(ramp).save(path, "PNG")  # uint16: Pillow's I;16


X264 = ("-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p")
H264_2S = ffmpeg("-t", "2", *X264)


@dataclass(frozen=True)
class Good:
    name: str
    make: Make
    frames: int | None  # None: a still
    size: tuple[int, int] = (320, 240)  # (Columns, Rows) expected
    kind: str = "recording"


GOOD = [
    Good("vp9.webm", ffmpeg("-t", "1", "-c:v", "libvpx-vp9", "-deadline", "realtime"), 25),
    Good("av1.mkv", ffmpeg("-t", "1", "-c:v", "libsvtav1", "-preset", "12"), 25),
    Good("av1.mp4", ffmpeg("-t", "1", "-c:v", "libsvtav1", "-preset", "12"), 25),
    Good("prores422.mov", ffmpeg("-t", "1", "-c:v", "prores_ks", "-profile:v", "2"), 25),
    Good(
        "dnxhd.mxf",
        ffmpeg(
            "-t", "0.4", "-c:v", "dnxhd", "-b:v", "36M", "-pix_fmt", "yuv422p", size="1920x1080"
        ),
        10,
        (1920, 1080),
    ),
    Good("mpeg4-part2.avi", ffmpeg("-t", "1", "-c:v", "mpeg4", "-vtag", "XVID"), 25),
    Good(
        "h264-high422-10bit.mp4",
        ffmpeg("-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv422p10le"),
        25,
    ),
    # A phone held upright: coded 320x240, a display matrix turning it 90 degrees.
    Good(
        "rotated-90.mp4",
        remade(ffmpeg("-t", "1", *X264), (), ("-metadata:s:v:0", "rotate=90")),
        25,
        (240, 320),
    ),
    Good(
        "pal-sar16-15.mp4",
        ffmpeg("-t", "1", *X264, "-vf", "setsar=16/15", size="720x576"),
        25,
        (768, 576),
    ),
    Good(
        "anamorphic-64-45.mp4",
        ffmpeg("-t", "1", *X264, "-vf", "setsar=64/45", size="720x576"),
        25,
        (1024, 576),
    ),
    Good("one-frame.mp4", ffmpeg("-frames:v", "1", *X264), 1),
    # An edit list that starts the presentation 1.5 s late, and one that skips its first 0.5 s.
    Good("edit-list-late.mp4", remade(H264_2S, ("-itsoffset", "1.5")), 50),
    Good("edit-list-skip.mp4", remade(H264_2S, ("-ss", "0.5")), None),
    Good(
        "faststart-cut.mp4",
        cut(ffmpeg("-t", "2", *X264, "-movflags", "+faststart"), lambda d: len(d) // 2),
        None,
    ),
    Good("8k.mp4", ffmpeg("-frames:v", "2", *X264, size="7680x4320"), 2, (1920, 1080)),
    Good("animated.gif", ffmpeg("-t", "1"), 25),
    Good("alpha.png", pillow("RGBA", "PNG"), None, kind="snapshot"),
    Good("grey16.png", grey16, None, kind="snapshot"),
    Good("grey.jpg", pillow("L", "JPEG"), None, kind="snapshot"),
    Good("cmyk.jpg", pillow("CMYK", "JPEG"), None, kind="snapshot"),
    Good("picture.bmp", pillow("RGB", "BMP"), None, kind="snapshot"),
    Good("picture.tif", pillow("RGB", "TIFF"), None, kind="snapshot"),
    Good("animated-first-frame.gif", ffmpeg("-t", "1"), None, kind="snapshot"),
]

BY_NAME = {g.name: g for g in GOOD}


@pytest.mark.parametrize("good", GOOD, ids=[g.name for g in GOOD])
def test_input_becomes_valid_playable_dicom(
    tmp_path: Path, run_convert: Any, tools: Any, good: Good
) -> None:
    source = tmp_path / good.name
    good.make(source)
    built = run_convert(source, kind=good.kind, iod="mf-sc")
    assert len(built) == 1
    path = built[0].temp
    errors, _ = tools.dciodvfy(path)
    assert errors == []
    ds = dcmread(path, stop_before_pixels=True)
    assert (ds.Columns, ds.Rows) == good.size
    stream = tools.extract_stream(path, tmp_path / "stream.bin")
    if good.kind == "snapshot":
        with Image.open(stream) as img:
            assert img.size == good.size
        assert "NumberOfFrames" not in ds
        return
    frames, width, height = tools.decoded(stream)
    assert (frames, width, height) == (ds.NumberOfFrames, ds.Columns, ds.Rows)
    if good.frames is not None:
        assert ds.NumberOfFrames == good.frames
    # PS3.3 C.8.6.3: Frame Increment Pointer only for more than one frame (then Frame Time).
    assert ("FrameIncrementPointer" in ds) is (ds.NumberOfFrames > 1)


def _first_picture(path: Path, tmp_path: Path, tools: Any) -> Any:
    stream = tools.extract_stream(path, tmp_path / "first.bin")
    with av.open(str(stream)) as container:
        frame = next(container.decode(video=0))
        return frame.to_ndarray(format="rgb24").astype(int)


def test_rotated_recording_is_turned_upright_as_players_show_it(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    source = tmp_path / "rotated.mp4"
    BY_NAME["rotated-90.mp4"].make(source)
    [built] = run_convert(source, iod="mf-sc")
    ds = dcmread(built.temp, stop_before_pixels=True)
    assert "display matrix" in ds.DerivationDescription
    shown = tmp_path / "shown.png"  # what the ffmpeg tool shows: it applies the display matrix
    subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-i", str(source), "-frames:v", "1", str(shown)],
        check=True,
        timeout=60,
    )
    with Image.open(shown) as img:
        expected = np.asarray(img.convert("RGB")).astype(int)
    picture = _first_picture(built.temp, tmp_path, tools)
    assert picture.shape == expected.shape == (320, 240, 3)
    assert np.abs(picture - expected).mean() < 8  # coding noise only
    assert np.abs(np.rot90(picture, 2) - expected).mean() > 40  # not upside down either


def test_deep_and_transparent_stills_keep_their_picture(
    tmp_path: Path, run_convert: Any, tools: Any
) -> None:
    grey, alpha = tmp_path / "grey16.png", tmp_path / "alpha.png"
    grey16(grey)
    pillow("RGBA", "PNG")(alpha)
    [deep] = run_convert(grey, kind="snapshot", iod="mf-sc")
    with Image.open(tools.extract_stream(deep.temp, tmp_path / "a.jpg")) as img:
        values = np.asarray(img.convert("L")).astype(int)
    # 16-bit values scaled to 8 bits: a ramp from black to white, not clipped to white.
    assert values[:, :16].mean() < 20 and values[:, -16:].mean() > 235
    assert 100 < values[:, 150:170].mean() < 155
    [clear] = run_convert(alpha, kind="snapshot", iod="mf-sc")
    with Image.open(tools.extract_stream(clear.temp, tmp_path / "b.jpg")) as img:
        rgb = np.asarray(img.convert("RGB")).astype(int)
    assert rgb[:, :150].max() < 24  # the transparent half shows black
    assert rgb[:, 170:].mean() > 60


REFUSED = [
    (
        "audio-only.mp3",
        ffmpeg("-t", "1", "-vn", "-c:a", "libmp3lame", before=("-f", "lavfi", "-i", "sine")),
        "not a video format",
    ),
    (
        "moov-missing.mp4",
        cut(H264_2S, lambda d: d.find(b"moov") - 4),
        "no complete index (moov box)",
    ),
    ("moov-cut.mp4", cut(H264_2S, lambda d: d.find(b"moov") + 200), "no complete index (moov box)"),
    ("jpeg-named.mp4", ffmpeg("-frames:v", "1", "-f", "mjpeg"), "not a video format"),
]


@pytest.mark.parametrize(("name", "make", "reason"), REFUSED, ids=[r[0] for r in REFUSED])
def test_input_is_refused_with_its_cause(
    tmp_path: Path, store: MediaStore, run_convert: Any, name: str, make: Make, reason: str
) -> None:
    source = tmp_path / name
    make(source)
    with pytest.raises(BadMedia) as caught:
        run_convert(source)
    assert reason in caught.value.reason
    assert list(store.tmp.iterdir()) == []
    assert not (store.root / "dicom").exists()


@pytest.mark.parametrize(
    ("name", "make", "kind"),
    [
        ("picture.tif", pillow("RGB", "TIFF"), "snapshot"),
        ("still.gif", ffmpeg("-frames:v", "1"), "snapshot"),
        ("animated.gif", ffmpeg("-t", "1"), "recording"),
        ("jpeg-named.mp4", ffmpeg("-frames:v", "1", "-f", "mjpeg"), "snapshot"),
        ("clip.mxf", BY_NAME["dnxhd.mxf"].make, "recording"),
    ],
)
def test_convert_command_tells_a_file_by_its_content(
    tmp_path: Path, name: str, make: Make, kind: str
) -> None:
    source = tmp_path / name
    make(source)
    assert cli._kind(source) == kind
