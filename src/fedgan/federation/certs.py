"""`fedgan certs`: the keys a secure deployment needs, made with the `cryptography` package.

- A certificate authority (`ca.crt`, `ca.key`). Every hospital and the operator's `flwr` CLI
  trust the SuperLink because its certificate is signed by this CA; without `ca.crt` nobody
  can open a TLS connection to it. Keep `ca.key` off the coordinator once the SuperLink's
  certificate is made.
- The SuperLink's certificate and key (`superlink.crt`, `superlink.key`) for the names and
  addresses it is reached at (`--host`, repeatable).
- One EC P-384 key pair per hospital, in OpenSSH format, for Flower's SuperNode
  authentication: the operator registers each `hospital-N.pub` with `flwr supernode register`
  and gives `hospital-N.key` to that hospital only. With `--enable-supernode-auth`, a SuperNode
  whose key was not registered is refused.

Private keys are written readable by their owner only (mode 600). The folder is created whole
or not at all, and an existing one is never replaced unless FedGAN wrote it and `--overwrite`
is given.
"""

from __future__ import annotations

import dataclasses
import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedgan.atomic import staged_directory
from fedgan.errors import FedGANError

#: certificates' validity; renew with a new `fedgan certs` (hospitals' keys can stay)
VALID_DAYS = 825


@dataclasses.dataclass(frozen=True)
class Certificates:
    folder: Path
    hospitals: int
    hosts: tuple[str, ...]


def _name(common: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "FedGAN federation"),
            x509.NameAttribute(NameOID.COMMON_NAME, common),
        ]
    )


def _alternative_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _private(path: Path, key: ec.EllipticCurvePrivateKey, form: serialization.PrivateFormat) -> None:
    """A private key, unencrypted (services read it unattended), readable by its owner only."""
    path.touch(mode=0o600)
    os.chmod(path, 0o600)
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, form, serialization.NoEncryption()))


def make_certificates(
    out: Path, *, hospitals: int, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"), overwrite: bool = False
) -> Certificates:
    """Write the CA, the SuperLink's certificate and `hospitals` SuperNode key pairs into `out`."""
    if hospitals < 1 or not hosts:
        raise FedGANError("fedgan certs needs --hospitals >= 1 and at least one --host")
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("FedGAN federation CA"))
        .issuer_name(_name("FedGAN federation CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
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
        .sign(ca_key, hashes.SHA384())
    )
    link_key = ec.generate_private_key(ec.SECP384R1())
    link = (
        x509.CertificateBuilder()
        .subject_name(_name(hosts[0]))
        .issuer_name(ca.subject)
        .public_key(link_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName([_alternative_name(h) for h in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    with staged_directory(out, overwrite=overwrite) as staging:
        (staging / "ca.crt").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
        _private(staging / "ca.key", ca_key, serialization.PrivateFormat.PKCS8)
        (staging / "superlink.crt").write_bytes(link.public_bytes(serialization.Encoding.PEM))
        _private(staging / "superlink.key", link_key, serialization.PrivateFormat.PKCS8)
        (staging / "hospitals").mkdir()
        for hospital in range(hospitals):
            key = ec.generate_private_key(ec.SECP384R1())
            _private(staging / "hospitals" / f"hospital-{hospital}.key", key, serialization.PrivateFormat.OpenSSH)
            (staging / "hospitals" / f"hospital-{hospital}.pub").write_bytes(
                key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
                + b"\n"
            )
    return Certificates(Path(out), hospitals, hosts)
