"""A private certificate authority for TLS tests: a CA, a server certificate for loopback and a
client certificate, as PEM files, made with `cryptography` (which notifier depends on anyway),
and the redis-server options that serve TLS only with them."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ClientAuth = Literal["yes", "optional", "no"]


@dataclass(frozen=True)
class Certificates:
    """PEM files: the CA's certificate, and a certificate with its key for each side."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path

    def server_args(self, tls_port: int, clients: ClientAuth = "yes") -> list[str]:
        """redis-server options for TLS only on `tls_port`, its plain port closed."""
        return [
            *("--port", "0", "--tls-port", str(tls_port)),
            *("--tls-cert-file", str(self.server_cert), "--tls-key-file", str(self.server_key)),
            *("--tls-ca-cert-file", str(self.ca), "--tls-auth-clients", clients),
            # replicas and sentinels speak TLS to each other with the same files
            *("--tls-replication", "yes"),
        ]

    def client_env(self) -> dict[str, str]:
        """notifier's settings that trust this CA and present the client certificate."""
        return {
            "NOTIFIER_REDIS_CA": str(self.ca),
            "NOTIFIER_REDIS_CERT": str(self.client_cert),
            "NOTIFIER_REDIS_KEY": str(self.client_key),
        }


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(
    folder: Path, stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey
) -> tuple[Path, Path]:
    cert_path, key_path = folder / f"{stem}.crt", folder / f"{stem}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def _signed(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None,
    usage: list[x509.ObjectIdentifier] | None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, issuer_key = issuer or (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=usage is None, path_length=None), critical=True)
    )
    if usage is None:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_certificates(folder: Path, ca_name: str = "notifier test CA") -> Certificates:
    """A fresh CA in `folder`, and a server and a client certificate it signed, both valid
    for 127.0.0.1 and localhost."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _signed(ca_name, ca_key, None, None)
    ca_path, _ = _write(folder, "ca", ca, ca_key)
    issuer = (ca.subject, ca_key)
    paths: list[Path] = []
    for stem, usage in (
        # a server is a client too when a replica connects to its primary
        ("server", [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
        ("client", [ExtendedKeyUsageOID.CLIENT_AUTH]),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        paths.extend(_write(folder, stem, _signed(f"{stem}.{ca_name}", key, issuer, usage), key))
    return Certificates(ca_path, *paths)
