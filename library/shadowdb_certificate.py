#!/usr/bin/python
# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Ansible module: the deployment CA signs a host's key for names and usages the controller chose."""

import datetime
import ipaddress
import os
import re
import sys

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.shadowdb_batch import run_batch, tenant_params

try:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
    from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID

    HAS_CRYPTOGRAPHY = True
except ImportError:  # reported by main()
    HAS_CRYPTOGRAPHY = False

DOCUMENTATION = r"""
---
module: shadowdb_certificate
short_description: Issue a certificate from the deployment CA for names and usages the controller sets
description:
  - Runs on the controller (C(delegate_to=localhost)), where the deployment CA's key lives.
  - A host sends a certificate signing request (CSR) for a key it keeps. This module takes only the
    CSR's B(public key) (after verifying the CSR's signature, which proves the host holds the private
    key). Everything else the CSR asks for is ignored, namely its subject, its subject alternative names, its
    key usages, its basic constraints and any other extension. A host can therefore only obtain a
    certificate for the names and usages the controller derives itself (from inventory and the tenant
    spec), never for another tenant's name, never a CA certificate.
  - 'An issued certificate carries: subject C(CN=<common_name>); the O(subject_alt_name) names (no SAN
    extension when the list is empty); basic constraints C(CA:FALSE) (critical); key usage
    C(digitalSignature) (plus C(keyEncipherment) for an RSA key; critical); the O(extended_key_usage)
    purposes; subject and authority key identifiers. It is valid from 5 minutes ago for O(valid_days).'
  - The O(existing) certificate is kept (C(changed=false)) while it was issued by the current CA
    (signature and issuer), for the CSR's public key, with exactly the expected subject, names and
    extended key usages, no CA basic constraints, no key usage beyond the ones above, no other extension,
    and more than O(renew_days) days left. Otherwise a new certificate is issued and RV(reasons) says why.
    A certificate issued by community.crypto's C(ownca) provider for the same names and usages (no basic
    constraints and no key usage extension) is kept.
  - The list form (O(tenants)) decides, and issues, the certificates of a batch of tenants in one call,
    with the CA key loaded once. O(extended_key_usage), O(valid_days), O(renew_days), O(ca_cert_path) and
    O(ca_key_path) are shared by all of them. A tenant's failure (a bad CSR, name or common name) is its
    own, listed in RV(failed_tenants), and the task does not fail; a wrong call (a bad shared option, a CA
    that cannot be loaded, a repeated name, a per-tenant option beside O(tenants)) fails the task.
options:
  csr:
    description:
      - The host's certificate signing request, PEM. Only its public key is used.
      - Required without O(tenants) (the single form).
    type: str
  common_name:
    description:
      - Subject common name of the certificate (the only attribute of its subject).
      - Required without O(tenants) (the single form).
    type: str
  subject_alt_name:
    description:
      - Subject alternative names, each C(DNS:<name>) or C(IP:<address>) (the community.crypto form).
      - Duplicates are dropped. An empty list issues a certificate without the extension.
    type: list
    elements: str
    default: []
  extended_key_usage:
    description: Purposes of the certificate. Duplicates are dropped.
    type: list
    elements: str
    choices: [serverAuth, clientAuth]
    required: true
  valid_days:
    description: Lifetime of a newly issued certificate, in days.
    type: int
    default: 825
  renew_days:
    description: The O(existing) certificate is replaced when it has this many days left or fewer.
    type: int
    default: 30
  ca_cert_path:
    description: The CA certificate (PEM) on the controller.
    type: path
    required: true
  ca_key_path:
    description:
      - The CA private key (PEM, unencrypted) on the controller. Its content is never returned or logged.
    type: path
    required: true
  existing:
    description:
      - The certificate (PEM) the host has now, if any. Kept when still good (see the description).
      - An empty string is the same as no certificate.
    type: str
  tenants:
    description:
      - The list form, one certificate per item, each with the options of one certificate (the other
        options are shared). Mutually exclusive with O(csr), O(common_name), O(subject_alt_name) and
        O(existing) at the top level. May be empty.
    type: list
    elements: dict
    suboptions:
      name:
        description: The tenant (or other owner) of the certificate, its key in RV(results). Unique.
        type: str
        required: true
      csr:
        description: As O(csr).
        type: str
        required: true
      common_name:
        description: As O(common_name).
        type: str
        required: true
      subject_alt_name:
        description: As O(subject_alt_name).
        type: list
        elements: str
        default: []
      existing:
        description: As O(existing).
        type: str
requirements:
  - cryptography (on the controller; ansible-core depends on it)
notes:
  - In check mode nothing is signed. RV(changed) and RV(reasons) say whether a certificate would be
    issued, and RV(certificate) is the O(existing) certificate (an empty string when there is none).
attributes:
  check_mode:
    support: full
    description: Decides whether a certificate would be issued without signing one.
  diff_mode:
    support: full
    description: Returns the subject, names, usages, issuer and expiry before and after.
author:
  - ShadowDB contributors
"""

EXAMPLES = r"""
- name: Sign the tenant's server certificate (the names come from the spec, not from the CSR)
  shadowdb_certificate:
    csr: "{{ tenant_csr.csr }}"
    common_name: "acme.db.example.internal"
    subject_alt_name: ["DNS:acme.db.example.internal"]
    extended_key_usage: [serverAuth]
    valid_days: 825
    ca_cert_path: "{{ inventory_dir }}/pki/ca.crt"
    ca_key_path: "{{ inventory_dir }}/pki/ca.key"
    existing: "{{ (existing_cert.content | b64decode) if existing_cert.content is defined else omit }}"
  delegate_to: localhost
  register: tenant_cert

- name: Sign an etcd client certificate (no subject alternative names)
  shadowdb_certificate:
    csr: "{{ client_csr.csr }}"
    common_name: "{{ inventory_hostname }}"
    extended_key_usage: [clientAuth]
    ca_cert_path: /etc/shadowdb-controller/pki/ca.crt
    ca_key_path: /etc/shadowdb-controller/pki/ca.key
  delegate_to: localhost

- name: Sign the server certificates of a batch of tenants in one call
  shadowdb_certificate:
    tenants:
      - name: acme
        csr: "{{ csrs.acme }}"
        common_name: acme.db.example.internal
        subject_alt_name: ["DNS:acme.db.example.internal"]
        existing: "{{ existing_certs.acme | default('') }}"
      - name: globex
        csr: "{{ csrs.globex }}"
        common_name: globex.db.example.internal
        subject_alt_name: ["DNS:globex.db.example.internal"]
    extended_key_usage: [serverAuth]
    ca_cert_path: "{{ inventory_dir }}/pki/ca.crt"
    ca_key_path: "{{ inventory_dir }}/pki/ca.key"
  delegate_to: localhost
  register: batch_certs  # batch_certs.results.acme.certificate
"""

RETURN = r"""
certificate:
  description: The certificate, PEM (the existing one when kept, or in check mode).
  returned: success, without O(tenants)
  type: str
reasons:
  description: Why a certificate was (or in check mode would be) issued; empty when the existing one is kept.
  returned: success, without O(tenants)
  type: list
  elements: str
  sample:
    - the existing certificate names DNS:acme.db.example, DNS:globex.db.example, expected DNS:acme.db.example
not_after:
  description: Expiry of RV(certificate), ISO 8601 UTC (absent in check mode when none exists yet).
  returned: when there is a certificate, without O(tenants)
  type: str
  sample: "2029-03-01T10:00:00+00:00"
serial_number:
  description: Serial number of RV(certificate), hexadecimal.
  returned: when there is a certificate, without O(tenants)
  type: str
results:
  description:
    - With O(tenants), each tenant's name mapped to what the single form returns for its certificate
      (C(certificate), C(reasons), C(changed), C(not_after), C(serial_number)) and C(failed); a failed
      tenant has C(failed=true) and C(msg) instead.
  returned: with O(tenants)
  type: dict
  sample:
    acme: {"changed": false, "failed": false, "certificate": "-----BEGIN CERTIFICATE-----...", "reasons": [],
           "not_after": "2029-03-01T10:00:00+00:00", "serial_number": "4f1c..."}
    globex: {"changed": false, "failed": true, "msg": "csr: not a PEM certificate signing request"}
failed_tenants:
  description: With O(tenants), each tenant that failed mapped to why (the task itself does not fail).
  returned: with O(tenants)
  type: dict
  sample: {"globex": "csr: not a PEM certificate signing request"}
"""

EKU_OIDS = {}
if HAS_CRYPTOGRAPHY:
    EKU_OIDS = {"serverAuth": ExtendedKeyUsageOID.SERVER_AUTH, "clientAuth": ExtendedKeyUsageOID.CLIENT_AUTH}
# Margin for clocks that differ between the controller and the hosts.
BACKDATE = datetime.timedelta(minutes=5)
_LABEL = r"[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?"
DNS_NAME = re.compile(rf"^(?=.{{1,253}}$)(\*\.)?{_LABEL}(\.{_LABEL})*$")
MIN_RSA_BITS = 2048


class SignError(Exception):
    """A bad argument or input: the message names the argument."""


def _now():
    return datetime.datetime.now(datetime.UTC)


def parse_sans(values):
    """Return the x509.GeneralName list for ['DNS:x', 'IP:y', ...] (duplicates dropped, order kept)."""
    names = []
    for index, raw in enumerate(values or []):
        where = f"subject_alt_name[{index}]"
        kind, sep, value = str(raw).partition(":")
        if not sep or not value:
            raise SignError(f"{where}: {raw!r} is not of the form DNS:<name> or IP:<address>")
        kind = kind.strip().upper()
        value = value.strip()
        if kind == "DNS":
            if not DNS_NAME.match(value.lower()):
                raise SignError(f"{where}: {value!r} is not a DNS name")
            name = x509.DNSName(value)
        elif kind in ("IP", "IP ADDRESS"):
            try:
                name = x509.IPAddress(ipaddress.ip_address(value))
            except ValueError as e:
                raise SignError(f"{where}: {value!r} is not an IP address") from e
        else:
            raise SignError(f"{where}: {kind!r} names are not issued; use DNS:<name> or IP:<address>")
        if name not in names:
            names.append(name)
    return names


def san_text(name):
    """Return 'DNS:x' / 'IP:y' / a readable form of any other general name."""
    if isinstance(name, x509.DNSName):
        return f"DNS:{name.value}"
    if isinstance(name, x509.IPAddress):
        return f"IP:{name.value}"
    return f"{type(name).__name__}:{name.value}"


def parse_ekus(values):
    """Return the EKU OIDs for ['serverAuth', 'clientAuth'] (duplicates dropped, order kept)."""
    oids = []
    for index, raw in enumerate(values or []):
        if raw not in EKU_OIDS:
            raise SignError(f"extended_key_usage[{index}]: {raw!r} is not one of {', '.join(EKU_OIDS)}")
        if EKU_OIDS[raw] not in oids:
            oids.append(EKU_OIDS[raw])
    if not oids:
        raise SignError("extended_key_usage: give at least one of " + ", ".join(EKU_OIDS))
    return oids


def eku_text(oid):
    for name, known in EKU_OIDS.items():
        if known == oid:
            return name
    return oid.dotted_string


def load_csr(pem):
    """Return the CSR's public key after checking the CSR's signature (proof of possession)."""
    try:
        csr = x509.load_pem_x509_csr(pem.encode() if isinstance(pem, str) else pem)
    except ValueError as e:
        raise SignError("csr: not a PEM certificate signing request") from e
    try:
        valid = csr.is_signature_valid
        key = csr.public_key()
    except (ValueError, TypeError, UnsupportedAlgorithm) as e:
        raise SignError(f"csr: its key or signature algorithm is not supported ({e})") from None
    if not valid:
        raise SignError("csr: its signature does not verify with its own public key")
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise SignError(f"csr: an RSA key of {key.key_size} bits is too small (at least {MIN_RSA_BITS})")
    elif not isinstance(key, ec.EllipticCurvePublicKey | ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
        raise SignError(f"csr: a {type(key).__name__} key is not accepted (use EC, RSA or Ed25519)")
    return key


def load_ca(cert_path, key_path):
    """Return (CA certificate, CA private key); errors never contain the key's content."""
    try:
        with open(cert_path, "rb") as f:
            ca_cert = x509.load_pem_x509_certificate(f.read())
    except OSError as e:
        raise SignError(f"ca_cert_path: cannot read {cert_path}: {e.strerror}") from None
    except ValueError:
        raise SignError(f"ca_cert_path: {cert_path} is not a PEM certificate") from None
    try:
        constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        if not constraints.ca:
            raise SignError(f"ca_cert_path: {cert_path} is not a CA certificate (CA:FALSE)")
    except x509.ExtensionNotFound:
        pass
    try:
        with open(key_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise SignError(f"ca_key_path: cannot read {key_path}: {e.strerror}") from None
    try:
        ca_key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        # Never chain the parser's exception: nothing of the key may reach a message.
        raise SignError(f"ca_key_path: {key_path} is not an unencrypted PEM private key") from None
    finally:
        del data
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if ca_key.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) != ca_cert.public_key().public_bytes(serialization.Encoding.DER, public):
        raise SignError(f"ca_key_path: {key_path} is not the key of the CA certificate {cert_path}")
    return ca_cert, ca_key


def key_usage_for(public_key):
    """The key usage of an issued certificate: digitalSignature (+ keyEncipherment for RSA)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=isinstance(public_key, rsa.RSAPublicKey),
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )


def expected_subject(common_name):
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _public_der(key):
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)


ALLOWED_EXTENSIONS = None  # filled lazily (needs cryptography)


def _allowed_extensions():
    global ALLOWED_EXTENSIONS
    if ALLOWED_EXTENSIONS is None:
        ALLOWED_EXTENSIONS = {
            ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
            ExtensionOID.EXTENDED_KEY_USAGE,
            ExtensionOID.BASIC_CONSTRAINTS,
            ExtensionOID.KEY_USAGE,
            ExtensionOID.SUBJECT_KEY_IDENTIFIER,
            ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
        }
    return ALLOWED_EXTENSIONS


def reasons_to_issue(existing, ca_cert, public_key, common_name, sans, ekus, renew_days, now=None):
    """Return why the existing certificate (an x509.Certificate or None) must be replaced; [] keeps it."""
    if existing is None:
        return ["there is no certificate yet"]
    now = now or _now()
    reasons = []
    try:
        existing.verify_directly_issued_by(ca_cert)
    except (ValueError, TypeError, InvalidSignature):
        return ["the existing certificate was not issued by the current CA"]
    if _public_der(existing.public_key()) != _public_der(public_key):
        reasons.append("the existing certificate is for another key than the CSR's")
    if existing.subject != expected_subject(common_name):
        reasons.append(
            f"the existing certificate's subject is {existing.subject.rfc4514_string()}, "
            f"expected CN={common_name}"
        )
    extensions = {ext.oid: ext for ext in existing.extensions}
    unexpected = sorted(oid.dotted_string for oid in set(extensions) - _allowed_extensions())
    if unexpected:
        reasons.append(
            "the existing certificate has extensions this CA does not issue: " + ", ".join(unexpected)
        )
    have_sans = extensions.get(ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    have_sans = list(have_sans.value) if have_sans else []
    if set(have_sans) != set(sans) or len(have_sans) != len(set(have_sans)):
        reasons.append(
            "the existing certificate names "
            + (", ".join(map(san_text, have_sans)) or "nothing")
            + ", expected "
            + (", ".join(map(san_text, sans)) or "no alternative name")
        )
    have_ekus = extensions.get(ExtensionOID.EXTENDED_KEY_USAGE)
    have_ekus = list(have_ekus.value) if have_ekus else []
    if set(have_ekus) != set(ekus):
        reasons.append(
            "the existing certificate's extended key usage is "
            + (", ".join(map(eku_text, have_ekus)) or "none")
            + ", expected "
            + ", ".join(map(eku_text, ekus))
        )
    constraints = extensions.get(ExtensionOID.BASIC_CONSTRAINTS)
    if constraints is not None and constraints.value.ca:
        reasons.append("the existing certificate is a CA certificate")
    usage = extensions.get(ExtensionOID.KEY_USAGE)
    if usage is not None:
        allowed = key_usage_for(public_key)
        for attribute in (
            "content_commitment",
            "key_encipherment",
            "data_encipherment",
            "key_agreement",
            "key_cert_sign",
            "crl_sign",
        ):
            if getattr(usage.value, attribute) and not getattr(allowed, attribute):
                reasons.append(f"the existing certificate's key usage allows {attribute}")
    if existing.not_valid_before_utc > now + BACKDATE:
        reasons.append("the existing certificate is not valid yet")
    left = existing.not_valid_after_utc - now
    if left <= datetime.timedelta(days=renew_days):
        reasons.append(
            f"the existing certificate expires on {existing.not_valid_after_utc.isoformat()}"
            f" (renewed {renew_days} days before)"
        )
    return reasons


def issue(ca_cert, ca_key, public_key, common_name, sans, ekus, valid_days, now=None):
    """Build and sign a certificate for public_key with exactly the given names and usages."""
    now = now or _now()
    builder = (
        x509.CertificateBuilder()
        .subject_name(expected_subject(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + datetime.timedelta(days=valid_days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(key_usage_for(public_key), critical=True)
        .add_extension(x509.ExtendedKeyUsage(ekus), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    try:
        ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)
    except x509.ExtensionNotFound:
        aki = x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key())
    builder = builder.add_extension(aki, critical=False)
    digest = (
        None if isinstance(ca_key, ed25519.Ed25519PrivateKey | ed448.Ed448PrivateKey) else hashes.SHA256()
    )
    return builder.sign(private_key=ca_key, algorithm=digest)


def describe(cert):
    """What the diff shows of a certificate."""
    if cert is None:
        return {}
    try:
        return _describe(cert)
    except ValueError:  # an extension that cannot be parsed
        return {"serial_number": format(cert.serial_number, "x"), "unreadable": True}


def _describe(cert):
    try:
        sans = list(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)
    except x509.ExtensionNotFound:
        sans = []
    try:
        ekus = list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        ekus = []
    return {
        "subject": cert.subject.rfc4514_string(),
        "subject_alt_name": [san_text(n) for n in sans],
        "extended_key_usage": [eku_text(o) for o in ekus],
        "issuer": cert.issuer.rfc4514_string(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial_number": format(cert.serial_number, "x"),
    }


def check_shared(params):
    """Check the options every certificate of the call shares (raises SignError)."""
    if params["valid_days"] < 1:
        raise SignError(f"valid_days: must be at least 1, got {params['valid_days']}")
    if params["renew_days"] < 0 or params["renew_days"] >= params["valid_days"]:
        raise SignError(
            f"renew_days: must be between 0 and valid_days - 1 ({params['valid_days'] - 1}), "
            f"got {params['renew_days']}"
        )


def run(params, check_mode, ca=None):
    """Return the module result for params (raises SignError on bad input).

    ``ca`` is the (CA certificate, CA key) of the list form, loaded once for all its certificates;
    without it the CA is loaded from params (the single form)."""
    check_shared(params)
    common_name = params["common_name"]
    if not common_name or len(common_name) > 64 or common_name != common_name.strip():
        raise SignError(f"common_name: {common_name!r} must be 1 to 64 characters without surrounding spaces")
    sans = parse_sans(params["subject_alt_name"])
    ekus = parse_ekus(params["extended_key_usage"])
    public_key = load_csr(params["csr"])
    ca_cert, ca_key = ca or load_ca(params["ca_cert_path"], params["ca_key_path"])

    existing = None
    reasons = None
    existing_pem = params.get("existing") or ""
    if existing_pem.strip():
        try:
            existing = x509.load_pem_x509_certificate(existing_pem.encode())
        except ValueError:
            reasons = ["the existing certificate is not a PEM certificate"]
    if reasons is None:
        try:
            reasons = reasons_to_issue(
                existing, ca_cert, public_key, common_name, sans, ekus, params["renew_days"]
            )
        except ValueError:  # an extension that cannot be parsed
            reasons = ["the existing certificate cannot be read"]

    cert = existing
    if reasons and not check_mode:
        cert = issue(ca_cert, ca_key, public_key, common_name, sans, ekus, params["valid_days"])
    del ca_key
    if reasons and check_mode:
        after = {
            "subject": expected_subject(common_name).rfc4514_string(),
            "subject_alt_name": [san_text(n) for n in sans],
            "extended_key_usage": [eku_text(o) for o in ekus],
            "issuer": ca_cert.subject.rfc4514_string(),
        }
    else:
        after = describe(cert)
    result = {
        "changed": bool(reasons),
        "reasons": reasons,
        "certificate": cert.public_bytes(serialization.Encoding.PEM).decode() if cert is not None else "",
        "diff": {"before": describe(existing), "after": after},
    }
    if cert is not None:
        result["not_after"] = cert.not_valid_after_utc.isoformat()
        result["serial_number"] = format(cert.serial_number, "x")
    return result


# The options of one certificate: at the top level (the single form) or in each item of tenants.
PER_CERTIFICATE = {
    "csr": {"type": "str", "required": True},
    "common_name": {"type": "str", "required": True},
    "subject_alt_name": {"type": "list", "elements": "str", "default": []},
    "existing": {"type": "str"},
}

SHARED = {
    "extended_key_usage": {
        "type": "list",
        "elements": "str",
        "required": True,
        "choices": ["serverAuth", "clientAuth"],
    },
    "valid_days": {"type": "int", "default": 825},
    "renew_days": {"type": "int", "default": 30},
    "ca_cert_path": {"type": "path", "required": True},
    "ca_key_path": {"type": "path", "required": True, "no_log": False},
}


def argument_spec():
    """The shared options, the options of one certificate at the top level (required there only
    without tenants: tenant_params checks them) and tenants, a list of them keyed by name."""
    spec = dict(SHARED)
    for key, option in PER_CERTIFICATE.items():
        spec[key] = {k: v for k, v in option.items() if k != "required"}
    spec["tenants"] = {
        "type": "list",
        "elements": "dict",
        "options": dict(name={"type": "str", "required": True}, **PER_CERTIFICATE),
    }
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    if not HAS_CRYPTOGRAPHY:
        module.fail_json(
            msg="the Python library cryptography is missing on the controller "
            f"({os.path.realpath(sys.executable)})"
        )
    ca = items = None
    if module.params["tenants"] is not None:
        # The list form: the shared options are the call's, checked and the CA key loaded once.
        items = tenant_params(module, PER_CERTIFICATE)
        try:
            check_shared(module.params)
            parse_ekus(module.params["extended_key_usage"])
            ca = load_ca(module.params["ca_cert_path"], module.params["ca_key_path"])
        except SignError as e:
            module.fail_json(msg=str(e))
    run_batch(
        module, PER_CERTIFICATE, lambda params: run(params, module.check_mode, ca), (SignError,), items=items
    )


if __name__ == "__main__":
    main()
