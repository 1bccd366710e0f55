"""Every IOD profile's objects, as the conformance statement describes them, name a PS3.3 module
for each attribute and the SOP class the profile picks."""

from __future__ import annotations

import pytest
from cinebridge_common.station import StationSettings
from cinebridge_converter import statement
from cinebridge_converter.dicomize import IODS
from cinebridge_converter.settings import ConverterSettings


@pytest.mark.parametrize("profile", ["standard", *IODS])
def test_every_attribute_has_its_module(profile: str) -> None:
    reply = statement.describe(StationSettings(iod=profile), ConverterSettings())
    families = 3 if profile == "standard" else 1
    assert len(reply.created_objects) == 2 * families
    for obj in reply.created_objects:
        assert [a.name for a in obj.attributes if a.module == statement.UNLISTED] == []
        assert obj.modules[0] == statement.FILE_META and "Image Pixel" in obj.modules
        expected = IODS[obj.profile][1 if obj.kind == "video" else 0]
        assert obj.sop_class.uid == expected


def test_values_fixed_per_station_and_varying_per_instance() -> None:
    reply = statement.describe(StationSettings(local_ae_title="ROOM7"), ConverterSettings())
    video = next(o for o in reply.created_objects if o.kind == "video" and o.modality == "ES")
    values = {a.name: a.value for a in video.attributes}
    assert values["Station Name"] == "ROOM7"
    assert values["Patient's Name"].startswith("from the study")
    assert values["Number of Frames"].startswith("per instance")
    assert values["Anatomic Region Sequence"].startswith("CodeValue=38266002")
