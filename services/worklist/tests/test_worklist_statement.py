"""The Worklist Client's query keys in the conformance statement are read from the identifier
`build_identifier` makes: matching where the operator or the server settings give a value."""

from __future__ import annotations

from cinebridge_common.messages import WorklistServer
from cinebridge_common.station import StationSettings
from cinebridge_worklist import statement
from cinebridge_worklist.settings import WorklistSettings

SPS = "(0040,0100) > "


def test_matching_keys_are_the_ones_a_query_fills_in() -> None:
    keys = statement.query_keys()
    matching = {k.tag for k in keys if k.kind == "matching"}
    assert matching == {
        "(0008,0050)",  # Accession Number
        "(0010,0010)",  # Patient's Name
        "(0010,0020)",  # Patient ID
        "(0040,1001)",  # Requested Procedure ID
        SPS + "(0008,0060)",  # Modality (server setting)
        SPS + "(0040,0001)",  # Scheduled Station AE Title (server setting)
        SPS + "(0040,0002)",  # Scheduled Procedure Step Start Date
    }
    assert {k.kind for k in keys} == {"matching", "return", "sequence"}
    assert len({k.tag for k in keys}) == len(keys)


def test_servers_and_character_sets_as_configured() -> None:
    server = WorklistServer(id="ris", name="RIS", host="ris.local", port=104, called_ae="RIS",
                            character_set="ISO_IR 100")  # fmt: skip
    off = server.model_copy(update={"id": "old", "enabled": False})
    reply = statement.describe([server, off], StationSettings(), WorklistSettings())
    [ae] = reply.application_entities
    assert ae.peers == ["RIS@ris.local:104 [RIS]"]
    assert ae.character_sets[:2] == ["ISO_IR 100", "ISO_IR 192"]
    assert ae.sop_classes[0].uid == "1.2.840.10008.5.1.4.31"
