"""Throw-away certificates for TLS scenarios: one CA, server certificates for given names, one
client certificate. Written 0644 (the keys too: the uid-1337 Envoy reads them) into a directory
under the run's workdir, which is removed with the run.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


@dataclass(frozen=True)
class KeyPair:
    cert: Path
    key: Path


@dataclass(frozen=True)
class Certs:
    dir: Path
    ca: Path
    ca_key: ec.EllipticCurvePrivateKey

    def issue(self, name: str, sans: list[str] | tuple[str, ...] = ()) -> KeyPair:
        """A leaf certificate with CN `name` and SANs `sans` (DNS names or IPs), signed by the CA."""
        key = ec.generate_private_key(ec.SECP256R1())
        ca_cert = x509.load_pem_x509_certificate(self.ca.read_bytes())
        alt: list[x509.GeneralName] = []
        for san in sans or [name]:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(san)))
            except ValueError:
                alt.append(x509.DNSName(san))
        cert = (_builder(name, key, ca_cert.subject)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .add_extension(x509.SubjectAlternativeName(alt), critical=False)
                .sign(self.ca_key, hashes.SHA256()))
        return KeyPair(_write(self.dir / f"{name}.crt", cert.public_bytes(serialization.Encoding.PEM)),
                       _write(self.dir / f"{name}.key", _key_pem(key)))


def make_ca(directory: Path, name: str = "e2e-ca") -> Certs:
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o755)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _name(name)
    cert = (_builder(name, key, subject)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False,
                                         encipher_only=False, decipher_only=False), critical=True)
            .sign(key, hashes.SHA256()))
    ca = _write(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    return Certs(directory, ca, key)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _builder(cn: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1)))


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o644)
    return path
