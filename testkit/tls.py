"""A throw-away certificate for the loopback TLS relays of the tests."""

from __future__ import annotations

import subprocess
from pathlib import Path


def self_signed(folder: Path) -> tuple[Path, Path]:
    """cert.pem and key.pem in ``folder``: self-signed, valid two days, for 127.0.0.1 and localhost.

    Untrusted as it is (the relay's certificate "does not verify"); a client that is given
    cert.pem as its CA file (``SmtpConfig.cafile``, or SSL_CERT_FILE for a subprocess) trusts it.
    """
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key
