"""Tests of library/shadowdb_certificate.py: the CA signs a CSR's key, never what the CSR asks for.

The module is run for real as a subprocess (as Ansible runs it on the controller); one test also
issues certificates with community.crypto's ownca provider, as the roles did before this module,
and checks that they are kept (existing tenants converge without a new certificate).
"""

import datetime
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import shadowdb_certificate as sc
from conftest import module_command, parse_result
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, ExtensionOID, NameOID, ObjectIdentifier

MODULE = "shadowdb_certificate"
REPO = Path(__file__).resolve().parents[2]
NAME = "acme.db.test"
PEM = serialization.Encoding.PEM
NOW = datetime.datetime.now(datetime.UTC)


def make_ca(directory, cn="Test CA"):
    """A CA like roles/ca makes (ECDSA P-384, CA:TRUE, SKI): returns (cert, key), written to directory."""
    key = ec.generate_private_key(ec.SECP384R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW - datetime.timedelta(days=1))
        .not_valid_after(NOW + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "ca.crt").write_bytes(cert.public_bytes(PEM))
    (directory / "ca.key").write_bytes(
        key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert, key


def make_csr(key, cn=NAME, sans=(NAME,), ca=False, ekus=(ExtendedKeyUsageOID.SERVER_AUTH,), extra=()):
    builder = x509.CertificateSigningRequestBuilder().subject_name(
        x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    )
    if sans:
        names = [
            x509.IPAddress(ipaddress.ip_address(s[3:])) if s.startswith("IP:") else x509.DNSName(s)
            for s in sans
        ]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    if ekus:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(ekus)), critical=False)
    if ca:
        builder = builder.add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
    for ext in extra:
        builder = builder.add_extension(ext, critical=False)
    return builder.sign(key, hashes.SHA256()).public_bytes(PEM).decode()


@pytest.fixture
def pki(tmp_path):
    ca_cert, ca_key = make_ca(tmp_path / "pki")
    host_key = ec.generate_private_key(ec.SECP256R1())
    return {
        "dir": tmp_path / "pki",
        "ca_cert": ca_cert,
        "ca_key": ca_key,
        "host_key": host_key,
        "csr": make_csr(host_key),
    }


@pytest.fixture
def sign(run_module, pki):
    """sign(**overrides) runs the module for NAME / serverAuth with the test CA."""

    def run(check_mode=False, expect_failure=False, **overrides):
        args = {
            "csr": pki["csr"],
            "common_name": NAME,
            "subject_alt_name": [f"DNS:{NAME}"],
            "extended_key_usage": ["serverAuth"],
            "valid_days": 825,
            "ca_cert_path": str(pki["dir"] / "ca.crt"),
            "ca_key_path": str(pki["dir"] / "ca.key"),
        } | overrides
        result, proc = run_module(MODULE, args, check_mode=check_mode)
        assert bool(result.get("failed")) == expect_failure, result
        key_pem = (pki["dir"] / "ca.key").read_text()
        body = "".join(key_pem.strip().splitlines()[1:-1])
        # Any 20 characters of the key past its fixed PKCS#8 header (the private scalar and on).
        chunks = [body[i : i + 20] for i in range(40, len(body) - 20, 10)]
        for text in (proc.stdout, proc.stderr):
            flat = text.replace("\\n", "").replace("\n", "")
            assert not [c for c in chunks if c in flat], "the CA key reached the module's output"
        return result

    return run


def load(pem):
    return x509.load_pem_x509_certificate(pem.encode())


def ext(cert, oid):
    try:
        return cert.extensions.get_extension_for_oid(oid)
    except x509.ExtensionNotFound:
        return None


def assert_issued_as_expected(cert, pki, sans=(NAME,), ekus=(ExtendedKeyUsageOID.SERVER_AUTH,)):
    cert.verify_directly_issued_by(pki["ca_cert"])
    assert cert.subject == x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, NAME)])
    assert sc._public_der(cert.public_key()) == sc._public_der(pki["host_key"].public_key())
    san = ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME)
    assert [sc.san_text(n) for n in san.value] == [f"DNS:{s}" for s in sans]
    bc = ext(cert, ExtensionOID.BASIC_CONSTRAINTS)
    assert bc.critical and bc.value.ca is False
    ku = ext(cert, ExtensionOID.KEY_USAGE).value
    assert ku.digital_signature and not ku.key_cert_sign and not ku.crl_sign
    assert list(ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value) == list(ekus)
    assert {e.oid for e in cert.extensions} == {
        ExtensionOID.SUBJECT_ALTERNATIVE_NAME,
        ExtensionOID.BASIC_CONSTRAINTS,
        ExtensionOID.KEY_USAGE,
        ExtensionOID.EXTENDED_KEY_USAGE,
        ExtensionOID.SUBJECT_KEY_IDENTIFIER,
        ExtensionOID.AUTHORITY_KEY_IDENTIFIER,
    }


# --- what a CSR asks for is ignored ---


def test_a_csr_asking_for_another_tenant_a_ca_and_other_usages_gets_only_the_expected(sign, pki):
    greedy = make_csr(
        pki["host_key"],
        cn="globex.db.test",
        sans=(NAME, "globex.db.test", "*.db.test", "IP:10.0.0.1"),
        ca=True,
        ekus=(
            ExtendedKeyUsageOID.SERVER_AUTH,
            ExtendedKeyUsageOID.CLIENT_AUTH,
            ExtendedKeyUsageOID.CODE_SIGNING,
        ),
        extra=[x509.UnrecognizedExtension(ObjectIdentifier("1.3.6.1.4.1.99999.1"), b"\x05\x00")],
    )
    result = sign(csr=greedy)
    assert result["changed"] is True
    assert result["reasons"] == ["there is no certificate yet"]
    assert_issued_as_expected(load(result["certificate"]), pki)


def test_a_csr_with_a_different_cn_and_no_names_gets_the_expected_subject(sign, pki):
    result = sign(csr=make_csr(pki["host_key"], cn="root", sans=(), ekus=()))
    assert_issued_as_expected(load(result["certificate"]), pki)


def test_client_certificate_without_alternative_names(sign, pki):
    result = sign(subject_alt_name=[], extended_key_usage=["clientAuth", "clientAuth"])
    cert = load(result["certificate"])
    assert ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME) is None
    assert list(ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    assert ext(cert, ExtensionOID.BASIC_CONSTRAINTS).value.ca is False


def test_member_certificate_with_ip_names_and_both_usages(sign, pki):
    names = [f"DNS:{NAME}", "DNS:localhost", "IP:127.0.0.1", "IP:10.89.0.4", "IP:127.0.0.1"]
    result = sign(subject_alt_name=names, extended_key_usage=["serverAuth", "clientAuth"])
    cert = load(result["certificate"])
    assert [sc.san_text(n) for n in ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value] == names[:4]
    assert set(ext(cert, ExtensionOID.EXTENDED_KEY_USAGE).value) == {
        ExtendedKeyUsageOID.SERVER_AUTH,
        ExtendedKeyUsageOID.CLIENT_AUTH,
    }
    assert result["diff"]["after"]["subject_alt_name"] == names[:4]


# --- kept or replaced ---


def test_an_existing_valid_certificate_is_kept(sign):
    first = sign()
    again = sign(existing=first["certificate"])
    assert again["changed"] is False and again["reasons"] == []
    assert again["certificate"] == first["certificate"]
    assert again["serial_number"] == first["serial_number"]


def test_kept_even_when_the_csr_asks_for_more(sign, pki):
    first = sign()
    greedy = make_csr(pki["host_key"], cn="x", sans=("globex.db.test",), ca=True)
    assert sign(csr=greedy, existing=first["certificate"])["changed"] is False


@pytest.mark.parametrize(
    "overrides, reason",
    [
        ({"subject_alt_name": ["DNS:other.db.test"]}, "names"),
        ({"subject_alt_name": [f"DNS:{NAME}", "DNS:globex.db.test"]}, "names"),
        ({"common_name": "other.db.test"}, "subject"),
        ({"extended_key_usage": ["serverAuth", "clientAuth"]}, "extended key usage"),
    ],
)
def test_a_certificate_for_other_names_or_usages_is_replaced(sign, overrides, reason):
    first = sign()
    again = sign(existing=first["certificate"], **overrides)
    assert again["changed"] is True
    assert any(reason in r for r in again["reasons"]), again["reasons"]
    assert again["serial_number"] != first["serial_number"]


def test_a_certificate_close_to_its_expiry_is_replaced(sign):
    first = sign(valid_days=20, renew_days=5)
    assert sign(existing=first["certificate"], renew_days=19)["changed"] is False
    again = sign(existing=first["certificate"], renew_days=20)
    assert again["changed"] is True and "expires" in again["reasons"][0]
    assert datetime.datetime.fromisoformat(again["not_after"]) > NOW + datetime.timedelta(days=824)


def test_a_certificate_from_another_ca_is_replaced(sign, pki, tmp_path):
    make_ca(tmp_path / "other", cn="Test CA")  # same subject, another key
    foreign = sign(
        ca_cert_path=str(tmp_path / "other" / "ca.crt"), ca_key_path=str(tmp_path / "other" / "ca.key")
    )
    again = sign(existing=foreign["certificate"])
    assert again["changed"] is True
    assert again["reasons"] == ["the existing certificate was not issued by the current CA"]
    load(again["certificate"]).verify_directly_issued_by(pki["ca_cert"])


def test_a_certificate_for_another_key_is_replaced(sign, pki):
    first = sign()
    new_key = ec.generate_private_key(ec.SECP256R1())
    again = sign(csr=make_csr(new_key), existing=first["certificate"])
    assert again["changed"] is True and "another key" in again["reasons"][0]
    assert sc._public_der(load(again["certificate"]).public_key()) == sc._public_der(new_key.public_key())


def test_a_ca_certificate_issued_to_the_host_is_replaced(pki):
    """A certificate the old code issued for a CSR asking CA:TRUE (right names) is not kept."""
    greedy = x509.load_pem_x509_csr(make_csr(pki["host_key"], ca=True).encode())
    builder = (
        x509.CertificateBuilder()
        .subject_name(greedy.subject)
        .issuer_name(pki["ca_cert"].subject)
        .public_key(greedy.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(NOW)
        .not_valid_after(NOW + datetime.timedelta(days=800))
    )
    for e in greedy.extensions:
        builder = builder.add_extension(e.value, e.critical)
    cert = builder.sign(pki["ca_key"], hashes.SHA256())
    reasons = sc.reasons_to_issue(
        cert,
        pki["ca_cert"],
        pki["host_key"].public_key(),
        NAME,
        sc.parse_sans([f"DNS:{NAME}"]),
        sc.parse_ekus(["serverAuth"]),
        30,
    )
    assert "the existing certificate is a CA certificate" in reasons
    assert any("key_cert_sign" in r for r in reasons)


def test_garbage_existing_certificate_is_replaced(sign, pki):
    result = sign(existing="not a certificate")
    assert result["changed"] is True
    assert result["reasons"] == ["the existing certificate is not a PEM certificate"]
    assert_issued_as_expected(load(result["certificate"]), pki)


# --- check mode and diff ---


def test_check_mode_signs_nothing(sign):
    result = sign(check_mode=True)
    assert result["changed"] is True and result["certificate"] == ""
    assert result["diff"]["before"] == {}
    assert result["diff"]["after"]["subject"] == f"CN={NAME}"
    first = sign()
    replaced = sign(check_mode=True, existing=first["certificate"], subject_alt_name=["DNS:b.db.test"])
    assert replaced["changed"] is True and replaced["certificate"] == first["certificate"]
    assert replaced["diff"]["before"]["subject_alt_name"] == [f"DNS:{NAME}"]
    assert replaced["diff"]["after"]["subject_alt_name"] == ["DNS:b.db.test"]
    kept = sign(check_mode=True, existing=first["certificate"])
    assert kept["changed"] is False and kept["diff"]["before"] == kept["diff"]["after"]


# --- errors name the argument ---


@pytest.mark.parametrize(
    "overrides, prefix",
    [
        ({"subject_alt_name": ["URI:https://x"]}, "subject_alt_name[0]"),
        ({"subject_alt_name": [f"DNS:{NAME}", "IP:300.1.1.1"]}, "subject_alt_name[1]"),
        ({"subject_alt_name": ["DNS:bad name"]}, "subject_alt_name[0]"),
        ({"extended_key_usage": []}, "extended_key_usage"),
        ({"common_name": ""}, "common_name"),
        ({"csr": "garbage"}, "csr:"),
        ({"valid_days": 0}, "valid_days"),
        ({"renew_days": 900}, "renew_days"),
        ({"ca_cert_path": "/nonexistent/ca.crt"}, "ca_cert_path"),
        ({"ca_key_path": "/nonexistent/ca.key"}, "ca_key_path"),
    ],
)
def test_errors_name_the_argument(sign, overrides, prefix):
    result = sign(expect_failure=True, **overrides)
    assert result["msg"].startswith(prefix) or prefix in result["msg"], result["msg"]


def test_a_csr_whose_signature_does_not_verify_is_refused(sign, pki):
    other = ec.generate_private_key(ec.SECP256R1())
    good = x509.load_pem_x509_csr(make_csr(pki["host_key"]).encode())
    forged = x509.load_pem_x509_csr(make_csr(other).encode())
    # The public key of one CSR with the signature of another: no proof of possession.
    der = bytearray(good.public_bytes(serialization.Encoding.DER))
    sig = good.signature
    assert sig in der
    der[der.index(sig) : der.index(sig) + len(sig)] = forged.signature[: len(sig)].ljust(len(sig), b"\0")
    tampered = x509.load_der_x509_csr(bytes(der)).public_bytes(PEM).decode()
    result = sign(csr=tampered, expect_failure=True)
    assert result["msg"].startswith("csr:")


def test_a_wrong_ca_key_is_refused_without_its_content(sign, pki, tmp_path):
    make_ca(tmp_path / "other")
    result = sign(ca_key_path=str(tmp_path / "other" / "ca.key"), expect_failure=True)
    assert result["msg"].startswith("ca_key_path:")
    assert "PRIVATE KEY" not in json.dumps(result)


def test_an_unreadable_ca_key_message_has_no_content(sign, pki):
    (pki["dir"] / "ca.key").write_text(
        "-----BEGIN PRIVATE KEY-----\nc2VjcmV0c2VjcmV0\n-----END PRIVATE KEY-----\n"
    )
    result = sign(expect_failure=True)
    assert result["msg"].startswith("ca_key_path:") and "c2VjcmV0" not in json.dumps(result)


# --- certificates the roles issued before (community.crypto ownca) are kept ---

PLAYBOOK = """\
- hosts: localhost
  gather_facts: false
  connection: local
  vars:
    pki: {pki}
    shapes:
      - {{name: server, cn: acme.db.test, san: ["DNS:acme.db.test"], eku: [serverAuth]}}
      - {{name: member, cn: etcd1, san: ["DNS:etcd1", "DNS:localhost", "IP:127.0.0.1", "IP:10.89.0.4"],
          eku: [serverAuth, clientAuth]}}
      - {{name: client, cn: patroni-acme, eku: [clientAuth]}}
  tasks:
    - name: Key
      community.crypto.openssl_privatekey:
        path: "{{{{ pki }}}}/{{{{ item.name }}}}.key"
        type: ECC
        curve: secp256r1
      loop: "{{{{ shapes }}}}"
    - name: CSR (as the roles make them)
      community.crypto.openssl_csr_pipe:
        privatekey_path: "{{{{ pki }}}}/{{{{ item.name }}}}.key"
        common_name: "{{{{ item.cn }}}}"
        subject_alt_name: "{{{{ item.san | default(omit) }}}}"
        use_common_name_for_san: "{{{{ item.san is defined }}}}"
        extended_key_usage: "{{{{ item.eku }}}}"
      loop: "{{{{ shapes }}}}"
      register: csrs
    - name: Old signing task
      community.crypto.x509_certificate_pipe:
        csr_content: "{{{{ item.csr }}}}"
        provider: ownca
        ownca_path: "{{{{ pki }}}}/ca.crt"
        ownca_privatekey_path: "{{{{ pki }}}}/ca.key"
        ownca_not_after: "+825d"
      loop: "{{{{ csrs.results }}}}"
      register: old
    - name: New signing task, given the old certificate
      shadowdb_certificate:
        csr: "{{{{ item.0.csr }}}}"
        common_name: "{{{{ item.0.item.cn }}}}"
        subject_alt_name: "{{{{ item.0.item.san | default([]) }}}}"
        extended_key_usage: "{{{{ item.0.item.eku }}}}"
        ca_cert_path: "{{{{ pki }}}}/ca.crt"
        ca_key_path: "{{{{ pki }}}}/ca.key"
        existing: "{{{{ item.1.certificate }}}}"
      loop: "{{{{ csrs.results | zip(old.results) | list }}}}"
      register: new
    - name: Result
      ansible.builtin.debug:
        msg: "RESULT {{{{ new.results | map(attribute='changed') | list | to_json }}}}"
"""


@pytest.mark.skipif(
    not (REPO / ".collections" / "ansible_collections" / "community" / "crypto").is_dir(),
    reason="community.crypto not installed in .collections",
)
def test_certificates_of_the_old_ownca_task_are_kept(tmp_path):
    make_ca(tmp_path / "pki")
    playbook = tmp_path / "old.yml"
    playbook.write_text(textwrap.dedent(PLAYBOOK.format(pki=tmp_path / "pki")))
    ansible_playbook = shutil.which("ansible-playbook", path=str(Path(sys.executable).parent))
    assert ansible_playbook, "ansible-playbook is not in the venv"
    env = dict(os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="default")
    proc = subprocess.run(
        [ansible_playbook, "-i", "localhost,", str(playbook)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env=env,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if "RESULT [" in x)
    assert json.loads(line[line.index("RESULT [") + 7 :].rstrip('"')) == [False, False, False]


# --- the other half of item 13: SSH host keys are verified ---


def _ansible_env():
    env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
    return env | {"ANSIBLE_CONFIG": str(REPO / "ansible.cfg")}


def test_ssh_runs_verify_host_keys():
    """The repository's ansible.cfg (used by every run, the API's too) never disables host key checks."""
    ansible = shutil.which("ansible", path=str(Path(sys.executable).parent))
    proc = subprocess.run(
        [
            ansible,
            "-i",
            "127.0.0.1,",
            "all",
            "-c",
            "ssh",
            "-e",
            "ansible_port=1",
            "-m",
            "ansible.builtin.ping",
            "-vvvv",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=_ansible_env(),
    )
    ssh_command = next(line for line in proc.stdout.splitlines() if "SSH: EXEC ssh" in line)
    assert "StrictHostKeyChecking=no" not in ssh_command
    assert "UserKnownHostsFile=/dev/null" not in ssh_command


def test_lab_and_molecule_hosts_use_the_podman_connection():
    """Host key checking stays on without breaking the lab: its hosts are reached without SSH."""
    template = (REPO / "playbooks" / "templates" / "lab_inventory.yml.j2").read_text()
    assert "ansible_connection: containers.podman.podman" in template
    for scenario in sorted((REPO / "molecule").glob("*/molecule.yml")):
        assert "ansible_connection: containers.podman.podman" in scenario.read_text(), scenario


def test_the_example_inventory_reads_its_known_hosts():
    hosts = (REPO / "inventories" / "example" / "hosts.yml").read_text()
    assert "UserKnownHostsFile={{ inventory_dir }}/known_hosts" in hosts
    assert "StrictHostKeyChecking=yes" in hosts


# --- the list form: the certificates of a batch of tenants in one call ---

# Runs the module as conftest's run_module does, counting the loads of a private key (the CA's).
COUNTING_RUN = (
    "import atexit, runpy, sys, ansible.module_utils as m; m.__path__.append(sys.argv.pop(1)); "
    "from cryptography.hazmat.primitives import serialization as s; calls = []; "
    "real = s.load_pem_private_key; out = sys.argv.pop(1); "
    "s.load_pem_private_key = lambda *a, **k: calls.append(1) or real(*a, **k); "
    "atexit.register(lambda: open(out, 'w').write(str(len(calls)))); "
    "sys.argv.pop(0); runpy.run_path(sys.argv[0], run_name='__main__')"
)


def tenant_item(name, **overrides):
    """One item of tenants: the tenant's own key and CSR, its names."""
    key = ec.generate_private_key(ec.SECP256R1())
    cn = f"{name}.db.test"
    item = {"name": name, "csr": make_csr(key, cn=cn, sans=(cn,)), "common_name": cn}
    return item | {"subject_alt_name": [f"DNS:{cn}"]} | overrides, key


@pytest.fixture
def sign_many(tmp_path, pki):
    """sign_many(tenants, **overrides) -> (result, CA key loads): the list form with the test CA."""

    def run(tenants, check_mode=False, **overrides):
        args = {
            "tenants": tenants,
            "extended_key_usage": ["serverAuth"],
            "ca_cert_path": str(pki["dir"] / "ca.crt"),
            "ca_key_path": str(pki["dir"] / "ca.key"),
        } | overrides
        cmd = module_command(MODULE, args, tmp_path, check_mode)
        count = tmp_path / f"loads-{os.urandom(4).hex()}"
        cmd[2:4] = [COUNTING_RUN, cmd[3], str(count)]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        result = parse_result(proc)
        key_pem = (pki["dir"] / "ca.key").read_text()
        body = "".join(key_pem.strip().splitlines()[1:-1])
        chunks = [body[i : i + 20] for i in range(40, len(body) - 20, 10)]
        flat = (proc.stdout + proc.stderr).replace("\\n", "").replace("\n", "")
        assert not [c for c in chunks if c in flat], "the CA key reached the module's output"
        return result, int(count.read_text() or 0) if count.exists() else None

    return run


def test_tenants_are_issued_in_one_call_with_one_load_of_the_ca_key(sign_many, pki):
    items = [tenant_item(name) for name in ("acme", "globex", "initech")]
    result, loads = sign_many([item for item, _key in items])
    assert not result.get("failed"), result
    assert loads == 1
    assert result["changed"] is True and result["failed_tenants"] == {}
    assert list(result["results"]) == ["acme", "globex", "initech"]
    for item, key in items:
        one = result["results"][item["name"]]
        assert (one["changed"], one["failed"], one["reasons"]) == (
            True,
            False,
            ["there is no certificate yet"],
        )
        cert = load(one["certificate"])
        cert.verify_directly_issued_by(pki["ca_cert"])
        assert cert.subject.rfc4514_string() == f"CN={item['common_name']}"
        assert sc._public_der(cert.public_key()) == sc._public_der(key.public_key())
        san = ext(cert, ExtensionOID.SUBJECT_ALTERNATIVE_NAME).value
        assert [sc.san_text(n) for n in san] == item["subject_alt_name"]
        assert one["serial_number"] == format(cert.serial_number, "x")
        assert one["not_after"] == cert.not_valid_after_utc.isoformat()
    assert len(result["diff"]) == 3

    kept = [item | {"existing": result["results"][item["name"]]["certificate"]} for item, _key in items]
    kept[1] = kept[1] | {"common_name": "other.db.test"}
    again, loads = sign_many(kept)
    assert loads == 1
    assert {n: r["changed"] for n, r in again["results"].items()} == {
        "acme": False,
        "globex": True,
        "initech": False,
    }
    assert again["changed"] is True
    assert again["results"]["acme"]["certificate"] == result["results"]["acme"]["certificate"]
    assert "subject" in again["results"]["globex"]["reasons"][0]
    unchanged, _loads = sign_many([kept[0], kept[2]])
    assert unchanged["changed"] is False and unchanged["results"]["initech"]["reasons"] == []


def test_a_tenant_failure_is_its_own(sign_many, pki):
    good, _key = tenant_item("acme")
    bad_csr, _key = tenant_item("globex", csr="garbage")
    bad_name, _key = tenant_item("initech", subject_alt_name=["DNS:bad name"])
    result, _loads = sign_many([bad_csr, good, bad_name])
    assert result.get("failed") is not True, result
    assert result["failed_tenants"] == {
        "globex": "csr: not a PEM certificate signing request",
        "initech": "subject_alt_name[0]: 'bad name' is not a DNS name",
    }
    assert result["results"]["globex"] == {
        "failed": True,
        "changed": False,
        "msg": "csr: not a PEM certificate signing request",
    }
    assert result["changed"] is True and result["results"]["acme"]["failed"] is False
    load(result["results"]["acme"]["certificate"]).verify_directly_issued_by(pki["ca_cert"])


def test_tenants_in_check_mode_sign_nothing(sign_many, pki):
    item, _key = tenant_item("acme")
    result, _loads = sign_many([item], check_mode=True)
    one = result["results"]["acme"]
    assert (one["changed"], one["certificate"]) == (True, "")
    assert result["diff"] == [
        {
            "before": {},
            "after": {
                "subject": "CN=acme.db.test",
                "subject_alt_name": ["DNS:acme.db.test"],
                "extended_key_usage": ["serverAuth"],
                "issuer": "CN=Test CA",
            },
        }
    ]
    empty, _loads = sign_many([])
    assert (empty["changed"], empty["results"], empty["failed_tenants"]) == (False, {}, {})


@pytest.mark.parametrize(
    ("overrides", "prefix"),
    [
        ({"ca_key_path": "/nonexistent/ca.key"}, "ca_key_path: cannot read"),
        ({"ca_cert_path": "/nonexistent/ca.crt"}, "ca_cert_path: cannot read"),
        ({"valid_days": 0}, "valid_days"),
        ({"extended_key_usage": []}, "extended_key_usage"),
        ({"csr": "x"}, "csr: give per-tenant options inside tenants"),
        ({"twice": True}, "tenants: acme listed more than once"),
    ],
)
def test_a_wrong_call_of_the_list_form_fails(sign_many, pki, overrides, prefix):
    item, _key = tenant_item("acme")
    tenants = [item, item] if overrides.pop("twice", False) else [item]
    result, _loads = sign_many(tenants, **overrides)
    assert result["failed"] is True and result["msg"].startswith(prefix), result
    assert "results" not in result


def test_the_single_form_still_requires_csr_and_common_name(run_module, pki):
    args = {
        "extended_key_usage": ["serverAuth"],
        "ca_cert_path": str(pki["dir"] / "ca.crt"),
        "ca_key_path": str(pki["dir"] / "ca.key"),
    }
    result, _proc = run_module(MODULE, args)
    assert result["failed"] and result["msg"] == "missing required arguments: common_name, csr"
