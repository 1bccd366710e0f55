"""The Storage Server AE of Tables 19-25: its negotiation table and its listeners (plain, TLS)."""

from __future__ import annotations

import contextlib
import logging
import ssl
import threading

from cinebridge_common import commitment as sc
from cinebridge_common import conformance
from cinebridge_common.logging import kv
from cinebridge_common.uids import make_uid
from cinebridge_dicom import tls

from .acceptor import AcceptorConfig, Limits, StoreSink
from .commitment import CommitmentService
from .receive import ReceiveConfig
from .server import ScpServer, parse_networks
from .settings import ScpSettings

log = logging.getLogger(__name__)

#: PS3.7 D.3.3.2: our own implementation identity (the statement's belongs to VideoStation);
#: UUID-derived (PS3.5 B.2) so it needs no registered root and never changes.
IMPLEMENTATION_CLASS_UID = make_uid("cinebridge", "scp", "implementation-class")
IMPLEMENTATION_VERSION_NAME = "CINEBRIDGE_01"

#: Syntaxes we prefer last when a peer offers several in one context: Implicit VR LE loses the
#: VRs, Big Endian is retired, Deflate costs both sides zlib time (docs/peers.md, "Deflate"). The
#: rest keep Table 23's order after Explicit VR Little Endian, so a peer's file is kept as is.
_LAST = (
    conformance.IMPLICIT_VR_LITTLE_ENDIAN,
    conformance.EXPLICIT_VR_BIG_ENDIAN,
    conformance.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN,
)


def preferred_transfer_syntaxes() -> list[str]:
    table = [uid for _, uid in conformance.SCP_TRANSFER_SYNTAXES]
    first = [conformance.EXPLICIT_VR_LITTLE_ENDIAN]
    middle = [uid for uid in table if uid not in first and uid not in _LAST]
    return first + middle + list(_LAST)


def supported_syntaxes() -> dict[str, frozenset[str]]:
    """Table 22: Verification with Implicit VR LE; every storage class with every Table 23
    syntax (SCP role). Which one is chosen follows the requestor's order (pdu.negotiate)."""
    syntaxes = frozenset(preferred_transfer_syntaxes())
    table = {
        conformance.VERIFICATION_SOP_CLASS[1]: frozenset([conformance.IMPLICIT_VR_LITTLE_ENDIAN])
    }
    table.update({uid: syntaxes for _, uid in conformance.STORAGE_SOP_CLASSES})
    return table


def tls_context(settings: ScpSettings) -> ssl.SSLContext:
    """PS3.15 B.9 (BCP 195) from `cinebridge_dicom.tls`; a client CA bundle makes client
    certificates required."""
    assert settings.scp_tls_cert is not None and settings.scp_tls_key is not None
    return tls.server_context(
        settings.scp_tls_cert, settings.scp_tls_key, client_ca=settings.scp_tls_client_ca
    )


class ScpListener:
    """One AE, one or two servers (plain on scp_port, TLS on scp_tls_port)."""

    def __init__(
        self,
        settings: ScpSettings,
        ingest: StoreSink,
        receive_config: ReceiveConfig,
        commitment: CommitmentService | None = None,
    ) -> None:
        self.settings = settings
        self.servers: list[ScpServer] = []
        s = settings
        supported = supported_syntaxes()
        if commitment is not None:
            supported[sc.STORAGE_COMMITMENT] = frozenset(sc.TRANSFER_SYNTAXES)
        self.config = AcceptorConfig(
            ae_title=s.scp_ae_title,
            require_called_ae=s.scp_require_called_ae,
            allowed_calling_ae_titles=frozenset(
                t.strip() for t in s.scp_allowed_calling_ae_titles if t.strip()
            ),
            supported=supported,
            limits=Limits(
                max_pdu=s.scp_max_pdu,
                acse_timeout_s=s.scp_acse_timeout_s,
                network_timeout_s=s.scp_network_timeout_s,
                pdu_timeout_s=s.scp_pdu_timeout_s,
                max_pending=s.scp_max_pending_connections,
                max_associations=s.effective_max_associations(),
                dimse_timeout_s=s.scp_dimse_timeout_s,
            ),
            implementation_class_uid=IMPLEMENTATION_CLASS_UID,
            implementation_version_name=IMPLEMENTATION_VERSION_NAME,
            receive=receive_config,
            ingest=ingest,
            commitment=commitment,
        )

    def start(self) -> None:
        s = self.settings
        self._serve((s.scp_host, s.scp_port), None)
        if s.tls_enabled:
            self._serve((s.scp_host, s.scp_tls_port), tls_context(s))
        log.info(
            "listening",
            extra=kv(
                ae_title=s.scp_ae_title,
                host=s.scp_host,
                ports=",".join(str(p) for p in self.ports),
                max_pdu=s.scp_max_pdu,
                max_associations=self.config.limits.max_associations,
            ),
        )

    def _serve(self, address: tuple[str, int], tls: ssl.SSLContext | None) -> None:
        server = ScpServer(
            address,
            self.config,
            allowed_networks=parse_networks(self.settings.scp_allowed_addresses),
            ssl_context=tls,
            reuse_port=self.settings.scp_workers > 1,
        )
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.5},
            name=f"scp-listener-{address[1]}",
            daemon=True,
        )
        thread.start()
        self.servers.append(server)

    @property
    def ports(self) -> list[int]:
        return [int(server.server_address[1]) for server in self.servers]

    def stop(self) -> None:
        for server in self.servers:
            with contextlib.suppress(Exception):
                server.shutdown()
            with contextlib.suppress(Exception):
                server.close_all()
            with contextlib.suppress(Exception):
                server.server_close()
        self.servers.clear()

    def active_associations(self) -> int:
        return sum(s.active_associations for s in self.servers)

    def status(self) -> dict[str, str]:
        active = self.active_associations()
        pending = sum(s.pending_connections for s in self.servers)
        return {"associations": str(active), "pending_connections": str(pending)}
