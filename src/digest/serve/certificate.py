"""The capsule's TLS certificate: self-signed on first start, then reused, since Gemini
clients pin it on first use (TOFU)."""

from __future__ import annotations

import ipaddress
import logging
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from digest.files import write_atomically

log = logging.getLogger("digest.serve")

# RFC 5280 4.1.2.5: a certificate with no well-defined expiry. Gemini clients pin a capsule's
# certificate on first use (TOFU), so a certificate that expired would look like an attack.
_NO_EXPIRY = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)


def certificate_fingerprint(cert_pem: Path) -> str:
    """SHA-256 of the certificate's DER form, as hex: what TOFU clients show and pin."""
    cert = x509.load_pem_x509_certificate(cert_pem.read_bytes())
    return cert.fingerprint(hashes.SHA256()).hex()


def ensure_certificate(state_dir: Path, hostname: str) -> Path:
    """The self-signed certificate for `hostname` in `state_dir`, made on first use and then
    reused, so clients that pinned it keep trusting us. One PEM file holds key and certificate
    (mode 0600), renamed into place whole: two first starts cannot pair one's key with the
    other's certificate."""
    safe_name = re.sub(r"[^A-Za-z0-9.-]", "_", hostname)
    path = state_dir / f"gemini-{safe_name}.pem"
    if path.exists():
        certificate_fingerprint(path)  # a damaged file stops us here, not at the first client
        return path
    state_dir.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, hostname)])
    try:
        alt_name: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        alt_name = x509.DNSName(hostname)
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))  # tolerate clients whose clock is behind
        .not_valid_after(_NO_EXPIRY)
        .add_extension(x509.SubjectAlternativeName([alt_name]), critical=False)
        .sign(key, hashes.SHA256())
    )
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_atomically(path, pem, mode=0o600)  # it holds the private key
    log.info("generated a Gemini certificate for %s in %s", hostname, path)
    return path
