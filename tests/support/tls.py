"""A certificate for a test's HTTPS receiver, made with the openssl command line tool."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest


@dataclass
class ServerTls:
    context: ssl.SSLContext
    certificate: Path
    """Trust this file (SSL_CERT_FILE) and the receiver's certificate verifies for `name`."""
    server_names: list[str | None] = field(default_factory=list)
    """The name each client asked for in its TLS handshake (SNI), in order."""


def server_tls(directory: Path, name: str) -> ServerTls:
    """A self-signed certificate for `name` (and only it), and a server context using it."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    key, certificate = directory / f"{name}.key", directory / f"{name}.pem"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            f"/CN={name}",
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(certificate),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certificate, key)
    tls = ServerTls(context, certificate)

    def remember(_socket: ssl.SSLObject, server_name: str | None, _: ssl.SSLContext) -> None:
        tls.server_names.append(server_name)

    context.sni_callback = remember
    return tls
