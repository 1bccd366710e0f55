"""Throwaway certificates for DICOM TLS tests, made with the `openssl` command line tool.

`make_pki(folder)` writes a CA, a server and a client certificate issued by it (both valid for
`localhost` and 127.0.0.1, for either role), and a self-signed "stranger" certificate that no
trust store here knows: what a client without a trusted certificate presents.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

from . import require_tool


@dataclass(frozen=True)
class KeyPair:
    certificate: Path
    private_key: Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    server: KeyPair
    client: KeyPair
    stranger: KeyPair


_LEAF_EXTENSIONS = (
    "basicConstraints=critical,CA:FALSE\n"
    "keyUsage=critical,digitalSignature,keyEncipherment\n"
    "extendedKeyUsage=serverAuth,clientAuth\n"
    "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
)


def make_pki(folder: Path) -> Pki:
    openssl = require_tool("openssl")
    folder.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, timeout=120)

    def self_signed(name: str, subject: str, *extensions: str) -> KeyPair:
        pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
        run(
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", subject,
            "-keyout", str(pair.private_key), "-out", str(pair.certificate), *extensions,
        )  # fmt: skip
        return pair

    ca = self_signed(
        "ca",
        "/CN=CineBridge test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign",
    )
    extensions = folder / "leaf.ext"
    extensions.write_text(_LEAF_EXTENSIONS)

    def issued(name: str) -> KeyPair:
        pair = KeyPair(folder / f"{name}.pem", folder / f"{name}.key")
        request = folder / f"{name}.csr"
        run(
            "req", "-new", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}",
            "-keyout", str(pair.private_key), "-out", str(request),
        )  # fmt: skip
        run(
            "x509", "-req", "-in", str(request), "-CA", str(ca.certificate),
            "-CAkey", str(ca.private_key), "-CAcreateserial", "-days", "2",
            "-extfile", str(extensions), "-out", str(pair.certificate),
        )  # fmt: skip
        return pair

    stranger = self_signed(
        "stranger", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"
    )
    return Pki(ca.certificate, issued("server"), issued("client"), stranger)
