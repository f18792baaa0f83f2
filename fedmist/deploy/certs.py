"""Key material for a secure deployment, made with ``cryptography`` (no openssl scripts).

``certs/`` layout (what ``fedmist deploy superlink/supernode`` expect):
  ca.crt, ca.key            self-signed CA; ca.crt goes to every machine, ca.key to none
  superlink.crt, .key       SuperLink TLS certificate for the given hosts (+ localhost, 127.0.0.1:
                            the SuperLink's own ServerApp process connects back over TLS)
  supernodes/node-<i>.key   SuperNode i's authentication key (EC P-384, OpenSSH format)
  supernodes/node-<i>.pub   its public key; the SuperLink registers every ``*.pub`` found here
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from fedmist.errors import ConfigError

VALID_DAYS = 365
LOCAL_HOSTS = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class CertPaths:
    """Where each file of a ``certs/`` directory lives."""

    root: Path

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "superlink.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "superlink.key"

    @property
    def nodes(self) -> Path:
        return self.root / "supernodes"

    def node_key(self, i: int) -> Path:
        return self.nodes / f"node-{i}.key"

    def node_pub(self, i: int) -> Path:
        return self.nodes / f"node-{i}.pub"

    def public_keys(self) -> list[Path]:
        return sorted(self.nodes.glob("*.pub"))

    def check_server(self) -> None:
        """Raise ConfigError naming the first file the SuperLink needs but lacks."""
        for p in (self.ca_cert, self.server_cert, self.server_key):
            if not p.is_file():
                raise ConfigError(f"{p} not found; create it with `fedmist deploy certs --out {self.root}`")


def make_certs(out: Path, hosts: list[str], nodes: int, force: bool = False) -> CertPaths:
    """Write a CA, the SuperLink certificate for ``hosts`` and ``nodes`` SuperNode key pairs."""
    paths = CertPaths(out)
    if paths.ca_cert.exists() and not force:
        raise ConfigError(f"{paths.ca_cert} already exists; use --force to replace the whole set")
    if nodes < 1:
        raise ConfigError(f"--nodes must be >= 1, got {nodes}")
    paths.nodes.mkdir(parents=True, exist_ok=True)
    for old in paths.nodes.glob("node-*"):
        old.unlink()
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedmist deployment CA")])
    ca_cert = (_builder(ca_name, ca_name, ca_key.public_key())
               .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                            content_commitment=False, key_encipherment=False,
                                            data_encipherment=False, key_agreement=False,
                                            encipher_only=False, decipher_only=False), critical=True)
               .sign(ca_key, hashes.SHA384()))
    _write_key(paths.ca_key, ca_key)
    paths.ca_cert.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    server_key = ec.generate_private_key(ec.SECP384R1())
    names = _unique([*hosts, *LOCAL_HOSTS])
    server_cert = (_builder(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]), ca_name,
                            server_key.public_key())
                   .add_extension(x509.SubjectAlternativeName([_san(h) for h in names]), critical=False)
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
                   .sign(ca_key, hashes.SHA384()))
    _write_key(paths.server_key, server_key)
    paths.server_cert.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))

    for i in range(nodes):
        write_node_keys(paths.node_key(i), paths.node_pub(i), comment=f"fedmist-node-{i}")
    return paths


def write_node_keys(key_path: Path, pub_path: Path, comment: str = "") -> None:
    """One SuperNode authentication key pair: EC P-384 in OpenSSH format (what Flower loads)."""
    key = ec.generate_private_key(ec.SECP384R1())
    key_path.parent.mkdir(parents=True, exist_ok=True)
    _write_bytes_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                                     serialization.NoEncryption()))
    pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    pub_path.write_bytes(pub + (f" {comment}".encode() if comment else b"") + b"\n")


def _builder(subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=VALID_DAYS)))


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _unique(hosts: list[str]) -> list[str]:
    out = [h.strip() for h in hosts if h.strip()]
    return list(dict.fromkeys(out))


def _write_key(path: Path, key: ec.EllipticCurvePrivateKey) -> None:
    _write_bytes_private(path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                 serialization.NoEncryption()))


def _write_bytes_private(path: Path, data: bytes) -> None:
    """Private keys are readable by their owner only."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
