"""Per-session TLS credentials for Dask, made on the laptop (cryptography comes with paramiko).

One self-signed certificate that is also its own CA, as `distributed.Security.temporary()`
makes, but written to 0600 files so that workers on other nodes (and worker jobs on
other partitions) can read it from the shared session directory. Whoever lacks the
session's key cannot talk to its scheduler.
"""

from __future__ import annotations

import datetime

_VALID_DAYS = 30


def make_credentials(session: str) -> tuple[bytes, bytes]:
    """(certificate PEM, private key PEM) for one session."""
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
        .not_valid_after(now + datetime.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem
