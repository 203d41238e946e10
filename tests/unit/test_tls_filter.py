"""Tests of filter_plugins/shadowdb_tls.py: when the controller keeps a certificate as it is."""

import datetime
import sys
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "filter_plugins"))
from shadowdb_tls import shadowdb_cert_fresh  # noqa: E402

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.UTC)


def make_cert(name, issuer_key, issuer_name, days, key=None):
    key = key or ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=days))
        .sign(issuer_key, hashes.SHA256())
    )
    return key, cert.public_bytes(serialization.Encoding.PEM).decode()


def make_ca(name):
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    _key, pem = make_cert(name, key, subject, 3650, key=key)
    return key, subject, pem


def test_a_certificate_of_this_ca_far_from_renewal_is_kept():
    key, subject, ca = make_ca("ShadowDB CA")
    _k, cert = make_cert("registry-writer", key, subject, 825)
    assert shadowdb_cert_fresh(cert, ca, 30, now=NOW)


def test_due_for_renewal_another_ca_or_nothing_is_not():
    key, subject, ca = make_ca("ShadowDB CA")
    other_key, other_subject, _other = make_ca("ShadowDB CA")  # same name, other key
    _k, soon = make_cert("registry-writer", key, subject, 10)
    _k, foreign = make_cert("registry-writer", other_key, other_subject, 825)
    assert not shadowdb_cert_fresh(soon, ca, 30, now=NOW)
    assert not shadowdb_cert_fresh(foreign, ca, 30, now=NOW)
    assert not shadowdb_cert_fresh("", ca, 30, now=NOW)
    assert not shadowdb_cert_fresh(None, ca, 30, now=NOW)
    assert not shadowdb_cert_fresh("-----BEGIN CERTIFICATE-----\ngarbage\n", ca, 30, now=NOW)
