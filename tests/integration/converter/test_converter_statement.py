"""The conformance statement's object sections (PS3.2 A.8.1) against the objects the running
converter writes: for each object type of the IOD profile in effect, the attributes listed in
the rendered statement are exactly the attributes of a converted still and recording."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cinebridge_common import statement as doc
from cinebridge_common.messages.conformance import ConformanceReply, ConverterConformance
from cinebridge_converter.statement import UNLISTED, sample_worklist_item
from cinebridge_gateway.settings_repository import save_station_settings
from cinebridge_testkit.media import make_still, make_video
from pydicom import dcmread
from pydicom.dataset import Dataset

from .test_converter_service import converted

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _written(ds: Dataset) -> set[str]:
    """Tags of the file meta and the top level of an object, as the statement spells them."""
    elements = [*ds.file_meta, *ds]
    return {f"({e.tag.group:04X},{e.tag.element:04X})" for e in elements}


def _listed(blocks: list[doc.Block], sop_name: str, kind: str) -> tuple[set[str], list[str]]:
    [attrs] = doc.tables(blocks, f"Attributes of {sop_name} ({kind})")
    [modules] = doc.tables(blocks, f"Modules of {sop_name} ({kind})")
    assert all(row[0] != UNLISTED for row in attrs.rows), "an attribute without its module"
    return {row[2] for row in attrs.rows}, [row[0] for row in modules.rows]


async def _statement(converter: Any) -> tuple[ConformanceReply, list[doc.Block]]:
    reply = await converter.bus.request(ConverterConformance(), ConformanceReply, 60)
    assert reply.ok, reply.error
    station = doc.Station("test", dt.datetime.now(dt.UTC))
    return reply, doc.build(station, [reply])


@pytest.mark.parametrize(
    ("profile", "modalities"), [("standard", ["ES", "XC", ""]), ("videostation", [""])]
)
async def test_object_sections_equal_the_written_objects(
    converter: Any, tmp_path: Path, profile: str, modalities: list[str]
) -> None:
    await save_station_settings(converter.pool, {"iod": profile}, by="test")
    reply, blocks = await _statement(converter)
    assert reply.iod_profile == profile
    described = {(o.sop_class.uid, o.kind) for o in reply.created_objects}
    assert len(described) == 2 * len(modalities)

    still = make_still(tmp_path / "still.jpg", width=320, height=240)
    clip = make_video(
        tmp_path / "clip.mp4", width=640, height=360, frames=12, options={"preset": "ultrafast"}
    )
    seen: set[tuple[str, str]] = set()
    for modality in modalities:
        item = sample_worklist_item(1)
        if modality:
            item["00080060"] = {"vr": "CS", "Value": [modality]}
        study = await converter.add_study(origin="worklist", worklist_item=item, modality=modality)
        for source, kind, media_kind in (
            (still, "still", "snapshot"),
            (clip, "video", "recording"),
        ):
            media = await converter.add_media(study, source, media_kind)
            # As the gateway's Save does: the job names the station's profile.
            await converter.submit(media, study, iod=profile)
            [row] = await converted(converter, media)
            ds = dcmread(converter.store.resolve(row["rel_path"]), stop_before_pixels=True)
            ds_tags = _written(ds) | {"(7FE0,0010)"}  # read without the pixels, written with
            [obj] = [
                o
                for o in reply.created_objects
                if o.sop_class.uid == ds.SOPClassUID and o.kind == kind
            ]
            listed, modules = _listed(blocks, obj.sop_class.name, kind)
            assert listed == ds_tags, (
                f"{obj.sop_class.name} {kind}: written only {sorted(ds_tags - listed)}, "
                f"listed only {sorted(listed - ds_tags)}"
            )
            assert modules == obj.modules and "Patient" in modules and "SOP Common" in modules
            assert ds.file_meta.TransferSyntaxUID in {t.uid for t in obj.transfer_syntaxes}
            seen.add((str(ds.SOPClassUID), kind))
    assert seen == described
