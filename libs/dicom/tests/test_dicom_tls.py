"""DICOM TLS (PS3.15 B.9, BCP 195) between our requestor and our acceptor, and each against
DCMTK built with OpenSSL (`echoscu +tls`, `storescp +tls`), with throwaway certificates."""

from __future__ import annotations

import contextlib
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cinebridge_dicom import requestor, tls
from cinebridge_dicom.acceptor import AcceptorAssociation
from cinebridge_dicom.ae import ApplicationEntity, Server
from cinebridge_dicom.events import Evt
from cinebridge_testkit import require_tool
from cinebridge_testkit.certs import Pki, make_pki

VERIFICATION = "1.2.840.10008.1.1"
ILE = "1.2.840.10008.1.2"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def mutual(pki: Pki) -> Iterator[tuple[Server, list[str]]]:
    """Our acceptor on TLS, client certificates issued by the test CA required."""
    accepted: list[str] = []

    def on_accepted(assoc: AcceptorAssociation, rq: Any) -> None:
        accepted.append(rq.calling_ae)

    ae = ApplicationEntity("TLSSCP", "1.2.3.4", "TEST_01", acse_timeout_s=5, network_timeout_s=5)
    ae.add_supported_context(VERIFICATION, [ILE])
    context = tls.server_context(pki.server.certificate, pki.server.private_key, client_ca=pki.ca)
    server = ae.start_server(("127.0.0.1", 0), [(Evt.ACCEPTED, on_accepted)], ssl_context=context)
    try:
        yield server, accepted
    finally:
        server.shutdown()


def echo_ae(calling: str) -> ApplicationEntity:
    ae = ApplicationEntity(calling, "1.2.3.5", "TEST_02", acse_timeout_s=5, dimse_timeout_s=5)
    ae.add_requested_context(VERIFICATION, [ILE])
    return ae


def test_a_client_with_a_certificate_of_the_trusted_ca_is_served(mutual: Any, pki: Pki) -> None:
    server, accepted = mutual
    context = tls.client_context(
        ca_bundle=pki.ca,
        certificate=pki.client.certificate,
        private_key=pki.client.private_key,
    )
    assoc = echo_ae("TRUSTED").associate("127.0.0.1", server.port, "TLSSCP", tls=context)
    assert isinstance(assoc.sock, ssl.SSLSocket)
    assert assoc.sock.version() in ("TLSv1.2", "TLSv1.3")
    assert assoc.send_c_echo() == 0x0000
    assoc.release()
    assert accepted == ["TRUSTED"]


@pytest.mark.parametrize("who", ["stranger", "no certificate"])
def test_a_client_without_a_trusted_certificate_is_refused(mutual: Any, pki: Pki, who: str) -> None:
    server, accepted = mutual
    own = pki.stranger if who == "stranger" else None
    context = tls.client_context(
        ca_bundle=pki.ca,
        certificate=own.certificate if own else None,
        private_key=own.private_key if own else None,
    )
    with pytest.raises(requestor.AssociationError):
        echo_ae("STRANGER").associate("127.0.0.1", server.port, "TLSSCP", tls=context)
    # Refused in the handshake: the acceptor never saw an A-ASSOCIATE-RQ.
    assert accepted == []


def test_the_server_refuses_suites_and_versions_outside_bcp_195(mutual: Any, pki: Pki) -> None:
    server, accepted = mutual
    outdated = [
        ("RSA key transport", ssl.TLSVersion.TLSv1_2, "AES128-GCM-SHA256"),
        ("CBC", ssl.TLSVersion.TLSv1_2, "ECDHE-RSA-AES128-SHA256"),
    ]
    for what, version, cipher in outdated:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.load_verify_locations(cafile=str(pki.ca))
        context.load_cert_chain(pki.client.certificate, pki.client.private_key)
        context.maximum_version = version
        context.set_ciphers(cipher)
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLError):
                context.wrap_socket(raw, server_hostname="localhost").close()
                pytest.fail(f"{what}: handshake completed")
    assert accepted == []


def test_the_client_refuses_a_server_it_cannot_verify(mutual: Any, pki: Pki) -> None:
    server, _ = mutual
    with pytest.raises(requestor.AssociationError, match="CERTIFICATE_VERIFY_FAILED"):
        echo_ae("SCU").associate(
            "127.0.0.1",
            server.port,
            "TLSSCP",
            tls=tls.client_context(ca_bundle=pki.stranger.certificate),
        )


def test_dcmtk_echoscu_over_tls_to_our_acceptor(mutual: Any, pki: Pki) -> None:
    server, accepted = mutual
    echoscu = require_tool("echoscu")
    common = [echoscu, "-aec", "TLSSCP", "+cf", str(pki.ca)]
    done = subprocess.run(
        [*common, "-aet", "DCMTK", "+tls", str(pki.client.private_key),
         str(pki.client.certificate), "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    refused = subprocess.run(
        [*common, "-aet", "ROGUE", "+tls", str(pki.stranger.private_key),
         str(pki.stranger.certificate), "127.0.0.1", str(server.port)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode != 0, refused.stdout + refused.stderr
    assert accepted == ["DCMTK"]


def _wait_port(port: int, proc: subprocess.Popen[bytes], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert proc.poll() is None, "storescp exited"
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
            return
        time.sleep(0.05)
    raise AssertionError(f"storescp did not listen on {port}")


def test_our_requestor_to_dcmtk_storescp_requiring_our_certificate(
    pki: Pki, tmp_path: Path
) -> None:
    storescp = require_tool("storescp")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        [storescp, "-od", str(tmp_path), "-aet", "STORESCP", "+tls", str(pki.server.private_key),
         str(pki.server.certificate), "+cf", str(pki.ca), "-rc", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        _wait_port(port, proc)
        ours = tls.client_context(
            ca_bundle=pki.ca,
            certificate=pki.client.certificate,
            private_key=pki.client.private_key,
        )
        assoc = echo_ae("SCU").associate("127.0.0.1", port, "STORESCP", tls=ours)
        assert assoc.send_c_echo() == 0x0000
        assoc.release()
        anonymous = tls.client_context(ca_bundle=pki.ca)
        with pytest.raises(requestor.AssociationError):
            echo_ae("SCU").associate("127.0.0.1", port, "STORESCP", tls=anonymous)
    finally:
        proc.terminate()
        proc.wait(10)
