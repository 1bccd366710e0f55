"""The Storage and Verification Client's part of the conformance statement (PS3.2 A.4.2):
the presentation contexts `scu.contexts_for` proposes for each kind of object the station
sends, the destinations, and the association policies; answered on `cb.rpc.sender.conformance`."""

from __future__ import annotations

from pathlib import Path

from cinebridge_common import __version__, conformance
from cinebridge_common import commitment as sc
from cinebridge_common.messages import Destination
from cinebridge_common.messages.conformance import (
    ApplicationEntity,
    ConformanceReply,
    NamedUid,
    SenderConformance,
    SopClassSupport,
    StatusRow,
)
from pydicom.uid import UID

from . import scu
from .settings import SenderSettings


def _named(uid: str) -> NamedUid:
    return NamedUid(name=UID(uid).name, uid=uid)


def proposed(objects: list[tuple[str, str]], decompress_stills: bool) -> list[SopClassSupport]:
    """Every SOP class and the transfer syntaxes `scu.contexts_for` offers it with."""
    items = [
        scu.Item(f"k{i}", Path("-"), sop, f"1.2.3.{i}", ts) for i, (sop, ts) in enumerate(objects)
    ]
    syntaxes: dict[str, list[str]] = {}
    for sop, offered in scu.contexts_for(items, decompress_stills) if items else []:
        known = syntaxes.setdefault(sop, [])
        known.extend(ts for ts in offered if ts not in known)
    return [
        SopClassSupport(
            name=UID(sop).name, uid=sop, role="SCU", transfer_syntaxes=[_named(t) for t in ts]
        )
        for sop, ts in syntaxes.items()
    ]


def describe(
    request: SenderConformance,
    destinations: list[Destination],
    local_ae_title: str,
    settings: SenderSettings,
) -> ConformanceReply:
    # DICOMweb destinations take no association: they are listed apart (PS3.18 §10.5, STOW-RS).
    web = [d for d in destinations if d.enabled and d.kind == "dicomweb"]
    enabled = [d for d in destinations if d.enabled and d.kind == "dimse"]
    decompress = any(d.profile == "decompress-stills" for d in enabled)
    timeouts = scu.Timeouts()
    tls = [d.name for d in enabled if d.tls]
    security = (
        "TLS Secure Transport Connection Profile (PS3.15 B.1) to: " + ", ".join(tls)
        if tls
        else "none (no destination uses TLS)"
    )
    policies = {
        "Application Context Name": conformance.APPLICATION_CONTEXT_NAME,
        "Maximum PDU size received": f"{scu.OUR_MAX_PDU} bytes",
        "Number of associations (requestor)": "per destination, its max_associations ("
        + (", ".join(f"{d.name}: {d.max_associations}" for d in enabled) or "none configured")
        + ")",
        "Asynchronous operations window": "1 (no asynchronous operations negotiated)",
        "Implementation Class UID": scu.IMPLEMENTATION_CLASS_UID,
        "Implementation Version Name": scu.IMPLEMENTATION_VERSION_NAME,
        "Timeouts": f"connect {timeouts.connect_s:g} s, association {timeouts.acse_s:g} s,"
        f" DIMSE {timeouts.dimse_s:g} s, network {timeouts.network_s:g} s",
    }
    if web:
        policies["DICOMweb destinations (STOW-RS, PS3.18 §10.5; echo by QIDO-RS)"] = ", ".join(
            f"{d.base_url} [{d.name}]" for d in web
        )
    peers = [
        f"{d.ae_title}@{d.host}:{d.port}" + (" (TLS)" if d.tls else "") + f" [{d.name}]"
        for d in enabled
    ]
    verification = SopClassSupport(
        name=conformance.VERIFICATION_SOP_CLASS[0],
        uid=conformance.VERIFICATION_SOP_CLASS[1],
        role="SCU",
        transfer_syntaxes=[_named(conformance.IMPLICIT_VR_LITTLE_ENDIAN)],
    )
    storage = ApplicationEntity(
        name="Storage Client",
        service="sender",
        ae_title=local_ae_title,
        function="Storage SCU: sends every instance the station makes to each enabled destination.",
        sop_classes=proposed(request.objects, decompress),
        policies=policies,
        initiation=(
            "Sends instances in batches over one association per destination; for each SOP class"
            " and transfer syntax it proposes a context with the instance's own syntax alone and"
            " one with Implicit VR Little Endian added. Transient failures (no association,"
            " A700-range statuses) are retried with capped backoff; the status of every attempt"
            " is recorded."
        ),
        peers=peers,
        character_sets=["as written in each instance"],
        security=security,
    )
    echo = ApplicationEntity(
        name="Verification Client",
        service="sender",
        ae_title=local_ae_title,
        function="Verification SCU: C-ECHO to a destination from the settings page or the CLI.",
        sop_classes=[verification],
        policies=dict(policies),
        initiation="Opens an association, sends one C-ECHO and releases it.",
        peers=peers,
        security=security,
    )
    return ConformanceReply(
        service="sender",
        version=__version__,
        application_entities=[
            storage,
            echo,
            commitment(enabled, local_ae_title, policies, settings),
        ],
    )


def commitment(
    enabled: list[Destination],
    local_ae_title: str,
    policies: dict[str, str],
    settings: SenderSettings,
) -> ApplicationEntity:
    """The Storage Commitment Push Model SCU (PS3.4 Annex J, IHE RAD-10)."""
    asking = [d for d in enabled if d.commitment_required]
    wait = settings.sender_commitment_same_association_wait_s
    return ApplicationEntity(
        name="Storage Commitment Client",
        service="sender",
        ae_title=local_ae_title,
        function=(
            "Storage Commitment Push Model SCU: asks each destination marked 'commitment"
            " required' to commit every study it acknowledged, and records the answer per"
            " instance."
        ),
        sop_classes=[
            SopClassSupport(
                name="Storage Commitment Push Model SOP Class",
                uid=sc.STORAGE_COMMITMENT,
                role="SCU",
                transfer_syntaxes=[_named(t) for t in sc.TRANSFER_SYNTAXES],
            )
        ],
        policies={
            **policies,
            "Report on the N-ACTION association": f"awaited up to {wait:g} s"
            " (CB_SENDER_COMMITMENT_SAME_ASSOCIATION_WAIT_S)",
            "Report before the N-ACTION-RSP": "accepted: an N-EVENT-REPORT that the archive"
            " sends on the same association while the N-ACTION-RSP is awaited is answered"
            " and applied, then the N-ACTION-RSP is awaited (PS3.4 J.3.3 does not order them)",
            "Report on a new association": "accepted by the Storage Commitment Server's AE"
            " (same AE title), which accepts the archive's SCP role (PS3.4 J.3.3)",
            "Report time-out, retries": ", ".join(
                f"{d.name}: {d.commitment_timeout_s} s, {d.commitment_retries}" for d in asking
            )
            or "no destination requires commitment",
        },
        initiation=(
            "Proposes the Storage Commitment Push Model context (Explicit, then Implicit VR"
            " Little Endian) with Verification; an archive that accepts the association but"
            " not Storage Commitment does not support it: the study shows 'not committed"
            " (unsupported)', its delivery stays sent."
        ),
        activity=(
            "Once a destination acknowledged every instance of a study (C-STORE 0000 or a"
            " B-range warning), one N-ACTION Request Storage Commitment (Action Type ID 1)"
            " carries a new Transaction UID and the Referenced SOP Sequence of those instances."
            " The transaction is recorded before it is sent and survives restarts. Instances in"
            " the report's Referenced SOP Sequence are committed; instances in the Failed SOP"
            " Sequence (or missing from the report) are sent again and asked for again, up to"
            " the destination's retries, then shown commit-failed. No report within the"
            " destination's time-out: asked again in a new transaction with the wait doubled,"
            " up to the retries, then commit-failed. Committed studies are the ones a local"
            " purge may remove."
        ),
        statuses=[
            StatusRow(
                service="N-ACTION-RSP",
                status="Success",
                code="0000",
                behaviour="requested; the report is awaited",
            ),
            StatusRow(
                service="N-ACTION-RSP",
                status="any other",
                code="*",
                behaviour="asked again with the destination backoff",
            ),
            StatusRow(
                service="N-EVENT-REPORT",
                status="Event Type 1",
                code="-",
                behaviour="every listed instance committed",
            ),
            StatusRow(
                service="N-EVENT-REPORT",
                status="Event Type 2",
                code="-",
                behaviour="Referenced SOP Sequence committed; Failed SOP Sequence sent"
                " again and asked again (Failure Reason recorded)",
            ),
            StatusRow(
                service="N-EVENT-REPORT-RSP (sent by us)",
                status="Success",
                code="0000",
                behaviour="a report that could be read",
            ),
            StatusRow(
                service="N-EVENT-REPORT-RSP (sent by us)",
                status="Failure",
                code="0110",
                behaviour="a report that could not be read (its transaction is asked"
                " again after the time-out)",
            ),
            StatusRow(
                service="Association",
                status="not established or aborted",
                code="-",
                behaviour="asked again with the destination backoff",
            ),
        ],
        peers=[f"{d.ae_title}@{d.host}:{d.port} [{d.name}]" for d in asking],
        character_sets=["none needed (UIDs only)"],
        security="as the Storage Client",
    )
