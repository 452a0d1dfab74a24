"""Per-session TLS credentials for Dask, made on the laptop (cryptography comes with paramiko).

One self-signed certificate that is also its own CA, as `distributed.Security.temporary()`
makes, but written to 0600 files so that workers on other nodes (and worker jobs on
other partitions) can read it from the shared session directory. Whoever lacks the
session's key cannot talk to its scheduler.

It is valid for as long as the session may need it and no longer: the job's time limit plus a margin
for the time it may wait in the queue (the certificate is made before submission), or a week where
the session has no limit (--local, --scheduler none: those start at once). A copied key is useless after that.
"""

from __future__ import annotations

import datetime

#: How long a job may wait in the queue before it starts, on top of its time limit.
QUEUE_MARGIN = datetime.timedelta(days=3)
#: The validity where the session has no time limit.
NO_LIMIT = datetime.timedelta(days=7)


def validity(limit_seconds: int | None) -> datetime.timedelta:
    """How long a session's certificate is valid: its time limit plus the queue margin, or NO_LIMIT."""
    if limit_seconds is None or limit_seconds <= 0:
        return NO_LIMIT
    return datetime.timedelta(seconds=limit_seconds) + QUEUE_MARGIN


def make_credentials(session: str, limit_seconds: int | None = None) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for one session whose job may run `limit_seconds` (None: no limit)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"hpcjup-{session}")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + validity(limit_seconds))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
