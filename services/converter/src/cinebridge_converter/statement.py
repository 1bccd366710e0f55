"""The converter's part of the conformance statement (PS3.2 A.8.1): the objects it writes.

Nothing here is a hand-written list of attributes: for each object type of the IOD profile in
effect, two objects are built with `dicomize.build_dataset` and `mwl.study_attributes` (the code
every conversion uses) from two different generated studies and media, written as Part 10 and read
back. What both carry is listed; a value the two share is a fixed value, one they do not is per
instance, and the study's attributes are named by their source. Only the module of each
attribute (PS3.3) is looked up here; an attribute without one is "Unlisted", which the tests refuse.
"""

from __future__ import annotations

import datetime as dt
from fractions import Fraction
from io import BytesIO
from typing import Any

from cinebridge_common import __version__
from cinebridge_common.messages.conformance import (
    ConformanceReply,
    CreatedObject,
    NamedUid,
    ObjectAttribute,
)
from cinebridge_common.station import StationSettings
from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID

from . import mwl
from .dicomize import (
    STANDARD_BY_MODALITY,
    Identity,
    Pixels,
    Station,
    build_dataset,
    resolve_iod,
    still_pixels,
)
from .settings import ConverterSettings

UNLISTED = "Unlisted"
#: PS3.3 module of each attribute the converter writes (PS3.10 7.1 for the file meta).
MODULES: dict[str, str] = {
    **dict.fromkeys(
        ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex"),
        "Patient",
    ),
    "ReferencedPatientSequence": "Patient",
    **dict.fromkeys(
        (
            "StudyInstanceUID", "StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID",
            "AccessionNumber", "StudyDescription", "ReferencedStudySequence",
            "ProcedureCodeSequence",
        ),
        "General Study",
    ),
    **dict.fromkeys(
        ("AdmittingDiagnosesDescription", "PatientWeight", "AdditionalPatientHistory",
         "AdmissionID", "PregnancyStatus"),
        "Patient Study",
    ),
    **dict.fromkeys(("MedicalAlerts", "Allergies", "PatientState"), "Patient Medical"),
    **dict.fromkeys(
        ("Modality", "SeriesInstanceUID", "SeriesNumber", "Laterality", "SeriesDate",
         "SeriesTime", "SeriesDescription", "ProtocolName", "RequestAttributesSequence"),
        "General Series",
    ),
    **dict.fromkeys(("Manufacturer", "StationName", "SoftwareVersions"), "General Equipment"),
    **dict.fromkeys(
        ("ConversionType", "SecondaryCaptureDeviceManufacturer",
         "SecondaryCaptureDeviceManufacturerModelName", "SecondaryCaptureDeviceSoftwareVersions"),
        "SC Equipment",
    ),
    **dict.fromkeys(("DateOfSecondaryCapture", "TimeOfSecondaryCapture"), "SC Image"),
    "BurnedInAnnotation": "SC Multi-frame Image",
    **dict.fromkeys(
        ("ContentDate", "ContentTime", "InstanceNumber", "PatientOrientation", "ImageType",
         "LossyImageCompression", "LossyImageCompressionMethod", "LossyImageCompressionRatio",
         "DerivationDescription", "ImageComments"),
        "General Image",
    ),
    "AcquisitionDateTime": "General Acquisition",
    **dict.fromkeys(
        ("SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "Rows", "Columns",
         "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "PixelAspectRatio",
         "PixelData"),
        "Image Pixel",
    ),
    **dict.fromkeys(("NumberOfFrames", "FrameIncrementPointer"), "Multi-frame"),
    **dict.fromkeys(
        ("FrameTime", "CineRate", "RecommendedDisplayFrameRate", "StartTrim", "StopTrim",
         "ActualFrameDuration", "PreferredPlaybackSequencing"),
        "Cine",
    ),
    "AcquisitionContextSequence": "Acquisition Context",
    "AnatomicRegionSequence": "VL Image",
    **dict.fromkeys(
        ("SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceCreationDate",
         "InstanceCreationTime"),
        "SOP Common",
    ),
}  # fmt: skip
FILE_META = "File Meta Information"
_TS_NAMES = {
    "1.2.840.10008.1.2.4.50": "JPEG Baseline (Process 1)",
    "1.2.840.10008.1.2.4.100": "MPEG-2 Main Profile @ Main Level",
    "1.2.840.10008.1.2.4.101": "MPEG-2 Main Profile @ High Level",
    "1.2.840.10008.1.2.4.102": "MPEG-4 AVC/H.264 High Profile / Level 4.1",
    "1.2.840.10008.1.2.4.103": "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
}


def module_of(keyword: str) -> str:
    return MODULES.get(keyword, UNLISTED)


def sample_worklist_item(n: int) -> dict[str, Any]:
    """A generated worklist item (DICOM JSON) with every attribute the converter copies."""
    item = Dataset()
    item.PatientName = f"Sample^Patient{n}"
    item.PatientID = f"PID{n}"
    item.IssuerOfPatientID = f"ISSUER{n}"
    item.PatientBirthDate = f"19{70 + n}0102"
    item.PatientSex = "FM"[n % 2]
    item.AccessionNumber = f"ACC{n}"
    item.ReferringPhysicianName = f"Referring^Doctor{n}"
    item.StudyInstanceUID = f"1.2.826.0.1.3680043.10.1351.99.{n}"
    item.AdmittingDiagnosesDescription = f"diagnosis {n}"
    item.PatientWeight = str(60 + n)
    item.MedicalAlerts = f"alert {n}"
    item.Allergies = f"allergy {n}"
    item.AdditionalPatientHistory = f"history {n}"
    item.AdmissionID = f"ADM{n}"
    item.PatientState = f"state {n}"
    item.PregnancyStatus = 1 + n % 4
    item.RequestedProcedureID = f"RP{n}"
    item.RequestedProcedureDescription = f"procedure {n}"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = f"C{n}", "99LOCAL", f"proc {n}"
    item.RequestedProcedureCodeSequence = [code]
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.1"
    ref.ReferencedSOPInstanceUID = f"1.2.826.0.1.3680043.10.1351.98.{n}"
    item.ReferencedStudySequence = [ref]
    step = Dataset()
    step.ScheduledProcedureStepID = f"SPS{n}"
    step.ScheduledProcedureStepDescription = f"step {n}"
    step.ScheduledProtocolCodeSequence = [code]
    item.ScheduledProcedureStepSequence = [step]
    return item.to_json_dict()


def sample_study(n: int, modality: str) -> mwl.StudyInfo:
    when = dt.datetime(2020 + n, 1 + n, 1 + n, 8 + n, 10 + n, tzinfo=dt.UTC)
    item = sample_worklist_item(n)
    if modality:
        item["00080060"] = {"vr": "CS", "Value": [modality]}
    return mwl.StudyInfo(
        id=f"study-{n}",
        study_instance_uid=f"1.2.826.0.1.3680043.10.1351.97.{n}",
        origin="worklist",
        patient_name=f"Local^Name{n}",
        patient_id=f"LOCAL{n}",
        patient_birth_date="",
        patient_sex="",
        accession_number="",
        study_id=f"S{n}",
        study_description=f"description {n}",
        referring_physician="",
        study_date="",
        study_time="",
        worklist_item=item,
        edited=False,
        created_at=when,
        modality=modality,
    )


def sample_pixels(n: int, video_ts: str | None) -> Pixels:
    if video_ts is None:
        return still_pixels(480 + 2 * n, 640 + 2 * n, 20_000 + n, None)
    return Pixels(
        ts_uid=video_ts,
        rows=360 * (1 + n),
        columns=640 * (1 + n),
        photometric="YBR_PARTIAL_420",
        frames=30 + n,
        rate=Fraction(25 + 5 * n),
        lossy_method="ISO_14496_10" if video_ts.endswith((".102", ".103")) else "ISO_13818_2",
        lossy_ratio=50.0 + n,
        derivation=None,
    )


def build_sample(
    profile: str,
    modality: str,
    video_ts: str | None,
    n: int,
    configured: StationSettings,
    settings: ConverterSettings,
) -> tuple[Dataset, Dataset]:
    """(object read back from its Part 10 bytes, the study attributes that went into it)."""
    study = mwl.study_attributes(
        sample_study(n, modality),
        default_modality=settings.converter_default_modality,
        uid_root=settings.org_uid_root,
    )
    station = Station(
        station_name=configured.local_ae_title,
        character_set=configured.character_set,
        iod=resolve_iod(profile, study.get("Modality")),
        anatomic_region=settings.anatomic_region(),
    )
    when = dt.datetime(2021 + n, 2, 3 + n, 4 + n, 5, 6, tzinfo=dt.UTC)
    ident = Identity(
        sop_instance_uid=f"1.2.826.0.1.3680043.10.1351.96.{n}",
        series_instance_uid=f"1.2.826.0.1.3680043.10.1351.95.{n}",
        series_number=1 + n,
        instance_number=1 + n,
        series_description=f"source {n}",
        content_time=when,
        created=when + dt.timedelta(minutes=n + 1),
    )
    ds = build_dataset(study, sample_pixels(n, video_ts), ident, station)
    # One empty fragment stands for the stream (PS3.5 A.4): its bytes do not change the list.
    ds.PixelData = encapsulate([b"\x00\x00"])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return dcmread(BytesIO(buffer.getvalue())), study


def _value(a: DataElement, b: DataElement, in_study: bool) -> str:
    if in_study:
        return "from the study (worklist item, or the patient form)"
    if a.VR == "SQ":
        if a.value == b.value:
            return "; ".join(_item_text(i) for i in a.value) or "empty sequence"
        return "per instance (sequence)"
    if a.keyword == "PixelData":
        return "encapsulated stream of the media"
    if a.value == b.value:
        text = str(a.value) if a.value not in (None, "") else "(empty)"
        return text[:80]
    return "per instance (from the media, its capture or generated UIDs)"


def _item_text(item: Dataset) -> str:
    return ", ".join(f"{e.keyword}={e.value}" for e in item if e.VR != "SQ")


def describe_object(
    profile: str,
    modality: str,
    video_ts: str | None,
    configured: StationSettings,
    settings: ConverterSettings,
) -> CreatedObject:
    first, study = build_sample(profile, modality, video_ts, 1, configured, settings)
    second, _ = build_sample(profile, modality, video_ts, 2, configured, settings)
    rows: list[ObjectAttribute] = []
    for dataset, module_for in ((first.file_meta, lambda _: FILE_META), (first, module_of)):
        for element in dataset:
            other = second.file_meta if element.tag.group == 2 else second
            if element.tag not in other:
                continue  # written for one sample only (e.g. a measured optional value)
            rows.append(
                ObjectAttribute(
                    module=module_for(element.keyword),
                    name=element.name,
                    tag=f"({element.tag.group:04X},{element.tag.element:04X})",
                    vr=element.VR,
                    value=_value(element, other[element.tag], element.keyword in study),
                )
            )
    sop = UID(str(first.SOPClassUID))
    order = [FILE_META, *dict.fromkeys(MODULES.values())]
    modules = sorted(
        {row.module for row in rows}, key=lambda m: order.index(m) if m in order else 99
    )
    ts = video_ts or "1.2.840.10008.1.2.4.50"
    return CreatedObject(
        profile=resolve_iod(profile, modality),
        kind="video" if video_ts else "still",
        sop_class=NamedUid(name=sop.name, uid=str(sop)),
        modality=str(first.get("Modality", "")),
        transfer_syntaxes=[NamedUid(name=_TS_NAMES.get(ts, ts), uid=ts)],
        modules=modules,
        attributes=rows,
    )


def object_types(profile: str) -> list[str]:
    """The study Modalities that select a distinct object family under `profile`."""
    if profile == "standard":
        return [*STANDARD_BY_MODALITY, ""]
    return [""]


def describe(configured: StationSettings, settings: ConverterSettings) -> ConformanceReply:
    objects = [
        describe_object(configured.iod, modality, ts, configured, settings)
        for modality in object_types(configured.iod)
        for ts in (None, configured.video_transfer_syntax)
    ]
    return ConformanceReply(
        service="converter",
        version=__version__,
        created_objects=objects,
        iod_profile=configured.iod,
        notes=[
            f"Objects of a study without ES/XC Modality get Modality"
            f" '{settings.converter_default_modality}' unless the worklist item names one"
        ],
    )
