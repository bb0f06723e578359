"""`--gen-cert`: a self-signed certificate for the proxy's HTTPS, made with `cryptography`."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from mooltiproxy.core.errors import ConfigError

VALID_DAYS = 825  # the longest validity browsers accept for a server certificate
DEFAULT_NAMES = ("localhost", "127.0.0.1", "::1")


# A DNS name: labels of letters, digits and inner hyphens, 63 characters at most, 253 in all; a
# leading `*.` for a wildcard.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")


def subject_alternative_names(names: Iterable[str]) -> list[x509.GeneralName]:
    """The names as they go in the certificate; one that is neither an address nor a DNS name is a
    ConfigError naming it."""
    entries: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            entries.append(x509.IPAddress(ipaddress.ip_address(name)))
            continue
        except ValueError:
            pass
        labels = name.removeprefix("*.").rstrip(".").split(".")
        if not name or len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
            raise ConfigError([f"--hostname {name!r}: not an IP address or a DNS name"])
        entries.append(x509.DNSName(name))
    return entries


def generate_self_signed(certfile: Path, keyfile: Path, hostnames: Iterable[str] = (), force: bool = False) -> None:
    """Writes a P-256 key (mode 0600) and a certificate for localhost, 127.0.0.1, ::1 and `hostnames`."""
    for path in (certfile, keyfile):
        if path.exists() and not force:
            raise ConfigError([f"{path} already exists (add --force to replace it)"])
    names = subject_alternative_names([*DEFAULT_NAMES, *hostnames])
    key = ec.generate_private_key(ec.SECP256R1())
    # Clients check the names in the SAN, which has no length limit; the CN (64 characters at most)
    # only says what the certificate is.
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mooltiproxy self-signed")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        # It is its own trust anchor: strict verifiers want it marked as a CA, with key identifiers.
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    try:
        for path in (certfile, keyfile):
            path.parent.mkdir(parents=True, exist_ok=True)
        _write(keyfile, key_bytes, 0o600)
        _write(certfile, certificate.public_bytes(serialization.Encoding.PEM), 0o644)
    except OSError as exc:
        raise ConfigError([f"cannot write the certificate: {exc.strerror or exc} ({exc.filename})"]) from None


def _write(path: Path, content: bytes, mode: int) -> None:
    # Created with its final mode: the key is never readable by others, not even for an instant.
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "wb") as file:
        file.write(content)
    os.chmod(path, mode)
