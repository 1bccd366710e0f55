"""The data set of each instance we create: statement Annex 8.1 (SC) and the VL / Video IODs.

IOD profiles (`IODS`; the station's setting, or a job's explicit choice):

- "standard" (default): chosen by the study's Modality — ES: VL Endoscopic / Video Endoscopic
  Image (PS3.3 A.32.1, A.32.5); XC: VL Photographic / Video Photographic Image (A.32.4, A.32.7);
  anything else: Secondary Capture for stills, Multi-frame True Color Secondary Capture for
  recordings (A.8.1, A.8.5). Every object is a standard SOP class used as defined.
- "videostation" (alias "sc"): the conformance statement's own behaviour, Secondary Capture for
  stills and recordings alike (statement Table 9); a recording is then an SC object with Number
  of Frames, which dciodvfy reports (docs/conformance-notes.md).
- "mf-sc", "vl" = "vl-endoscopic", "vl-photographic": one family whatever the modality.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from fractions import Fraction

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import UID

from . import __version__
from .rules import JPEG_BASELINE

#: Our own implementation identity (statement Table 27 names the vendor's; PS3.7 D.3.3.2): a
#: fixed UUID-derived UID (PS3.5 B.2), make_uid("cinebridge", "implementation-class").
IMPLEMENTATION_CLASS_UID = "2.25.231146537104115387384599011126498923002"
IMPLEMENTATION_VERSION = f"CINEBRIDGE_{__version__}"[:16]
MANUFACTURER = "CineBridge"
MODEL_NAME = "CineBridge Converter"

SC = "1.2.840.10008.5.1.4.1.1.7"
VL_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1"
VIDEO_ENDOSCOPIC = "1.2.840.10008.5.1.4.1.1.77.1.1.1"
VL_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4"
VIDEO_PHOTOGRAPHIC = "1.2.840.10008.5.1.4.1.1.77.1.4.1"
MF_TRUE_COLOR_SC = "1.2.840.10008.5.1.4.1.1.7.4"
SC_FAMILY = (SC, MF_TRUE_COLOR_SC)
#: (still, video, modality) per IOD profile; dciodvfy strval/vl.tpl: ES endoscopic, XC photo.
IODS = {
    "videostation": (SC, SC, None),
    "sc": (SC, SC, None),
    "mf-sc": (SC, MF_TRUE_COLOR_SC, None),
    "vl": (VL_ENDOSCOPIC, VIDEO_ENDOSCOPIC, "ES"),
    "vl-endoscopic": (VL_ENDOSCOPIC, VIDEO_ENDOSCOPIC, "ES"),
    "vl-photographic": (VL_PHOTOGRAPHIC, VIDEO_PHOTOGRAPHIC, "XC"),
}
#: The "standard" profile by the study's Modality; other modalities get the SC family.
STANDARD_BY_MODALITY = {"ES": "vl-endoscopic", "XC": "vl-photographic"}
STATEMENT_PROFILES = ("videostation", "sc")


def resolve_iod(choice: str, modality: str | None) -> str:
    """The concrete profile of `IODS` for a choice ("standard" looks at the Modality)."""
    if choice == "standard":
        return STANDARD_BY_MODALITY.get((modality or "").strip().upper(), "mf-sc")
    if choice not in IODS:
        raise ValueError(f"unknown IOD profile {choice!r}")
    return choice


FRAME_TIME = Tag(0x0018, 0x1063)


@dataclass(frozen=True)
class Pixels:
    """What the encapsulated stream is, as measured (never as declared by the capture)."""

    ts_uid: str
    rows: int
    columns: int
    photometric: str
    frames: int | None  # None: a still
    rate: Fraction | None
    lossy_method: str  # ISO_10918_1, ISO_14496_10, ISO_13818_2
    lossy_ratio: float | None
    derivation: str | None  # set when we re-encoded: says from what and why
    #: (vertical, horizontal) size of a pixel when not square (MPEG-2 MP@ML only, PS3.5 8.2.5)
    pixel_aspect: tuple[int, int] | None = None


@dataclass(frozen=True)
class Identity:
    sop_instance_uid: str
    series_instance_uid: str
    series_number: int
    instance_number: int
    series_description: str  # the source's name (statement: one series per source)
    content_time: dt.datetime  # when the media was captured (local time)
    created: dt.datetime
    part: tuple[int, int] = (1, 1)  # (k, n): part k of a recording split into n instances


@dataclass(frozen=True)
class Station:
    #: Station Name (0008,1010): statement Table 33, the station's own AE title.
    station_name: str
    character_set: str
    iod: str
    anatomic_region: tuple[str, str, str]  # (value, scheme, meaning) for video VL IODs


def sop_class_for(iod: str, *, video: bool) -> str:
    still, moving, _ = IODS[iod]
    return moving if video else still


def build_dataset(study: Dataset, pixels: Pixels, ident: Identity, station: Station) -> Dataset:
    video = pixels.frames is not None
    sop_class = sop_class_for(station.iod, video=video)
    ds = Dataset()
    ds.file_meta = _file_meta(sop_class, ident.sop_instance_uid, pixels.ts_uid)
    if station.character_set:
        ds.SpecificCharacterSet = station.character_set
    ds.update(study)
    _equipment_and_series(ds, ident, station, sop_class)
    _image(ds, pixels, ident, video=video, sc=sop_class in SC_FAMILY)
    if video or station.iod not in STATEMENT_PROFILES:
        # Statement Table 35: four values, the third and fourth empty; absent for its snapshots.
        first = "DERIVED" if pixels.derivation else "ORIGINAL"
        ds.ImageType = [first, "PRIMARY", "", ""]
    _image_pixel(ds, pixels)
    if video:
        _multiframe(ds, pixels, sc=sop_class in SC_FAMILY)
    if sop_class == MF_TRUE_COLOR_SC:
        # PS3.3 C.8.6.3 (SC Multi-frame Image), Type 1. A device's video may show the patient's
        # name or other text in the picture: say so rather than promise it does not.
        ds.BurnedInAnnotation = "YES"
    if sop_class not in SC_FAMILY:
        _vl(ds, station, video=video)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = ident.sop_instance_uid
    ds.InstanceCreationDate = ident.created.strftime("%Y%m%d")
    ds.InstanceCreationTime = ident.created.strftime("%H%M%S")
    if ident.part[1] > 1:
        # PS3.5 8.2.7 note: several instances, each playable, related by the series (no
        # CID 7201 purpose says "next part", so no Referenced Image Sequence).
        k, n = ident.part
        ds.ImageComments = f"Part {k} of {n} of one recording, in order of Instance Number"
    return ds


def _file_meta(sop_class: str, sop_instance: str, ts_uid: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = UID(sop_instance)
    meta.TransferSyntaxUID = UID(ts_uid)
    meta.ImplementationClassUID = UID(IMPLEMENTATION_CLASS_UID)
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION
    return meta


def _equipment_and_series(ds: Dataset, ident: Identity, station: Station, sop_class: str) -> None:
    modality = IODS[station.iod][2]
    if modality:
        ds.Modality = modality  # the VL IODs fix it (PS3.3 C.8.12.x); the worklist's is for SC
    ds.SeriesInstanceUID = ident.series_instance_uid
    ds.SeriesNumber = ident.series_number
    if sop_class in (SC, MF_TRUE_COLOR_SC, VL_ENDOSCOPIC, VL_PHOTOGRAPHIC):
        # Statement Table 32: always empty, the body part is unknown at capture; dciodvfy wants
        # it (2C) in the still IODs and warns that empty means unknown (conformance-notes.md).
        ds.Laterality = ""
    ds.SeriesDate = ident.content_time.strftime("%Y%m%d")
    ds.SeriesTime = ident.content_time.strftime("%H%M%S")
    ds.SeriesDescription = ident.series_description[:64]
    ds.Manufacturer = MANUFACTURER
    ds.StationName = station.station_name[:16]
    ds.SoftwareVersions = __version__
    if sop_class in SC_FAMILY:
        ds.SecondaryCaptureDeviceManufacturer = MANUFACTURER
        ds.SecondaryCaptureDeviceManufacturerModelName = MODEL_NAME
        ds.SecondaryCaptureDeviceSoftwareVersions = __version__


def _image(ds: Dataset, pixels: Pixels, ident: Identity, *, video: bool, sc: bool) -> None:
    if sc:
        ds.ConversionType = "DV" if video else "SI"  # statement Table 34
        ds.DateOfSecondaryCapture = ident.created.strftime("%Y%m%d")
        ds.TimeOfSecondaryCapture = ident.created.strftime("%H%M%S")
    ds.ContentDate = ident.content_time.strftime("%Y%m%d")
    ds.ContentTime = ident.content_time.strftime("%H%M%S.%f")[:13]
    ds.AcquisitionDateTime = ident.content_time.strftime("%Y%m%d%H%M%S")
    ds.InstanceNumber = ident.instance_number
    ds.PatientOrientation = ""
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionMethod = pixels.lossy_method
    if pixels.lossy_ratio:
        ds.LossyImageCompressionRatio = f"{pixels.lossy_ratio:.2f}"[:16]
    if pixels.derivation:
        ds.DerivationDescription = pixels.derivation[:1024]


def _image_pixel(ds: Dataset, pixels: Pixels) -> None:
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = pixels.photometric
    ds.PlanarConfiguration = 0
    ds.Rows = pixels.rows
    ds.Columns = pixels.columns
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    if pixels.pixel_aspect is not None:
        ds.PixelAspectRatio = list(pixels.pixel_aspect)  # PS3.3 C.7.6.3.1.7


def _multiframe(ds: Dataset, pixels: Pixels, *, sc: bool) -> None:
    """Multi-frame and Cine modules from the measured stream (PS3.3 C.7.6.6, C.7.6.5)."""
    assert pixels.frames is not None and pixels.rate is not None
    rate = float(pixels.rate)
    ds.NumberOfFrames = pixels.frames
    if sc and pixels.frames == 1:
        # A one-frame recording: the SC Multi-frame Image module's Frame Increment Pointer is
        # Type 1C, only for more than one frame (PS3.3 C.8.6.3), and the Cine module is used
        # only when it points at Frame Time (A.8.5.4), so neither may be present.
        return
    ds.FrameIncrementPointer = FRAME_TIME
    ds.FrameTime = f"{1000.0 / rate:.4f}".rstrip("0").rstrip(".")[:16]
    ds.CineRate = round(rate)
    ds.RecommendedDisplayFrameRate = round(rate)
    ds.StartTrim = 1
    ds.StopTrim = pixels.frames
    ds.ActualFrameDuration = round(1000.0 / rate)
    ds.PreferredPlaybackSequencing = 0  # looping


def _vl(ds: Dataset, station: Station, *, video: bool) -> None:
    ds.AcquisitionContextSequence = Sequence()
    if video:
        value, scheme, meaning = station.anatomic_region
        region = Dataset()
        region.CodeValue = value
        region.CodingSchemeDesignator = scheme
        region.CodeMeaning = meaning
        ds.AnatomicRegionSequence = Sequence([region])


def still_pixels(rows: int, columns: int, size: int, derivation: str | None) -> Pixels:
    return Pixels(
        ts_uid=JPEG_BASELINE,
        rows=rows,
        columns=columns,
        photometric="YBR_FULL_422",
        frames=None,
        rate=None,
        lossy_method="ISO_10918_1",
        lossy_ratio=rows * columns * 3 / max(1, size),
        derivation=derivation,
    )
