"""Tests of library/shadowdb_registry.py: pure helpers, and the module run for real against a local etcd;
and of roles/etcd/library/shadowdb_etcd_auth.py (etcd users, roles, permissions) with it.

The etcd tests start a throwaway etcd from the machine's own binary (Debian's etcd-server) on
127.0.0.1, once without TLS and once with TLS and client certificates from a throwaway CA; they
are skipped only when no etcd binary is installed.
"""

# ruff: noqa: S105, S106 -- throwaway passwords of a throwaway etcd
import datetime
import json
import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
import shadowdb_registry as reg
from conftest import local_playbook

MODULE = "shadowdb_registry"
PREFIX = "/shadowdb/tenants/"
REPO = Path(__file__).resolve().parents[2]
ETCD = shutil.which("etcd")
needs_etcd = pytest.mark.skipif(
    ETCD is None, reason="no etcd binary on this machine (Debian: apt-get install etcd-server)"
)


def record(**overrides):
    base = dict(
        tenant="acme",
        host="db1",
        address="10.0.0.21",
        port=24817,
        proxy_port=30412,
        pg_version=17,
        tier="small",
        state="active",
        members=[dict(host="db1", address="10.0.0.21", port=24817)],
    )
    return base | overrides


def params(**overrides):
    base = dict(
        endpoints=["http://127.0.0.1:2379"],
        ca_cert=None,
        client_cert=None,
        client_key=None,
        prefix=PREFIX,
        tenant="acme",
        record=None,
        state="present",
        timeout=5.0,
    )
    return base | overrides


# --- pure helpers ---


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (dict(endpoints=[]), "endpoints is empty"),
        (dict(endpoints=["10.0.0.1:2379"]), "endpoints[0]='10.0.0.1:2379' is invalid"),
        (dict(endpoints=["https://a:2379", "file:///etc/passwd"]), "endpoints[1]="),
        (dict(endpoints=["https://a:2379/v3"]), "without a path"),
        (dict(prefix="shadowdb/"), "prefix='shadowdb/' is invalid"),
        (dict(prefix="/shadowdb"), "prefix='/shadowdb' is invalid"),
        (dict(tenant="Acme"), "tenant='Acme' is invalid"),
        (dict(tenant="a"), "tenant='a' is invalid"),
        (dict(tenant="acme.evil"), "tenant='acme.evil' is invalid"),
        (dict(tenant=None, state="absent"), "tenant is required with state=absent"),
        (dict(state="present", record=None), "record is required with state=present"),
        (dict(state="query", tenant=None, client_cert="/c.crt"), "client_cert and client_key"),
    ],
)
def test_validate_params_names_the_argument(overrides, fragment):
    base = params(record=record()) | overrides
    assert fragment in reg.validate_params(base)


def test_validate_params_accepts_query_without_tenant():
    assert reg.validate_params(params(state="query", tenant=None)) is None
    assert reg.validate_params(params(record=record())) is None


def test_normalize_record_fixes_types_and_fills_defaults():
    out = reg.normalize_record(
        dict(tenant="acme", host="db1", address="10.0.0.21", port="24817", pg_version="17"), "acme"
    )
    assert out == dict(
        tenant="acme",
        host="db1",
        address="10.0.0.21",
        port=24817,
        pg_version=17,
        proxy_port=None,
        state="active",
        members=[],
    )


@pytest.mark.parametrize(
    ("rec", "fragment"),
    [
        (record(tenant="other"), "record.tenant='other' is invalid: it must equal tenant='acme'"),
        (record(port=0), "record.port=0 is invalid"),
        (record(port="70000"), "record.port=70000 is invalid"),
        (record(port=True), "record.port=True is invalid"),
        (record(proxy_port="x"), "record.proxy_port='x' is invalid"),
        (record(state="up"), "record.state='up' is invalid"),
        (record(address=""), "record is missing record.address"),
        (record(members="db1"), "record.members='db1' is invalid"),
        (record(members=[dict(port=-1)]), "record.members[0].port=-1 is invalid"),
        (record(members=[dict(tags=["a"])]), "record.members[0].tags="),
        (record(colour="blue"), "unknown key(s) colour"),
        (record(hba="10.0.0.0/8"), "record.hba='10.0.0.0/8' is invalid"),
        (record(hba=["10.0.0.0/8", "10.0.0.300/32"]), "record.hba[1]='10.0.0.300/32' is invalid"),
        (record(hba=["10.0.0.0/8; evil"]), "record.hba[0]='10.0.0.0/8; evil' is invalid"),
        ("acme", "record='acme' is invalid"),
    ],
)
def test_normalize_record_names_the_field(rec, fragment):
    with pytest.raises(reg.RegistryError) as err:
        reg.normalize_record(rec, "acme")
    assert fragment in str(err.value)


def test_hba_is_kept_in_canonical_form():
    out = reg.normalize_record(record(hba=["10.0.0.5/8", "192.168.1.7/32", "::1/128"]), "acme")
    assert out["hba"] == ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]
    assert "hba" not in reg.normalize_record(record(), "acme")
    # The spec allows no network at all: the record keeps it, and HAProxy refuses every client.
    assert reg.normalize_record(record(hba=[]), "acme")["hba"] == []


def test_canonical_json_is_sorted_and_compact():
    a = reg.canonical_json(dict(b=1, a=[dict(y=2, x=1)]))
    assert a == '{"a":[{"x":1,"y":2}],"b":1}'
    assert reg.canonical_json(reg.normalize_record(record(), "acme")) == reg.canonical_json(
        reg.normalize_record(dict(reversed(list(record().items()))), "acme")
    )


def test_prefix_range_end_increments_the_last_byte():
    assert reg.prefix_range_end("/shadowdb/tenants/") == b"/shadowdb/tenants0"
    assert reg.prefix_range_end("/t\u00e9/") == "/t\u00e9".encode() + b"0"


def test_transactions_compare_the_revision_read():
    put = reg.put_txn("/p/acme", "{}", 0)
    assert put["compare"] == [dict(key=reg.b64("/p/acme"), target="MOD", result="EQUAL", mod_revision="0")]
    assert put["success"] == [dict(request_put=dict(key=reg.b64("/p/acme"), value=reg.b64("{}")))]
    delete = reg.delete_txn("/p/acme", 7)
    assert delete["compare"][0]["mod_revision"] == "7"
    assert delete["success"] == [dict(request_delete_range=dict(key=reg.b64("/p/acme")))]


def test_collect_records_skips_invalid_values():
    values = {
        PREFIX + "acme": reg.canonical_json(dict(tenant="acme")),
        PREFIX + "beta": "not json",
        PREFIX + "gamma": reg.canonical_json(dict(tenant="other")),
        PREFIX + "delta": "[1]",
    }
    records, invalid = reg.collect_records(values, PREFIX)
    assert records == [dict(tenant="acme")]
    assert invalid == [PREFIX + "beta", PREFIX + "delta", PREFIX + "gamma"]


def test_error_text_reads_gateway_errors():
    assert reg.error_text('{"code":3,"message":"bad key"}') == "bad key"
    assert reg.error_text('{"error":"etcdserver: no leader","code":14}') == "etcdserver: no leader"
    assert reg.error_text("plain") == "plain"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_etcd_names_every_endpoint(run_module):
    ports = [free_port(), free_port()]
    endpoints = [f"http://127.0.0.1:{p}" for p in ports]
    result, proc = run_module(MODULE, dict(endpoints=endpoints, tenant="acme", record=record()))
    assert proc.returncode != 0 and result["failed"]
    assert result["msg"].startswith("etcd is unreachable (endpoints): ")
    for endpoint in endpoints:
        assert endpoint in result["msg"]


def test_missing_ca_file_names_ca_cert(run_module, tmp_path):
    missing = str(tmp_path / "nope.crt")
    result, _ = run_module(MODULE, dict(endpoints=["https://127.0.0.1:1"], ca_cert=missing, state="query"))
    assert result["failed"] and result["msg"].startswith(f"ca_cert={missing!r}")


# --- a real etcd ---


def wait_healthy(url, timeout=30, context=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2, context=context) as r:  # noqa: S310
                if json.loads(r.read()).get("health") == "true":
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"etcd at {url} did not become healthy within {timeout}s")
        time.sleep(0.2)


def start_etcd(tmp_path, scheme, tls_args=()):
    client, peer = free_port(), free_port()
    url = f"{scheme}://127.0.0.1:{client}"
    log = open(tmp_path / "etcd.log", "w")  # noqa: SIM115 -- closed by the fixture
    proc = subprocess.Popen(
        [
            ETCD,
            "--name=test",
            f"--data-dir={tmp_path / 'data'}",
            f"--listen-client-urls={url}",
            f"--advertise-client-urls={url}",
            f"--listen-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{peer}",
            f"--initial-cluster=test=http://127.0.0.1:{peer}",
            *tls_args,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, log, url


def stop_etcd(proc, log):
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


@pytest.fixture
def etcd(tmp_path):
    """A throwaway etcd without TLS on 127.0.0.1; yields its client URL."""
    proc, log, url = start_etcd(tmp_path, "http")
    try:
        wait_healthy(url)
        yield url
    finally:
        stop_etcd(proc, log)


def make_pki(directory):
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as PEM files."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.UTC)

    def write(name, cert, key):
        (directory / f"{name}.crt").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        (directory / f"{name}.key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )

    def builder(cn, issuer, public_key):
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(issuer)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
        )

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "test CA")])
    # Python 3.13's default context verifies strictly (X.509 key identifiers, key usage).
    ca = (
        builder("test CA", ca_name, ca_key.public_key())
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    write("ca", ca, ca_key)
    for name, usage, san in (
        ("server", ExtendedKeyUsageOID.SERVER_AUTH, [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
        ("client", ExtendedKeyUsageOID.CLIENT_AUTH, []),
    ):
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            builder(name, ca_name, key.public_key())
            .add_extension(x509.ExtendedKeyUsage([usage, ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        )
        if san:
            b = b.add_extension(x509.SubjectAlternativeName(san), critical=False)
        write(name, b.sign(ca_key, hashes.SHA256()), key)


@pytest.fixture
def etcd_tls(tmp_path):
    """A throwaway etcd with TLS and client certificates; yields (url, pki directory)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    tls = [
        f"--trusted-ca-file={pki / 'ca.crt'}",
        f"--cert-file={pki / 'server.crt'}",
        f"--key-file={pki / 'server.key'}",
        "--client-cert-auth",
    ]
    proc, log, url = start_etcd(tmp_path, "https", tls)
    import ssl

    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    try:
        wait_healthy(url, context=context)
        yield url, pki
    finally:
        stop_etcd(proc, log)


@needs_etcd
def test_present_is_idempotent_and_checks_mode(run_module, etcd):
    args = dict(endpoints=[etcd], tenant="acme", record=record())
    result, _ = run_module(MODULE, args, check_mode=True)
    assert result["changed"] and result["diff"]["before"] == ""
    assert json.loads(result["diff"]["after"])["port"] == 24817

    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query", tenant="acme"))
    assert query["records"] == [] and query["record"] is None  # check mode wrote nothing

    result, _ = run_module(MODULE, args)
    assert result["changed"] and result["key"] == PREFIX + "acme" and result["endpoint"] == etcd
    again, _ = run_module(MODULE, args)
    assert not again["changed"]
    # Key order and digit strings do not matter: the canonical forms are equal.
    shuffled = dict(reversed(list(record(port="24817").items())))
    again, _ = run_module(MODULE, dict(args, record=shuffled))
    assert not again["changed"]

    moved, _ = run_module(MODULE, dict(args, record=record(port=25000)))
    assert moved["changed"]
    assert json.loads(moved["diff"]["before"])["port"] == 24817
    assert json.loads(moved["diff"]["after"])["port"] == 25000


@needs_etcd
def test_query_lists_every_record_sorted(run_module, etcd):
    for name in ("zeta", "acme", "beta"):
        run_module(MODULE, dict(endpoints=[etcd], tenant=name, record=record(tenant=name)))
    other_prefix = dict(endpoints=[etcd], prefix="/other/", tenant="acme", record=record())
    run_module(MODULE, other_prefix)
    result, _ = run_module(MODULE, dict(endpoints=[etcd], state="query", tenant="beta"))
    assert not result["changed"]
    assert [r["tenant"] for r in result["records"]] == ["acme", "beta", "zeta"]
    assert result["record"]["tenant"] == "beta"


@needs_etcd
def test_absent_deletes_and_is_idempotent(run_module, etcd):
    run_module(MODULE, dict(endpoints=[etcd], tenant="acme", record=record()))
    result, _ = run_module(MODULE, dict(endpoints=[etcd], tenant="acme", state="absent"), check_mode=True)
    assert result["changed"] and result["diff"]["after"] == ""
    result, _ = run_module(MODULE, dict(endpoints=[etcd], tenant="acme", state="absent"))
    assert result["changed"] and result["record"] is None
    again, _ = run_module(MODULE, dict(endpoints=[etcd], tenant="acme", state="absent"))
    assert not again["changed"]
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert query["records"] == []


@needs_etcd
def test_failover_to_the_next_endpoint(run_module, etcd):
    dead = f"http://127.0.0.1:{free_port()}"
    result, _ = run_module(MODULE, dict(endpoints=[dead, etcd], tenant="acme", record=record()))
    assert result["changed"] and result["endpoint"] == etcd


@needs_etcd
def test_concurrent_change_is_never_overwritten(etcd):
    """A record changed between the read and the write fails the write (compare-and-swap)."""

    class Racing(reg.EtcdClient):
        def get(self, key):
            value, mod_revision, revision = super().get(key)
            # Someone else writes right after our read.
            other = reg.EtcdClient([etcd])
            other.txn(reg.put_txn(key, reg.canonical_json(dict(tenant="acme", by="other")), mod_revision))
            return value, mod_revision, revision

    with pytest.raises(reg.RegistryError, match="changed by someone else"):
        reg.run(params(endpoints=[etcd], record=record()), check_mode=False, client=Racing([etcd]))
    stored, _, _ = reg.EtcdClient([etcd]).get(PREFIX + "acme")
    assert json.loads(stored)["by"] == "other"


def test_proxy_ports_are_kept_or_free_ones_of_the_range():
    stored = {"acme": record(proxy_port=30001), "beta": record(tenant="beta", proxy_port=30000), "gone": None}
    lowest = reg.choose_proxy_ports(stored, ["acme", "new1", "new2"], 30000, 30003, pick=min)
    assert lowest == {"acme": 30001, "new1": 30002, "new2": 30003}
    assert reg.choose_proxy_ports(stored, ["new1", "new2", "new3"], 30000, 30003)["new3"] is None
    chosen = reg.choose_proxy_ports(stored, ["new1", "new2"], 30000, 30003)  # at random by default
    assert sorted(chosen.values()) == [30002, 30003]


@needs_etcd
def test_auto_proxy_ports_are_chosen_from_the_registry_and_kept(run_module, etcd):
    bounds = dict(start=31000, end=31002)
    run_module(MODULE, dict(endpoints=[etcd], tenant="held", record=record(tenant="held", proxy_port=31000)))
    items = [dict(tenant=n, record=record(tenant=n, proxy_port="auto")) for n in ("acme", "beta")]
    args = dict(endpoints=[etcd], tenant=None, records=items, proxy_ports=bounds)
    result, _ = run_module(MODULE, args, check_mode=True)
    assert result["changed"] and result["results"]["acme"]["record"]["proxy_port"] in (31001, 31002)
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query", tenant=None))
    assert [r["tenant"] for r in query["records"]] == ["held"]  # check mode wrote nothing
    result, _ = run_module(MODULE, args)
    ports = {t: r["record"]["proxy_port"] for t, r in result["results"].items()}
    assert sorted(ports.values()) == [31001, 31002] and result["failed_tenants"] == {}
    # Again: each keeps its port, nothing changes; one more tenant finds the range full.
    again, _ = run_module(MODULE, args)
    assert (
        not again["changed"] and {t: r["record"]["proxy_port"] for t, r in again["results"].items()} == ports
    )
    late = [dict(tenant="late", record=record(tenant="late", proxy_port="auto"))]
    full, _ = run_module(MODULE, dict(args, records=late))
    assert "no free proxy port is left in 31000-31002" in full["failed_tenants"]["late"]
    # The single form: the same choice; without proxy_ports, "auto" is refused naming the field.
    gamma = dict(endpoints=[etcd], tenant="gamma", record=record(tenant="gamma", proxy_port="auto"))
    one, _ = run_module(MODULE, dict(gamma, proxy_ports=dict(start=31000, end=31005)))
    assert one["changed"] and one["record"]["proxy_port"] in (31003, 31004, 31005)
    bad, _ = run_module(MODULE, gamma)
    assert bad["failed"] and "record.proxy_port='auto' is invalid" in bad["msg"]


@needs_etcd
def test_a_port_chosen_in_a_race_is_never_given_twice(etcd):
    """Another writer registers a tenant right after our read, on the port we would choose: our
    guarded write fails, is read again and takes the next port."""
    raced = []

    class Racing(reg.EtcdClient):
        def get_prefix_kvs(self, prefix):
            found = super().get_prefix_kvs(prefix)
            if not raced:
                raced.append(True)
                rival = reg.canonical_json(
                    reg.normalize_record(record(tenant="rival", proxy_port=31500), "rival")
                )
                reg.EtcdClient([etcd]).txn(reg.put_txn(PREFIX + "rival", rival, 0))
            return found

    args = params(
        endpoints=[etcd],
        tenant="acme",
        record=record(proxy_port="auto"),
        proxy_ports=dict(start=31500, end=31501),
    )
    result = reg.run(args, check_mode=False, client=Racing([etcd]))
    assert raced and result["changed"] and result["record"]["proxy_port"] == 31501
    query = reg.run(params(endpoints=[etcd], tenant=None, state="query"), check_mode=False)
    assert {r["tenant"]: r["proxy_port"] for r in query["records"]} == {"acme": 31501, "rival": 31500}


@needs_etcd
def test_invalid_stored_value_is_replaced_and_skipped_by_query(run_module, etcd):
    client = reg.EtcdClient([etcd])
    client.txn(reg.put_txn(PREFIX + "acme", "garbage", 0))
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert query["records"] == []
    # ansible-core 2.19+ returns warnings as structured events: look for the text anywhere.
    assert "registry key /shadowdb/tenants/acme does not hold a valid record" in json.dumps(query["warnings"])
    result, _ = run_module(MODULE, dict(endpoints=[etcd], tenant="acme", record=record()))
    assert result["changed"] and result["diff"]["before"] == "garbage\n"


@needs_etcd
def test_tls_with_client_certificate(run_module, etcd_tls):
    url, pki = etcd_tls
    tls = dict(
        endpoints=[url],
        ca_cert=str(pki / "ca.crt"),
        client_cert=str(pki / "client.crt"),
        client_key=str(pki / "client.key"),
    )
    result, _ = run_module(MODULE, dict(tls, tenant="acme", record=record()))
    assert result["changed"], result
    again, _ = run_module(MODULE, dict(tls, tenant="acme", record=record()))
    assert not again["changed"]

    # Without a client certificate the server refuses the TLS handshake.
    no_cert = dict(tls, client_cert=None, client_key=None)
    refused, _ = run_module(MODULE, dict(no_cert, state="query"))
    assert refused["failed"] and url in refused["msg"]

    # A server certificate from another CA is not trusted.
    other = pki / "other"
    other.mkdir()
    make_pki(other)
    untrusted, _ = run_module(MODULE, dict(tls, ca_cert=str(other / "ca.crt"), state="query"))
    assert untrusted["failed"] and "CERTIFICATE_VERIFY_FAILED" in untrusted["msg"]


# --- etcd authentication (roles/etcd/library/shadowdb_etcd_auth.py) ---


def load_auth_module():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "roles" / "etcd" / "library" / "shadowdb_etcd_auth.py"
    spec = importlib.util.spec_from_file_location("shadowdb_etcd_auth", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


auth = load_auth_module()

AUTH_SPEC = dict(
    roles=[
        dict(name="registry-writer", permissions=[dict(key=PREFIX, type="readwrite")]),
        dict(name="registry-reader", permissions=[dict(key=PREFIX, type="read")]),
        dict(name="patroni-a", permissions=[dict(key="/shadowdb/patroni/a/", type="readwrite")]),
        dict(name="patroni-b", permissions=[dict(key="/shadowdb/patroni/b/", type="readwrite")]),
    ],
    users=[
        dict(name="registry-writer", password="writer-pw", roles=["registry-writer"]),
        dict(name="registry-reader", password="reader-pw", roles=["registry-reader"]),
        dict(name="patroni-a", password="a-pw", roles=["patroni-a"]),
        dict(name="patroni-b", password="b-pw", roles=["patroni-b"]),
    ],
)


def auth_params(url, pki, **overrides):
    base = dict(
        endpoint=url,
        ca_cert=str(pki / "ca.crt"),
        client_cert=str(pki / "client.crt"),
        client_key=str(pki / "client.key"),
        root_password="root-pw",
        state="present",
        enable=True,
        timeout=10.0,
    )
    return base | AUTH_SPEC | overrides


def test_wanted_permissions_cover_the_prefix_only():
    perms = auth.wanted_permissions(dict(name="r", permissions=[dict(key="/p/a/", type="readwrite")]))
    assert perms == {("READWRITE", reg.b64("/p/a/"), reg.b64("/p/a0"))}
    with pytest.raises(auth.AuthError, match=r"roles\[r\].permissions\[0\].type='all' is invalid"):
        auth.wanted_permissions(dict(name="r", permissions=[dict(key="/p/", type="all")]))


@pytest.fixture
def etcd_auth(tmp_path):
    """etcd as the etcd role runs it with authentication on: TLS, and a client certificate of the CA
    required by the TLS handshake (a trusted CA file), without --client-cert-auth (which would make
    etcd take identities from certificate common names and refuse them on its JSON gateway)."""
    pki = tmp_path / "pki"
    pki.mkdir()
    make_pki(pki)
    tls = [
        f"--trusted-ca-file={pki / 'ca.crt'}",
        f"--cert-file={pki / 'server.crt'}",
        f"--key-file={pki / 'server.key'}",
    ]
    proc, log, url = start_etcd(tmp_path, "https", tls)
    import ssl

    context = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    context.load_cert_chain(str(pki / "client.crt"), str(pki / "client.key"))
    try:
        wait_healthy(url, context=context)
        yield url, pki
    finally:
        stop_etcd(proc, log)


@needs_etcd
def test_auth_is_converged_idempotently_and_scopes_each_identity(run_module, etcd_auth):
    url, pki = etcd_auth
    first = auth.run(auth_params(url, pki), check_mode=False)
    assert first["changed"] and first["enabled"] and "authentication enabled" in first["actions"]
    assert auth.run(auth_params(url, pki), check_mode=False) == dict(changed=False, actions=[], enabled=True)
    # A changed password is found by authenticating as the user, and set again.
    users = [u | dict(password="a-pw2") if u["name"] == "patroni-a" else u for u in AUTH_SPEC["users"]]
    changed = auth.run(auth_params(url, pki, users=users), check_mode=False)
    assert changed["actions"] == ["user patroni-a: password set"]
    auth.run(auth_params(url, pki), check_mode=False)
    with pytest.raises(auth.AuthError, match="root_password"):
        auth.run(auth_params(url, pki, root_password="wrong"), check_mode=True)

    tls = dict(
        endpoints=[url],
        ca_cert=str(pki / "ca.crt"),
        client_cert=str(pki / "client.crt"),
        client_key=str(pki / "client.key"),
    )
    writer = dict(tls, username="registry-writer", password="writer-pw")
    result, _ = run_module(MODULE, dict(writer, tenant="acme", record=record()))
    assert result["changed"], result
    again, _ = run_module(MODULE, dict(writer, tenant="acme", record=record()))
    assert not again["changed"]
    # The list forms read the keys in one transaction: the writer's permissions cover it.
    batch = [dict(tenant=n, record=record(tenant=n)) for n in ("acme", "globex")]
    result, _ = run_module(MODULE, dict(writer, records=batch))
    assert {n: r["changed"] for n, r in result["results"].items()} == {"acme": False, "globex": True}, result
    result, _ = run_module(MODULE, dict(writer, tenants=["globex"], state="absent"))
    assert result["changed"] and result["failed_tenants"] == {}, result

    # The reader reads, and may not write.
    reader = dict(tls, username="registry-reader", password="reader-pw")
    query, _ = run_module(MODULE, dict(reader, state="query"))
    assert [r["tenant"] for r in query["records"]] == ["acme"]
    refused, _ = run_module(MODULE, dict(reader, tenant="acme", record=record(port=1)))
    assert refused["failed"] and "permission denied" in refused["msg"], refused
    refused, _ = run_module(MODULE, dict(reader, records=[dict(tenant="acme", record=record(port=1))]))
    assert refused["failed"] and "permission denied" in refused["msg"], refused

    # A tenant's Patroni identity: its own prefix only, not the registry nor another tenant.
    a = reg.EtcdClient([url], tls["ca_cert"], tls["client_cert"], tls["client_key"], 5.0, "patroni-a", "a-pw")
    assert a.txn(reg.put_txn("/shadowdb/patroni/a/leader", "a", 0))[0]
    assert a.get("/shadowdb/patroni/a/leader")[0] == "a"
    for attempt in (
        lambda: a.get("/shadowdb/patroni/b/leader"),
        lambda: a.txn(reg.put_txn("/shadowdb/patroni/b/config", "{}", 0)),
        lambda: a.get_prefix("/shadowdb/patroni/"),
        lambda: a.txn(reg.put_txn(PREFIX + "evil", "{}", 0)),
        lambda: a.get_prefix(PREFIX),
    ):
        with pytest.raises(reg.RegistryError, match="permission denied"):
            attempt()
    refused, _ = run_module(
        MODULE, dict(tls, username="patroni-a", password="a-pw", tenant="evil", record=record(tenant="evil"))
    )
    assert refused["failed"] and "permission denied" in refused["msg"]

    # A certificate alone is no identity on the gateway; a wrong password names the user.
    anonymous, _ = run_module(MODULE, dict(tls, state="query"))
    assert anonymous["failed"] and "user name is empty" in anonymous["msg"], anonymous
    wrong, _ = run_module(MODULE, dict(tls, username="registry-reader", password="nope", state="query"))
    assert wrong["failed"] and "username='registry-reader'" in wrong["msg"], wrong

    # auth.json next to the client certificate is read when no credentials are given.
    (pki / "auth.json").write_text(json.dumps({"username": "registry-reader", "password": "reader-pw"}))
    query, _ = run_module(MODULE, dict(tls, state="query"))
    assert [r["tenant"] for r in query["records"]] == ["acme"], query

    # Removing a tenant's identity deletes its user and role.
    gone = auth.run(
        auth_params(url, pki, state="absent", roles=[dict(name="patroni-b")], users=[dict(name="patroni-b")]),
        check_mode=False,
    )
    assert gone["actions"] == ["user patroni-b deleted", "role patroni-b deleted"]
    assert not auth.run(
        auth_params(url, pki, state="absent", roles=[dict(name="patroni-b")], users=[dict(name="patroni-b")]),
        check_mode=False,
    )["changed"]


@needs_etcd
def test_the_controllers_token_cache_skips_authentication_and_renews_a_stale_token(etcd_auth, tmp_path):
    url, pki = etcd_auth
    auth.run(auth_params(url, pki), check_mode=False)
    tls = (str(pki / "ca.crt"), str(pki / "client.crt"), str(pki / "client.key"), 5.0)
    cache = tmp_path / "registry-writer.json.tokens"

    class Counting(reg.EtcdClient):
        authentications = 0

        def _raw_post(self, endpoint, path, body, token=None):
            if path == "/v3/auth/authenticate":
                Counting.authentications += 1
            return super()._raw_post(endpoint, path, body, token)

    writer = ("registry-writer", "writer-pw")

    def client(identity=writer):
        return Counting([url], *tls, *identity, str(cache))

    client().get_prefix(PREFIX)
    assert Counting.authentications == 1
    assert cache.stat().st_mode & 0o777 == 0o600
    assert json.loads(cache.read_text())["username"] == "registry-writer"
    assert "writer-pw" not in cache.read_text()
    # A later run (a new client, as a new task is) uses the kept token.
    client().get_prefix(PREFIX)
    assert Counting.authentications == 1
    # A token etcd no longer knows (a restarted member): refused, then renewed once and kept.
    cache.write_text(json.dumps({"username": "registry-writer", "tokens": {url: "stale.1"}}))
    values, _revision = client().get_prefix(PREFIX)
    assert values == {} and Counting.authentications == 2
    assert json.loads(cache.read_text())["tokens"][url] != "stale.1"
    # Another user's cache is not used, and a writer's token gives the reader nothing.
    reader = client(("registry-reader", "reader-pw"))
    reader.get_prefix(PREFIX)
    assert Counting.authentications == 3
    assert json.loads(cache.read_text())["username"] == "registry-reader"


class RacedGateway:
    """etcd as seen by one of two runs removing the same tenant: the user and role exist when
    read, and the other run deletes them before this one does."""

    token = None

    def __init__(self, delete_error):
        self.delete_error = delete_error
        self.calls = []

    def authenticate(self, name, password):
        return "token"

    def call(self, path, body):
        self.calls.append(path)
        if path.endswith("/delete"):
            kind = path.split("/")[3]
            return None, self.delete_error.format(kind=kind)
        return {}, None


def test_a_delete_raced_by_another_run_is_done_not_failed():
    identity = [dict(name="patroni-b")]
    params = auth_params("https://127.0.0.1:1", Path("/pki"), state="absent", roles=identity, users=identity)
    raced = RacedGateway("etcdserver: {kind} name not found")
    result = auth.run(params, check_mode=False, gateway=raced)
    assert result["actions"] == ["user patroni-b deleted", "role patroni-b deleted"]
    assert raced.calls.count("/v3/auth/role/delete") == 1
    # Any other refusal still fails, naming the call.
    with pytest.raises(auth.AuthError, match="user/delete: etcdserver: permission denied"):
        auth.run(params, check_mode=False, gateway=RacedGateway("etcdserver: permission denied"))


def test_connection_fills_only_the_missing_arguments():
    writer = {
        "endpoints": ["https://10.0.0.1:2379"],
        "ca_cert": "/pki/ca.crt",
        "client_cert": "/etcd/w.crt",
        "client_key": "/etcd/w.key",
        "auth_file": "/etcd/w.json",
    }
    params = {key: None for key in writer} | {"connection": writer, "prefix": "/shadowdb/tenants/"}
    assert {key: reg.with_connection(params)[key] for key in writer} == writer
    params["endpoints"] = ["https://10.0.0.2:2379"]
    assert reg.with_connection(params)["endpoints"] == ["https://10.0.0.2:2379"]
    assert reg.with_connection({"endpoints": None, "connection": None})["endpoints"] is None


# --- the list forms: a batch of tenants in one module run ---


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        (dict(records=[], state="absent"), "records is only used with state=present, not with state=absent"),
        (dict(tenants=[], state="present"), "tenants is only used with state=absent, not with state=present"),
        (dict(tenants=["acme"], state="absent", tenant="acme"), "tenant is not used with tenants"),
        (dict(records=[], record=record()), "record is not used with records"),
        (dict(records=[dict(tenant="Acme", record=record())]), "records[0].tenant='Acme' is invalid"),
        (dict(tenants=["acme", "a"], state="absent"), "tenants[1]='a' is invalid"),
        (dict(tenants=["acme", "beta", "acme"], state="absent"), "tenants: acme listed more than once"),
        (dict(records=[dict(tenant="acme", record=record())] * 2), "records: acme listed more than once"),
    ],
)
def test_validate_params_of_the_list_forms(overrides, fragment):
    base = params(tenant=None) | overrides
    assert fragment in reg.validate_params(base)


def test_validate_params_accepts_the_list_forms():
    assert reg.validate_params(params(tenant=None, records=[dict(tenant="acme", record=record())])) is None
    assert reg.validate_params(params(tenant=None, state="absent", tenants=["acme", "beta"])) is None
    assert reg.validate_params(params(tenant=None, records=[])) is None


class Counting(reg.EtcdClient):
    """A client that counts its requests by path."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests = []

    def call(self, path, body):
        self.requests.append(path)
        return super().call(path, body)


@needs_etcd
def test_records_are_written_in_one_run_and_idempotent(run_module, etcd):
    names = ("acme", "beta", "zeta")
    records = [dict(tenant=n, record=record(tenant=n)) for n in names]
    args = dict(endpoints=[etcd], records=records)
    would, _ = run_module(MODULE, args, check_mode=True)
    assert would["changed"] and would["failed_tenants"] == {}
    assert [d["after_header"] for d in would["diff"]] == [PREFIX + n for n in names]
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert query["records"] == []  # check mode wrote nothing

    result, _ = run_module(MODULE, args)
    assert result["changed"] and result["endpoint"] == etcd and result["failed_tenants"] == {}
    assert list(result["results"]) == list(names)
    for n in names:
        one = result["results"][n]
        assert (one["changed"], one["failed"], one["key"]) == (True, False, PREFIX + n)
        assert one["record"] == reg.normalize_record(record(tenant=n), n)
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert [r["tenant"] for r in query["records"]] == list(names)
    assert result["revision"] == query["revision"]
    # The same records as the single form writes them.
    single, _ = run_module(MODULE, dict(endpoints=[etcd], tenant="beta", record=record(tenant="beta")))
    assert not single["changed"]

    # No change: one request (the read); one change: one more (its compare-and-swap).
    client = Counting([etcd])
    again = reg.run(params(endpoints=[etcd], tenant=None, records=records), check_mode=False, client=client)
    assert not again["changed"] and again["diff"] == [] and client.requests == ["/v3/kv/txn"]
    records[1] = dict(tenant="beta", record=record(tenant="beta", port=25000))
    client = Counting([etcd])
    moved = reg.run(params(endpoints=[etcd], tenant=None, records=records), check_mode=False, client=client)
    assert {n: r["changed"] for n, r in moved["results"].items()} == {
        "acme": False,
        "beta": True,
        "zeta": False,
    }
    assert client.requests == ["/v3/kv/txn", "/v3/kv/txn"]
    assert json.loads(moved["diff"][0]["before"])["port"] == 24817
    assert json.loads(moved["diff"][0]["after"])["port"] == 25000


@needs_etcd
def test_an_invalid_record_is_its_tenant_failure(run_module, etcd):
    records = [
        dict(tenant="acme", record=record(port=0)),
        dict(tenant="beta", record=record(tenant="beta")),
        dict(tenant="zeta", record=record(tenant="acme")),
    ]
    result, _ = run_module(MODULE, dict(endpoints=[etcd], records=records))
    assert result.get("failed") is not True, result
    assert result["failed_tenants"] == {
        "acme": "record.port=0 is invalid: it must be between 1 and 65535",
        "zeta": "record.tenant='acme' is invalid: it must equal tenant='zeta'",
    }
    assert result["results"]["acme"] == dict(
        changed=False, failed=True, msg=result["failed_tenants"]["acme"], key=PREFIX + "acme", record=None
    )
    assert result["changed"] and result["results"]["beta"]["changed"]
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert [r["tenant"] for r in query["records"]] == ["beta"]


@needs_etcd
def test_tenants_absent_deletes_them_all(run_module, etcd):
    records = [dict(tenant=n, record=record(tenant=n)) for n in ("acme", "beta", "zeta")]
    run_module(MODULE, dict(endpoints=[etcd], records=records))
    args = dict(endpoints=[etcd], tenants=["acme", "zeta", "gone"], state="absent")
    would, _ = run_module(MODULE, args, check_mode=True)
    assert would["changed"] and [d["after"] for d in would["diff"]] == ["", ""]
    result, _ = run_module(MODULE, args)
    assert result["changed"] and result["failed_tenants"] == {}
    assert {n: r["changed"] for n, r in result["results"].items()} == {
        "acme": True,
        "zeta": True,
        "gone": False,
    }
    assert all(r["record"] is None for r in result["results"].values())
    query, _ = run_module(MODULE, dict(endpoints=[etcd], state="query"))
    assert [r["tenant"] for r in query["records"]] == ["beta"]
    again, _ = run_module(MODULE, args)
    assert not again["changed"]
    empty, _ = run_module(MODULE, dict(endpoints=[etcd], tenants=[], state="absent"))
    assert (empty["changed"], empty["results"], empty["failed_tenants"]) == (False, {}, {})


@needs_etcd
def test_a_concurrent_change_fails_only_its_tenant(etcd):
    """A record changed between the read and the write is never overwritten; the others are written."""

    class Racing(reg.EtcdClient):
        def get_many(self, keys, chunk=100):
            found, revision = super().get_many(keys, chunk)
            # Someone else writes beta right after our read.
            other = reg.EtcdClient([etcd])
            other.txn(reg.put_txn(PREFIX + "beta", reg.canonical_json(dict(tenant="beta", by="other")), 0))
            return found, revision

    records = [dict(tenant=n, record=record(tenant=n)) for n in ("acme", "beta", "zeta")]
    result = reg.run(
        params(endpoints=[etcd], tenant=None, records=records), check_mode=False, client=Racing([etcd])
    )
    assert list(result["failed_tenants"]) == ["beta"]
    assert "changed by someone else" in result["failed_tenants"]["beta"]
    assert [n for n, r in result["results"].items() if r["changed"]] == ["acme", "zeta"]
    stored, _, _ = reg.EtcdClient([etcd]).get(PREFIX + "beta")
    assert json.loads(stored)["by"] == "other"


@needs_etcd
def test_get_many_reads_in_chunks(etcd):
    client = Counting([etcd])
    for n in ("a1", "a3", "a4"):
        client.txn(reg.put_txn(PREFIX + n, n, 0))
    client.requests.clear()
    keys = [PREFIX + f"a{i}" for i in range(5)]
    found, revision = client.get_many(keys, chunk=2)
    assert client.requests == ["/v3/kv/txn"] * 3
    assert list(found) == keys and revision > 0
    assert {k: v[0] for k, v in found.items()} == {
        PREFIX + "a0": None,
        PREFIX + "a1": "a1",
        PREFIX + "a2": None,
        PREFIX + "a3": "a3",
        PREFIX + "a4": "a4",
    }
    assert all(mod > 0 for value, mod in found.values() if value is not None)
    assert client.get_many([]) == ({}, 0) and len(client.requests) == 3


def test_an_unreachable_etcd_fails_the_list_form(run_module):
    endpoint = f"http://127.0.0.1:{free_port()}"
    result, proc = run_module(
        MODULE, dict(endpoints=[endpoint], records=[dict(tenant="acme", record=record())])
    )
    assert proc.returncode != 0 and result["failed"]
    assert result["msg"].startswith("etcd is unreachable (endpoints): ")


@needs_etcd
def test_etcd_lost_in_the_middle_fails_the_call_with_the_results_so_far(etcd):
    class Dying(reg.EtcdClient):
        def txn(self, body):
            if getattr(self, "wrote", False):
                raise reg.RegistryError("etcd is unreachable (endpoints): gone")
            self.wrote = True
            return super().txn(body)

    records = [dict(tenant=n, record=record(tenant=n)) for n in ("acme", "beta")]
    with pytest.raises(reg.RegistryError, match="unreachable") as caught:
        reg.run(
            params(endpoints=[etcd], tenant=None, records=records), check_mode=False, client=Dying([etcd])
        )
    assert caught.value.partial["changed"] is True
    assert list(caught.value.partial["results"]) == ["acme"]


# --- the action plugin: the module's code run in the controller's process ---


def run_playbook(tmp_path, tasks, *args):
    """ansible-playbook on localhost (connection local) with the repository's ansible.cfg;
    returns the JSON callback's task results by task name."""
    proc = local_playbook(
        tmp_path,
        tasks,
        *args,
        env={"ANSIBLE_STDOUT_CALLBACK": "ansible.posix.json", "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"},
    )
    # The JSON callback prints one document at the end; -vvv prints its own lines before it.
    document = proc.stdout[proc.stdout.rfind("\n{\n") + 1 :] if "\n{\n" in proc.stdout else proc.stdout
    results = json.loads(document)
    by_name = {t["task"]["name"]: t["hosts"]["localhost"] for p in results["plays"] for t in p["tasks"]}
    return by_name, proc


@needs_etcd
def test_on_the_controller_the_module_runs_in_process(etcd, tmp_path):
    write = {"endpoints": [etcd], "tenant": "acme", "record": record(), "state": "present"}
    tasks = [
        {"name": "write", "shadowdb_registry": write},
        {"name": "again", "shadowdb_registry": write},
        {
            "name": "change in check mode",
            "shadowdb_registry": write | {"record": record(port=25000)},
            "check_mode": True,
        },
        {"name": "query", "shadowdb_registry": {"endpoints": [etcd], "state": "query"}},
        {
            "name": "bad argument",
            "shadowdb_registry": {"endpoints": [etcd], "tenant": "Acme", "state": "absent"},
            "ignore_errors": True,
        },
        {
            "name": "unknown argument",
            "shadowdb_registry": {"endpoints": [etcd], "state": "query", "bogus": 1},
            "ignore_errors": True,
        },
    ]
    results, proc = run_playbook(tmp_path, tasks, "-vvv")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # -vvv names each module file Ansible packages and starts: none here.
    assert "Using module file" not in proc.stdout + proc.stderr
    assert results["write"]["changed"] is True
    assert results["again"]["changed"] is False
    assert results["change in check mode"]["changed"] is True
    # The check-mode change was not written.
    assert [r["port"] for r in results["query"]["records"]] == [24817]
    assert results["bad argument"]["failed"] is True
    assert "tenant='Acme' is invalid" in results["bad argument"]["msg"]
    assert results["unknown argument"]["failed"] is True
    assert "bogus" in results["unknown argument"]["msg"]


def test_in_process_run_keeps_the_password_out_of_the_output(tmp_path):
    secret = "s3cret-" + os.urandom(6).hex()
    unreachable = f"http://127.0.0.1:{free_port()}"
    args = {"endpoints": [unreachable], "username": "registry-writer", "password": secret, "state": "query"}
    tasks = [{"name": "query", "shadowdb_registry": args, "ignore_errors": True}]
    results, proc = run_playbook(tmp_path, tasks, "-vvv")
    assert results["query"]["failed"] is True
    assert unreachable in results["query"]["msg"]
    assert secret not in proc.stdout + proc.stderr


# --- action_plugins/shadowdb_register.py: a host's batch planned and written on the controller ---


@needs_etcd
def test_a_batch_is_planned_refused_or_written_with_its_rules(etcd, tmp_path):
    conn = {"connection": {"endpoints": [etcd]}}
    # Already registered: globex on this host (keeps its proxy port), initech on another host.
    seed = [
        {"tenant": "globex", "record": record(tenant="globex", proxy_port=30001, members=[])},
        {"tenant": "initech", "record": record(tenant="initech", host="db2", proxy_port=30002, members=[])},
    ]
    specs = [{"name": "acme", "pg_version": 17}, {"name": "globex"}, {"name": "initech", "pg_version": 17}]
    write = conn | {
        "state": "present",
        "specs": specs,
        "host": "db1",
        "address": "10.0.0.21",
        "ports": {"acme": 24817, "globex": 24818, "initech": 24819},
        "proxy_ports": {"start": 30001, "end": 30010},
    }
    # Another host's tenant holding globex's proxy port (a registry made inconsistent by hand).
    umbrella = {
        "tenant": "umbrella",
        "record": record(tenant="umbrella", host="db3", proxy_port=30001, members=[]),
    }
    tasks = [
        {"name": "seed", "shadowdb_registry": {"endpoints": [etcd], "records": seed, "state": "present"}},
        {"name": "plan", "shadowdb_register": conn | {"state": "plan", "specs": specs}},
        {"name": "seed a clash", "shadowdb_registry": {"endpoints": [etcd], "records": [umbrella]}},
        {"name": "clash", "shadowdb_register": write, "ignore_errors": True},
        {"name": "after the clash", "shadowdb_registry": {"endpoints": [etcd], "state": "query"}},
        {
            "name": "undo the clash",
            "shadowdb_registry": {"endpoints": [etcd], "tenant": "umbrella", "state": "absent"},
        },
        {"name": "write", "shadowdb_register": write},
        {"name": "again", "shadowdb_register": write},
        {"name": "query", "shadowdb_registry": {"endpoints": [etcd], "state": "query"}},
    ]
    results, proc = run_playbook(tmp_path, tasks)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # initech's version is given, globex's is in its record.
    assert results["plan"]["unversioned"] == []
    # A proxy port another tenant holds refuses the whole batch before any write.
    assert results["clash"]["failed"] is True
    assert (
        "proxy port 30001 of tenant 'globex' is already the proxy port of umbrella" in results["clash"]["msg"]
    )
    assert sorted(r["tenant"] for r in results["after the clash"]["records"]) == [
        "globex",
        "initech",
        "umbrella",
    ]
    # Written: acme (new) and globex (its port and address); initech is another host's, left as it is.
    assert results["write"]["changed"] is True
    assert "already registered on db2" in results["write"]["failed_tenants"]["initech"]
    assert results["again"]["changed"] is False
    by_tenant = {r["tenant"]: r for r in results["query"]["records"]}
    # acme's proxy port: one of the range that no record holds, chosen as it was written.
    assert 30003 <= by_tenant["acme"]["proxy_port"] <= 30010
    assert {r["tenant"]: r["record"]["proxy_port"] for r in results["write"]["records"]} == {
        "acme": by_tenant["acme"]["proxy_port"],
        "globex": 30001,
    }
    assert by_tenant["globex"]["proxy_port"] == 30001
    assert by_tenant["globex"]["port"] == 24818
    assert by_tenant["initech"]["host"] == "db2"
    assert [r["tenant"] for r in results["write"]["records"]] == ["acme", "globex"]
