"""What an uploaded file is, by FFmpeg's probing of its content (uploads.probe)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from cinebridge_gateway import uploads
from cinebridge_testkit import require_tool

PATTERN = "testsrc2=size=1920x1080:rate=25"
DNXHD = ("-t", "0.2", "-c:v", "dnxhd", "-b:v", "36M", "-pix_fmt", "yuv422p", "-f", "mxf")


def test_an_mxf_recording_is_taken_as_the_converter_reads_it(tmp_path: Path) -> None:
    """DNxHD in MXF (SMPTE 377M), what broadcast-style recorders write: the converter reads MXF,
    so an upload of one is a recording, not "not a video"."""
    path = tmp_path / "clip.bin"  # the name says nothing: the content decides
    subprocess.run(
        [require_tool("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", PATTERN, *DNXHD, str(path)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    found = uploads.probe(path)
    assert (found.kind, found.ext, found.mime) == ("recording", "mxf", "application/mxf")
    assert (found.width, found.height, found.codec) == (1920, 1080, "dnxhd")


def test_tiff_is_a_still_and_gif_a_recording(tmp_path: Path) -> None:
    """TIFF (scanners, microscopes) becomes a snapshot; a GIF (an animated picture) becomes a
    recording the converter re-encodes. Both were refused as not media."""
    tiff, gif = tmp_path / "a.bin", tmp_path / "b.bin"
    for path, fmt in ((tiff, "tiff"), (gif, "gif")):
        subprocess.run(
            [require_tool("ffmpeg"), "-v", "error", "-f", "lavfi", "-i", "testsrc2=size=320x240"]
            + ["-frames:v", "5" if fmt == "gif" else "1", "-f", "image2" if fmt == "tiff" else fmt]
            + (["-c:v", "tiff"] if fmt == "tiff" else [])
            + [str(path)],
            check=True,
            timeout=60,
            capture_output=True,
        )
    assert (uploads.probe(tiff).kind, uploads.probe(tiff).ext) == ("snapshot", "tif")
    assert (uploads.probe(gif).kind, uploads.probe(gif).ext) == ("recording", "gif")
