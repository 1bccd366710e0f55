"""The Worklist Client's part of the conformance statement (PS3.2 A.4.2): the query keys are read
from an identifier built by `query.build_identifier` (the code every query uses), with the
servers and character sets configured now; answered on `cb.rpc.worklist.conformance`."""

from __future__ import annotations

from cinebridge_common import __version__, conformance
from cinebridge_common.messages import WorklistServer
from cinebridge_common.messages.conformance import (
    ApplicationEntity,
    ConformanceReply,
    NamedUid,
    QueryKey,
    SopClassSupport,
)
from cinebridge_common.station import StationSettings
from pydicom.dataset import Dataset
from pydicom.uid import UID

from . import scu
from .query import SearchFields, ServerKeys, build_identifier
from .settings import WorklistSettings


def query_keys() -> list[QueryKey]:
    """Every key of the identifier: matching when the operator or the server settings can give
    it a value, return (zero length) otherwise (PS3.4 K.2.2.1)."""
    fields = SearchFields("Doe^John", "PID1", "ACC1", "RP1", "2026-01-01", "2026-01-02")
    filled = build_identifier(fields, ServerKeys(modality="ES", station_ae="ROOM1"))
    return _keys(filled, "")


def _keys(ds: Dataset, prefix: str) -> list[QueryKey]:
    out: list[QueryKey] = []
    for element in ds:
        if element.tag == 0x00080005:
            continue  # Specific Character Set: only when a key is not ASCII (section 6)
        tag = f"{prefix}({element.tag.group:04X},{element.tag.element:04X})"
        if element.VR == "SQ":
            out.append(QueryKey(name=element.name, tag=tag, kind="sequence"))
            for item in element.value[:1]:
                out.extend(_keys(item, f"{tag} > "))
            continue
        kind = "matching" if element.value not in (None, "") else "return"
        out.append(QueryKey(name=element.name, tag=tag, kind=kind))
    return out


def describe(
    servers: list[WorklistServer], station: StationSettings, settings: WorklistSettings
) -> ConformanceReply:
    enabled = [s for s in servers if s.enabled]
    find = SopClassSupport(
        name="Modality Worklist Information Model - FIND",
        uid=str(scu.ModalityWorklistInformationFind),
        role="SCU",
        transfer_syntaxes=[NamedUid(name=UID(t).name, uid=str(t)) for t in scu.TRANSFER_SYNTAXES],
    )
    charsets = sorted(
        {station.worklist_character_set} | {s.character_set for s in enabled if s.character_set}
    )
    ae = ApplicationEntity(
        name="Worklist Client",
        service="worklist",
        ae_title=station.local_ae_title,
        function="Modality Worklist SCU: queries the configured RIS for scheduled procedures.",
        sop_classes=[find],
        policies={
            "Application Context Name": conformance.APPLICATION_CONTEXT_NAME,
            "Maximum PDU size received": f"{scu.FindLimits().max_pdu} bytes",
            "Number of associations (requestor)": "one per query and server",
            "Asynchronous operations window": "1 (one outstanding C-FIND per association)",
            "Implementation Class UID": scu.IMPLEMENTATION_CLASS_UID,
            "Implementation Version Name": scu.IMPLEMENTATION_VERSION,
            "Timeouts": f"connect {settings.worklist_connect_timeout_s:g} s,"
            f" query {settings.worklist_timeout_s:g} s",
            "Largest answer": f"{settings.worklist_max_entries} entries, then C-CANCEL",
            "Wildcard matching of P keys": "on" if station.wildcard_matching else "off",
        },
        initiation=(
            "Opens an association per query to each enabled server, sends one C-FIND with the"
            " keys below and reads every pending response; more entries than the limit end"
            " with C-CANCEL; the answers are cached for use while the RIS is unreachable."
        ),
        query_keys=query_keys(),
        peers=[f"{s.called_ae}@{s.host}:{s.port} [{s.name or s.id}]" for s in enabled],
        character_sets=[
            *charsets,
            "answers: decoded by their own Specific Character Set (0008,0005)",
        ],
    )
    return ConformanceReply(service="worklist", version=__version__, application_entities=[ae])
