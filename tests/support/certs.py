"""Test certificates (cryptography): a CA, a server certificate, client certificates with SPIFFE or
DNS identities. Written to a directory so that the server and Envoy read them as files.
"""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

SERVER_NAME = "xds-server.xds-system.svc"


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


@dataclass(frozen=True)
class Pair:
    cert: bytes
    key: bytes
    cert_path: str = ""
    key_path: str = ""


class TestCA:
    __test__ = False  # not a pytest class

    def __init__(self, directory: str | Path, name: str = "test-ca") -> None:
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        self._cert = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
            .public_key(self._key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                         content_commitment=False, key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
            .sign(self._key, hashes.SHA256()))
        self.pem = self._cert.public_bytes(serialization.Encoding.PEM)
        self.path = str(self.dir / f"{name}.pem")
        Path(self.path).write_bytes(self.pem)

    def issue(self, name: str, *, uris: tuple[str, ...] = (), dns: tuple[str, ...] = (),
              ips: tuple[str, ...] = (), server: bool = False) -> Pair:
        """A leaf certificate (written as NAME.pem / NAME-key.pem) with these SANs."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(u) for u in uris]
        sans += [x509.DNSName(d) for d in dns]
        sans += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
        builder = (
            x509.CertificateBuilder().subject_name(_name(name)).issuer_name(self._cert.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                  else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        cert_pem = cert.public_bytes(serialization.Encoding.PEM)
        key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        cert_path, key_path = self.dir / f"{name}.pem", self.dir / f"{name}-key.pem"
        cert_path.write_bytes(cert_pem)
        key_path.write_bytes(key_pem)
        return Pair(cert_pem, key_pem, str(cert_path), str(key_path))

    def server(self) -> Pair:
        return self.issue("server", dns=(SERVER_NAME, "localhost"), ips=("127.0.0.1",), server=True)

    def spiffe_client(self, name: str, namespace: str, service_account: str,
                      trust_domain: str = "cluster.local") -> Pair:
        return self.issue(name, uris=(f"spiffe://{trust_domain}/ns/{namespace}/sa/{service_account}",))

    def crl(self, name: str = "crl") -> str:
        """An empty certificate revocation list signed by this CA (written as NAME.pem); its path."""
        now = datetime.datetime.now(datetime.UTC)
        crl = (x509.CertificateRevocationListBuilder().issuer_name(self._cert.subject)
               .last_update(now - datetime.timedelta(minutes=5)).next_update(now + datetime.timedelta(days=1))
               .sign(self._key, hashes.SHA256()))
        path = self.dir / f"{name}.pem"
        path.write_bytes(crl.public_bytes(serialization.Encoding.PEM))
        return str(path)
