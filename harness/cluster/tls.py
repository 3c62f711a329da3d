"""A CA and a server certificate made per run, for the lab's TLS servers (MariaDB ``--ssl``).

    files = make_server_tls(directory, names=["mysql.db", "mysql.db.svc.cluster.local"], ips=["10.244.0.3"])
    files.ca, files.cert, files.key          # PEM paths (the key 0600)

Made with the ``cryptography`` library rather than ``openssl`` execs: no private key or pass
phrase ever appears on a command line or in an openssl config file, the subjectAltNames are
data instead of a generated config section, and it costs ~10 ms in-process (EC P-256 keys)
instead of four forks. The CA's key lives only in memory: nothing can sign another certificate
after the call returns.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class TlsFiles:
    """PEM files of one server: its CA certificate, its certificate and its private key."""

    ca: str
    cert: str
    key: str


def _write(path: str, data: bytes, mode: int) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def make_server_tls(directory: str, *, names: Sequence[str], ips: Sequence[str] = (),
                    common_name: str = "nph-mariadb", days: int = 2) -> TlsFiles:
    """A fresh CA and a server certificate for ``names`` (DNS subjectAltNames) and ``ips`` (IP
    subjectAltNames) signed by it, written into ``directory`` (which must exist and be private):
    ``ca.pem``, ``server-cert.pem``, ``server-key.pem`` (0600). Valid from one hour ago for
    ``days``; EC P-256 keys, SHA-256 signatures."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=days)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "nph run CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(not_before).not_valid_after(not_after)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                       crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    alt += [x509.IPAddress(ipaddress.ip_address(i)) for i in ips]
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_before).not_valid_after(not_after)
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    files = TlsFiles(os.path.join(directory, "ca.pem"), os.path.join(directory, "server-cert.pem"),
                     os.path.join(directory, "server-key.pem"))
    _write(files.ca, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.cert, cert.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(files.key, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption()), 0o600)
    return files
