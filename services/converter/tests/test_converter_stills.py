"""Snapshots: a baseline JPEG goes in byte for byte; anything else is re-encoded and says so."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from cinebridge_converter.probe import probe_still
from cinebridge_testkit.media import make_still
from PIL import Image
from pydicom import dcmread
from pydicom.encaps import generate_fragments

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"

CASES = [
    # file maker kwargs, re-encoded?
    ("420.jpg", dict(subsampling=2), False),
    ("422.jpg", dict(subsampling=1), False),
    ("444.jpg", dict(subsampling=0), True),
    ("progressive.jpg", dict(progressive=True), True),
    ("snapshot.png", dict(fmt="PNG"), True),
    ("snapshot.bmp", dict(fmt="BMP"), True),
]


@pytest.mark.parametrize(("name", "kw", "reencoded"), CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("iod", ["sc", "vl", "vl-photographic"])
def test_snapshot_becomes_jpeg_baseline(
    tmp_path: Path,
    run_convert: Any,
    tools: Any,
    name: str,
    kw: dict[str, Any],
    reencoded: bool,
    iod: str,
) -> None:
    source = make_still(tmp_path / name, width=320, height=240, **kw)
    [built] = run_convert(source, kind="snapshot", iod=iod)
    ds = dcmread(built.temp)
    assert ds.file_meta.TransferSyntaxUID == JPEG_BASELINE
    assert ds.PhotometricInterpretation == "YBR_FULL_422"
    assert (ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration) == (240, 320, 3, 0)
    [fragment] = [f for f in generate_fragments(ds.PixelData) if f]  # after the empty BOT
    if not reencoded:
        assert fragment.rstrip(b"\x00") == source.read_bytes().rstrip(b"\x00")
        assert "DerivationDescription" not in ds
    else:
        assert "re-encoded" in ds.DerivationDescription
    out = tmp_path / "out.jpg"
    out.write_bytes(fragment)
    info = probe_still(out, max_pixels=10**8)
    assert info.baseline and info.sampling in ("420", "422") and info.components == 3
    with Image.open(io.BytesIO(fragment)) as img:
        assert img.size == (ds.Columns, ds.Rows)
    if iod == "sc":
        assert "ImageType" not in ds  # statement Table 35: absent for snapshots
        assert ds.ConversionType == "SI"
        assert "NumberOfFrames" not in ds
    else:
        assert ds.Modality == ("ES" if iod == "vl" else "XC")
    errors, warnings = tools.dciodvfy(built.temp)
    assert errors == []
    # Statement Table 32: Laterality "always empty" (unknown at capture); dciodvfy warns that
    # empty means unknown. That is the only warning (docs/conformance-notes.md).
    assert len(warnings) == 1 and "<Laterality>" in warnings[0]
    tools.dcmdump(built.temp)
