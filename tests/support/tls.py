"""Certificates for the TLS tests: a CA, and certificates it signs (for mutual TLS)."""

from __future__ import annotations

import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _issue(
    folder: Path, stem: str, subject: str, issuer: x509.Name | None, signing_key, extensions: list
) -> tuple[Path, Path]:
    """Writes `stem`.pem and `stem`-key.pem: a new key, certified by `signing_key` (itself if None)."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer or _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
    )
    for extension, critical in [*extensions, (x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)]:
        builder = builder.add_extension(extension, critical=critical)
    certificate = builder.sign(signing_key or key, hashes.SHA256())
    cert_path, key_path = folder / f"{stem}.pem", folder / f"{stem}-key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


def make_ca(folder: Path) -> tuple[Path, Path]:
    return _issue(
        folder,
        "ca",
        "test client CA",
        None,
        None,
        [
            (x509.BasicConstraints(ca=True, path_length=None), True),
            (x509.KeyUsage(True, False, False, False, False, True, True, False, False), True),
        ],
    )


def make_client_certificate(folder: Path, ca_cert: Path, ca_key: Path) -> tuple[Path, Path]:
    authority = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    authority_key = serialization.load_pem_private_key(ca_key.read_bytes(), None)
    return _issue(
        folder,
        "client",
        "test client",
        authority.subject,
        authority_key,
        [
            (x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), False),
            (x509.AuthorityKeyIdentifier.from_issuer_public_key(authority_key.public_key()), False),
        ],
    )
