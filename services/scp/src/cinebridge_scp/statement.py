"""The Storage Server's part of the conformance statement (PS3.2 A.4.2), from the table it
negotiates with (`listener.supported_syntaxes`) and its settings; answered on
`cb.rpc.scp.conformance`."""

from __future__ import annotations

from cinebridge_common import __version__, conformance
from cinebridge_common import commitment as sc
from cinebridge_common.messages.conformance import (
    ApplicationEntity,
    ConformanceReply,
    NamedUid,
    SopClassSupport,
    StatusRow,
)

from .listener import (
    IMPLEMENTATION_CLASS_UID,
    IMPLEMENTATION_VERSION_NAME,
    preferred_transfer_syntaxes,
    supported_syntaxes,
)
from .settings import ScpSettings

_SOP_NAMES = dict(
    (uid, name)
    for name, uid in [conformance.VERIFICATION_SOP_CLASS, *conformance.STORAGE_SOP_CLASSES]
)
_TS_NAMES = dict((uid, name) for name, uid in conformance.SCP_TRANSFER_SYNTAXES)


def sop_classes() -> list[SopClassSupport]:
    """Every SOP class the acceptor accepts, with its transfer syntaxes in order of preference."""
    order = preferred_transfer_syntaxes()
    out = []
    for uid, syntaxes in supported_syntaxes().items():
        ts = [NamedUid(name=_TS_NAMES.get(t, t), uid=t) for t in order if t in syntaxes]
        out.append(
            SopClassSupport(
                name=_SOP_NAMES.get(uid, uid), uid=uid, role="SCP", transfer_syntaxes=ts
            )
        )
    return out


def describe(settings: ScpSettings, ports: list[int]) -> ConformanceReply:
    s = settings
    listen = (
        ", ".join(f"{s.advertised_host}:{p}" for p in ports) or f"{s.advertised_host}:{s.scp_port}"
    )
    tls = (
        f"TLS Secure Transport Connection Profile (PS3.15 B.1; TLS 1.2 or later) on port"
        f" {s.scp_tls_port}"
        + (", client certificates required" if s.scp_tls_client_ca else "")
        + f"; port {s.scp_port} without TLS"
        if s.tls_enabled
        else "none (no TLS certificate configured: CB_SCP_TLS_CERT, CB_SCP_TLS_KEY)"
    )
    callers = ", ".join(t for t in s.scp_allowed_calling_ae_titles if t.strip()) or "any"
    policies = {
        "Application Context Name": conformance.APPLICATION_CONTEXT_NAME,
        "Maximum PDU size received": f"{s.scp_max_pdu} bytes",
        "Number of associations (acceptor)": str(s.effective_max_associations()),
        "Asynchronous operations window": "1 (no asynchronous operations negotiated)",
        "Implementation Class UID": IMPLEMENTATION_CLASS_UID,
        "Implementation Version Name": IMPLEMENTATION_VERSION_NAME,
        "ARTIM / association request timeout": f"{s.scp_acse_timeout_s:g} s",
        "Network idle timeout": f"{s.scp_network_timeout_s:g} s",
        "Called AE Title check": "required" if s.scp_require_called_ae else "not checked",
        "Accepted Calling AE Titles": callers,
        "Accepted addresses": ", ".join(s.scp_allowed_addresses) or "any",
    }
    ae = ApplicationEntity(
        name="Storage Server",
        service="scp",
        ae_title=s.scp_ae_title,
        function=(
            "Verification SCP and Storage SCP: receives instances of any listed SOP class,"
            " stores each on disk and indexes it before answering success (0000)."
        ),
        listen=listen,
        sop_classes=sop_classes(),
        policies=policies,
        acceptance=(
            "Accepts associations whose Called AE Title matches (when checked) from allowed"
            " callers; each presentation context is accepted with the requestor's first syntax"
            " the SCP supports. C-STORE answers 0000 only after the file is fsync'd and its index"
            " row committed; otherwise 0110 (processing failure) or A700 (out of resources)."
        ),
        character_sets=["any (stored as received, not converted)"],
        security=tls,
    )
    return ConformanceReply(
        service="scp",
        version=__version__,
        application_entities=[ae, commitment(s, listen, policies)],
    )


def commitment(s: ScpSettings, listen: str, policies: dict[str, str]) -> ApplicationEntity:
    """The Storage Commitment Push Model SCP of the same AE (PS3.4 Annex J, IHE RAD-10)."""
    peers = [
        f"{p.ae_title}@{p.host}:{p.port} (report on a new association)"
        for p in s.scp_commitment_peers
        if p.report == "new" and p.host and p.port
    ]
    syntaxes = [NamedUid(name=_TS_NAMES.get(t, t), uid=t) for t in sc.TRANSFER_SYNTAXES]
    return ApplicationEntity(
        name="Storage Commitment Server",
        service="scp",
        ae_title=s.scp_ae_title,
        function=(
            "Storage Commitment Push Model SCP for modalities that stored here; also accepts the"
            " reports archives send to the station's Storage Commitment Client (role selection,"
            " PS3.4 J.3.3)."
        ),
        listen=listen,
        sop_classes=[
            SopClassSupport(
                name="Storage Commitment Push Model SOP Class",
                uid=sc.STORAGE_COMMITMENT,
                role="SCP",
                transfer_syntaxes=syntaxes,
            )
        ],
        policies={
            **policies,
            "SCP/SCU role selection": "Storage Commitment Push Model: the requestor's SCU and"
            " SCP roles are accepted as proposed (an archive reporting proposes SCU 0, SCP 1)",
            "Report association": "the association of the N-ACTION; a new one for the peers"
            " configured so (CB_SCP_COMMITMENT_PEERS), proposing the SCP role",
            "Reports on a new association": "stored in the SCP's database before the"
            " N-ACTION-RSP and kept across restarts until the requester answers; an"
            f" association that fails is tried again after {s.scp_commitment_report_backoff_s:g} s,"
            f" doubling up to {s.scp_commitment_report_backoff_cap_s:g} s, at most"
            f" {s.scp_commitment_report_attempts} times",
        },
        acceptance=(
            "Accepts N-ACTION Request Storage Commitment (Action Type ID 1) on the Storage"
            " Server's associations and answers from the index. Accepts N-EVENT-REPORT (Event"
            " Type ID 1 or 2) from archives on associations they open, stores it for the"
            " Storage Commitment Client, then answers."
        ),
        activity=(
            "An instance is committed when it is in the index: its file was fsync'd and its row"
            " committed before its C-STORE was answered 0000, so commitment adds no delay and"
            " never promises what a crash could lose. After the N-ACTION-RSP the N-EVENT-REPORT"
            " lists every committed instance in the Referenced SOP Sequence and every other one"
            " in the Failed SOP Sequence: 0112 (no such object instance) when it is not in the"
            " index, 0119 (class-instance conflict) when it is stored under another SOP class."
            " The commitment lasts as long as the instance is kept (no automatic deletion)."
        ),
        statuses=[
            StatusRow(
                service="N-ACTION-RSP",
                status="Success",
                code="0000",
                behaviour="request accepted; the report follows",
            ),
            StatusRow(
                service="N-ACTION-RSP",
                status="Failure",
                code="0110",
                behaviour="the index could not be read, or a report owed on a new"
                " association could not be stored; ask again later",
            ),
            StatusRow(
                service="N-ACTION-RSP",
                status="Failure",
                code="0115",
                behaviour="Action Information without Transaction UID or references",
            ),
            StatusRow(
                service="N-ACTION-RSP",
                status="Failure",
                code="0123",
                behaviour="Action Type ID other than 1",
            ),
            StatusRow(
                service="N-EVENT-REPORT (sent)",
                status="any",
                code="-",
                behaviour="logged and recorded; the report is not sent again",
            ),
            StatusRow(
                service="N-EVENT-REPORT (sent on a new association)",
                status="association not established or aborted",
                code="-",
                behaviour="sent again with backoff, also after a restart; abandoned"
                " (recorded with the reason) after the configured attempts",
            ),
            StatusRow(
                service="N-EVENT-REPORT-RSP (sent by us)",
                status="Success",
                code="0000",
                behaviour="the archive's report is stored for the sender",
            ),
            StatusRow(
                service="N-EVENT-REPORT-RSP (sent by us)",
                status="Failure",
                code="0110",
                behaviour="the report could not be stored (bus down): the archive may"
                " send it again; the sender asks again after its time-out",
            ),
        ],
        peers=peers,
        character_sets=["none needed (UIDs only)"],
        security=policies_security(s),
    )


def policies_security(s: ScpSettings) -> str:
    return f"as the Storage Server (TLS on port {s.scp_tls_port})" if s.tls_enabled else "none"
