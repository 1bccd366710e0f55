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
    StatusRow,
)
from cinebridge_common.station import StationSettings
from pydicom.dataset import Dataset
from pydicom.uid import UID

from . import mpps, mpps_scu, scu
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
    return ConformanceReply(
        service="worklist",
        version=__version__,
        application_entities=[ae, performed_procedure_step(servers, station, settings)],
    )


def performed_procedure_step(
    servers: list[WorklistServer], station: StationSettings, settings: WorklistSettings
) -> ApplicationEntity:
    """The MPPS SCU (PS3.4 Annex F; IHE RAD-6, RAD-7): the SOP class and syntaxes it proposes
    (`mpps_scu`), the trigger set now, and what each answer status does (`mpps.STATUS_TABLE`)."""
    enabled = [s for s in servers if s.enabled and s.mpps_enabled]
    sop = SopClassSupport(
        name="Modality Performed Procedure Step",
        uid=mpps.MPPS_SOP_CLASS,
        role="SCU",
        transfer_syntaxes=[
            NamedUid(name=UID(t).name, uid=str(t)) for t in mpps_scu.TRANSFER_SYNTAXES
        ],
    )
    start = {
        "first-capture": "the first snapshot or recording of the study",
        "study-start": "the start of the study",
    }[station.mpps_trigger]
    return ApplicationEntity(
        name="Performed Procedure Step Client",
        service="worklist",
        ae_title=station.local_ae_title,
        function="Modality Performed Procedure Step SCU: tells the RIS that a procedure is in"
        " progress, completed (with every series and instance made) or discontinued.",
        sop_classes=[sop],
        policies={
            "Application Context Name": conformance.APPLICATION_CONTEXT_NAME,
            "Maximum PDU size received": f"{scu.FindLimits().max_pdu} bytes",
            "Number of associations (requestor)": "one per N-CREATE or N-SET",
            "Asynchronous operations window": "1 (one request per association)",
            "Implementation Class UID": scu.IMPLEMENTATION_CLASS_UID,
            "Implementation Version Name": scu.IMPLEMENTATION_VERSION,
            "Timeouts": f"association and answer {settings.worklist_mpps_timeout_s:g} s",
            "Retries": f"after {settings.worklist_mpps_backoff_s:g} s, doubling up to"
            f" {settings.worklist_mpps_backoff_cap_s:g} s, at most"
            f" {settings.worklist_mpps_max_attempts} attempts; kept across restarts",
        },
        initiation=(
            f"Activity 'Procedure step in progress' (IHE RAD-6): at {start}, N-CREATE with"
            " status IN PROGRESS, the Scheduled Step Attributes Sequence copied from the"
            " worklist item (one item holding only the study's Study Instance UID for an"
            " unscheduled study, IHE RAD TF-2 4.6.4.1.2.4), the patient, the Performed Station"
            " AE Title and Name, the room as Performed Location, the start date and time."
            " Activity 'Procedure step completed/discontinued' (IHE RAD-7): once the saved"
            " study's media are converted (or failed), N-SET COMPLETED with the end date and"
            " time and the Performed Series Sequence listing every series and instance made;"
            " when the operator abandons the study, N-SET DISCONTINUED with the reason (PS3.16"
            " CID 9300). The N-SET is sent only after a successful N-CREATE; a step that is"
            " COMPLETED or DISCONTINUED is never set again (PS3.4 F.7.2.2). " + LATER_STEPS
        ),
        peers=[
            f"{s.mpps_ae or s.called_ae}@{s.mpps_host or s.host}:{s.mpps_port or s.port}"
            f" [{s.name or s.id}]"
            for s in enabled
        ],
        character_sets=[station.character_set, "(0008,0005) sent only when a value needs it"],
        statuses=status_handling(),
    )


#: What the study does after its step is final, or when the step cannot say what it must:
#: each case is a new step (migration 405, `mpps_study_repository`; docs/mpps.md).
LATER_STEPS = (
    "Activity 'Append' (IHE RAD TF-1 Scheduled Workflow append case, RAD TF-2 4.6.4.1.2.4):"
    " media captured after the study's step ended are reported in a new step (a new SOP"
    " Instance UID and Performed Procedure Step ID, the same Scheduled Step Attributes"
    " Sequence), whose N-SET COMPLETED lists only the new series and instances. Activity"
    " 'Linked to a worklist item after the N-CREATE' (IHE RAD TF-2 4.7.4.1.3): the Scheduled"
    " Step Attributes Sequence cannot be N-SET (PS3.4 Table F.7.2-1), so the unscheduled step"
    " ends DISCONTINUED with (110514, DCM, 'Incorrect worklist entry selected') and a new step"
    " carrying the item reports the study; a step whose N-CREATE has not left yet is simply"
    " sent with the item, and a step already final stays as it is. Activity 'MPPS enabled"
    " during a study': the study's Save opens the step (N-CREATE, then N-SET COMPLETED with"
    " every series and instance the study has)."
)

_BEHAVIOUR = {
    "done": "the step moves on (IN PROGRESS, or final)",
    "warning": "the step moves on; the warning is shown with the step",
    "retry": "retried with backoff; the error is shown with the step",
    "failed": "not retried; the step is shown failed with the error",
}
_KIND = {"done": "Success", "warning": "Warning", "retry": "Failure", "failed": "Failure"}


def status_handling() -> list[StatusRow]:
    rows = [
        StatusRow(
            service="N-CREATE, N-SET",
            status=_KIND[verdict],
            code=f"{code:04X}",
            meaning=text,
            behaviour=_BEHAVIOUR[verdict],
        )
        for code, (verdict, text) in mpps.STATUS_TABLE.items()
    ]
    rows += [
        StatusRow(
            service="N-CREATE, N-SET",
            status="Failure",
            code=f"0110 + Error ID {mpps.NO_LONGER_UPDATABLE:04X}",
            meaning="may no longer be updated (PS3.4 F.7.2.2.2)",
            behaviour="after our own earlier N-SET: the step is final; else shown failed",
        ),
        StatusRow(
            service="N-CREATE, N-SET",
            status="Failure",
            code="0111 on a repeated N-CREATE",
            meaning="duplicate SOP instance",
            behaviour="our earlier N-CREATE arrived: the step is in progress",
        ),
        StatusRow(
            service="N-CREATE, N-SET",
            status="Failure",
            code="any other",
            meaning="unrecognised status",
            behaviour=_BEHAVIOUR["failed"],
        ),
        StatusRow(
            service="N-CREATE, N-SET",
            status="No answer",
            code="-",
            meaning="unreachable, rejected transiently, aborted or timed out",
            behaviour=_BEHAVIOUR["retry"],
        ),
    ]
    return rows
