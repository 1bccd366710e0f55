"""The Worklist Client's query keys in the conformance statement are read from the identifier
`build_identifier` makes: matching where the operator or the server settings give a value."""

from __future__ import annotations

from cinebridge_common.messages import WorklistServer
from cinebridge_common.station import StationSettings
from cinebridge_testkit.worklist_peers import FakeMpps
from cinebridge_worklist import mpps_scu, scu, statement
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
    [ae, pps] = reply.application_entities
    assert pps.peers == []  # no MPPS SCP configured
    assert ae.peers == ["RIS@ris.local:104 [RIS]"]
    assert ae.character_sets[:2] == ["ISO_IR 100", "ISO_IR 192"]
    assert ae.sop_classes[0].uid == "1.2.840.10008.5.1.4.31"


def test_mpps_section_is_what_the_scu_negotiates() -> None:
    """The Performed Procedure Step Client's SOP class and syntaxes are the ones an association
    with a real MPPS SCP proposes and gets accepted; its status table is the one it acts on."""
    server = WorklistServer(id="ris", host="ris.local", port=104, called_ae="RIS",
                            mpps_enabled=True, mpps_port=105)  # fmt: skip
    reply = statement.describe([server], StationSettings(), WorklistSettings())
    [_, pps] = reply.application_entities
    assert pps.name == "Performed Procedure Step Client"
    assert pps.peers == ["RIS@ris.local:105 [ris]"]
    [sop] = pps.sop_classes
    assert (sop.uid, sop.role) == ("1.2.840.10008.3.1.2.3.3", "SCU")
    described = [ts.uid for ts in sop.transfer_syntaxes]
    with FakeMpps() as scp:
        peer = scu.Peer("127.0.0.1", scp.port, "FAKEMPPS", "SPACS")
        assoc = mpps_scu._associate(peer, scu.FindLimits(timeout_s=10, connect_timeout_s=10))
        try:
            [context] = assoc.contexts.values()
        finally:
            assoc.release()
    assert context.abstract_syntax == sop.uid
    assert context.transfer_syntax in described
    assert described == [str(t) for t in mpps_scu.TRANSFER_SYNTAXES]
    codes = {row.code for row in pps.statuses}
    assert {"0000", "0110", "0106", "0116", "0120", "0110 + Error ID A710"} <= codes
    assert "first snapshot or recording" in pps.initiation
    assert "Activity 'Append'" in pps.initiation and "110514" in pps.initiation
