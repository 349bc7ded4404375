"""Certificates and keys for a loopback control plane: one CA, the serving cert, client certs, SA keys.

Client certificates carry the user in CN and the groups in O, which is how kube-apiserver's x509
authenticator reads them. `system:masters` bypasses RBAC: only the admin gets it, so that tests of
permissions run as other identities.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

if TYPE_CHECKING:
    from pathlib import Path

_VALIDITY = dt.timedelta(days=365)


@dataclass(frozen=True)
class CertificateFiles:
    """A certificate (or public key) and its private key, as PEM files."""

    cert: Path
    key: Path


def _private_pem(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    path.chmod(0o600)


class CertificateAuthority:
    """A throw-away CA; everything it signs is valid for a year and only on this machine."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "baseline-localcluster-ca")])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    key_cert_sign=True,
                    crl_sign=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.files = CertificateFiles(cert=folder / "ca.crt", key=folder / "ca.key")
        _write(self.files.cert, self._cert.public_bytes(serialization.Encoding.PEM))
        _write(self.files.key, _private_pem(self._key))

    def issue(
        self,
        name: str,
        *,
        common_name: str,
        organizations: tuple[str, ...] = (),
        server_hosts: tuple[str, ...] = (),
    ) -> CertificateFiles:
        """Sign a client certificate, or a serving one when `server_hosts` (DNS names or IPs) are given."""
        key = ec.generate_private_key(ec.SECP256R1())
        attributes = [x509.NameAttribute(NameOID.COMMON_NAME, common_name)]
        attributes += [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
        now = dt.datetime.now(dt.UTC)
        usage = [ExtendedKeyUsageOID.SERVER_AUTH] if server_hosts else [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name(attributes))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + _VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usage), critical=False)
        )
        if server_hosts:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(_alt_names(server_hosts)), critical=False
            )
        cert = builder.sign(self._key, hashes.SHA256())
        files = CertificateFiles(cert=self.folder / f"{name}.crt", key=self.folder / f"{name}.key")
        _write(files.cert, cert.public_bytes(serialization.Encoding.PEM))
        _write(files.key, _private_pem(key))
        return files


def _alt_names(hosts: tuple[str, ...]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def write_service_account_keys(folder: Path) -> CertificateFiles:
    """The key pair that signs and verifies ServiceAccount tokens (TokenRequest needs it)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    files = CertificateFiles(cert=folder / "sa.pub", key=folder / "sa.key")
    _write(files.key, _private_pem(key))
    _write(
        files.cert,
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
    )
    return files
