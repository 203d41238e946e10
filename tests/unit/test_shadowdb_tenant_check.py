"""Tests of library/shadowdb_tenant_check.py: pure helpers, and the module run for real as a subprocess."""

import hashlib
import json
import os
import socket
import stat
import subprocess
import time

import pytest
import shadowdb_tenant_check as tc
from conftest import module_command, parse_result

MODULE = "shadowdb_tenant_check"
FP = "f" * 64


@pytest.fixture
def state_dir(tmp_path):
    return tmp_path / "converged"


@pytest.fixture
def conf(tmp_path):
    """Two configuration files of tenant acme."""
    d = tmp_path / "acme"
    d.mkdir()
    (d / "postgresql.conf").write_text("port = 21234\n")
    (d / "pg_hba.conf").write_text("hostssl all all 0.0.0.0/0 scram-sha-256\n")
    return d


@pytest.fixture
def tenant_check(run_module, state_dir):
    """tenant_check(state, check_mode=False, env=None, **args) runs the module against the test state_dir."""

    def run(state, check_mode=False, env=None, **args):
        result, _proc = run_module(
            MODULE, dict(state=state, state_dir=str(state_dir), **args), check_mode=check_mode, env=env
        )
        return result

    return run


@pytest.fixture
def record(tenant_check, conf):
    """record(name="acme", **overrides) records a tenant with no units, no mount point and no port."""

    def run(name="acme", check_mode=False, env=None, **overrides):
        args = dict(
            name=name,
            fingerprint=FP,
            files=[str(conf / "postgresql.conf"), str(conf / "pg_hba.conf")],
            units=[],
            mountpoint="",
            port=None,
        )
        args.update(overrides)
        return tenant_check("record", check_mode=check_mode, env=env, **args)

    return run


@pytest.fixture
def check(tenant_check):
    """check({name: fingerprint} or [names]) -> module result."""

    def run(tenants, check_mode=False, env=None, **args):
        if not isinstance(tenants, dict):
            tenants = dict.fromkeys(tenants, FP)
        return tenant_check(
            "check",
            check_mode=check_mode,
            env=env,
            tenants=[dict(name=n, fingerprint=f) for n, f in tenants.items()],
            **args,
        )

    return run


@pytest.fixture
def fake_systemctl(tmp_path):
    """A directory holding a fake systemctl: units whose name contains 'failed' are failed, others active.

    Returns (env with PATH set to that directory only, file listing the argument lists of every call).
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "systemctl-calls"
    script = bin_dir / "systemctl"
    script.write_text(
        "#!/bin/sh\n"
        f"echo \"$*\" >> '{calls}'\n"
        "shift\n"
        "rc=0\n"
        'for u in "$@"; do case "$u" in *failed*) echo failed; rc=3;; *) echo active;; esac; done\n'
        "exit $rc\n"
    )
    script.chmod(0o755)
    return dict(os.environ, PATH=str(bin_dir)), calls


def sha256(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --- pure helpers ---


def test_parse_is_active_maps_lines_to_units_in_order():
    units = ["a.service", "b.service", "c.mount"]
    assert tc.parse_is_active("active\nfailed\ninactive\n", units) == {
        "a.service": "active",
        "b.service": "failed",
        "c.mount": "inactive",
    }
    assert tc.parse_is_active("active\n\n", ["a.service"]) == {"a.service": "active"}
    assert tc.parse_is_active("", []) == {}


@pytest.mark.parametrize("output", ["", "active\n", "active\nactive\nactive\n", "active\n\nactive\n"])
def test_parse_is_active_rejects_wrong_line_count(output):
    with pytest.raises(ValueError, match="lines for 2 units"):
        tc.parse_is_active(output, ["a.service", "b.service"])


def test_parse_mountpoints_reads_field_5_and_decodes_escapes():
    text = (
        "22 27 0:21 / /proc rw,relatime - proc proc rw\n"
        "30 27 7:0 / /mnt/db/acme rw,noatime shared:1 - ext4 /dev/loop0 rw\n"
        "31 27 7:1 / /mnt/with\\040space rw - ext4 /dev/loop1 rw\n"
        "\n"
    )
    assert tc.parse_mountpoints(text) == {"/proc", "/mnt/db/acme", "/mnt/with space"}


def test_parse_listening_ports_only_listen_state():
    text = (
        "  sl  local_address rem_address   st tx_queue rx_queue\n"
        "   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000\n"
        "   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000\n"
    )
    assert tc.parse_listening_ports(text) == {8080}


ROUTES = (
    "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n"
    "eth1\t00000000\t0101A8C0\t0003\t0\t0\t200\t00000000\t0\t0\t0\n"
    "eth0\t0000590A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n"
    "eth2\t00000000\t0102A8C0\t0002\t0\t0\t50\t00000000\t0\t0\t0\n"
    "eth0\t00000000\t0100590A\t0003\t0\t0\t100\t00000000\t0\t0\t0\n"
)


def test_parse_default_route_takes_the_lowest_metric_of_the_routes_up():
    # eth2's default route has the lowest metric but is down (no RTF_UP); eth0's beats eth1's.
    # The gateway is in the host's byte order (this test machine is little-endian, as /proc is).
    assert tc.parse_default_route(ROUTES) == ("eth0", "10.89.0.1")
    assert tc.parse_default_route(ROUTES.split("\n", 1)[0] + "\n") is None


def test_default_ipv4_is_an_address_of_the_default_route_interface(tmp_path):
    found = tc.default_ipv4()
    if not found:
        pytest.skip("this machine has no IPv4 default route")
    shown = subprocess.run(
        ["ip", "-4", "-o", "addr", "show", "dev", found["interface"]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f" {found['address']}/" in shown, (found, shown)
    no_default = tmp_path / "route"
    no_default.write_text(ROUTES.splitlines()[0] + "\n" + ROUTES.splitlines()[2] + "\n")
    assert tc.default_ipv4(str(no_default)) == {}
    assert tc.default_ipv4(str(tmp_path / "missing")) == {}


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        (dict(name="Acme"), "name="),
        (dict(name="../etc"), "name="),
        (dict(fingerprint=" "), "fingerprint="),
        (dict(files=["relative/postgresql.conf"]), "files[0]="),
        (dict(units=["a.service", "--now"]), "units[1]="),
        (dict(units=["a b.service"]), "units[0]="),
        (dict(mountpoint="mnt/db"), "mountpoint="),
        (dict(port=0), "port="),
        (dict(port=65536), "port="),
        (dict(tenants=[]), "tenants "),
    ],
)
def test_validate_params_record_names_argument(overrides, argument):
    params = dict(state="record", name="acme", fingerprint=FP, files=[], units=[], mountpoint="", port=None)
    params["tenants"] = None
    params.update(overrides)
    assert tc.validate_params(params).startswith(argument)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        (dict(tenants=[dict(name="Acme", fingerprint=FP)]), "tenants[0].name="),
        (dict(tenants=[dict(name="acme", fingerprint="")]), "tenants[0].fingerprint="),
        (dict(tenants=[dict(name="acme", fingerprint=FP)] * 2), "tenants[1].name="),
        (dict(name="acme"), "name "),
        (dict(files=["/a"]), "files "),
        (dict(port=5432), "port "),
    ],
)
def test_validate_params_check_names_argument(overrides, argument):
    params = dict(state="check", tenants=[], **dict.fromkeys(tc.RECORD_ARGS))
    params.update(overrides)
    assert tc.validate_params(params).startswith(argument)


def test_validate_params_accepts_valid():
    record = dict(
        state="record",
        tenants=None,
        name="acme-1",
        fingerprint=FP,
        files=["/a/b"],
        units=["shadowdb-postgres@acme-1.service", "mnt-db-acme\\x2d1.mount"],
        mountpoint="/mnt/db/acme-1",
        port=21234,
    )
    assert tc.validate_params(record) is None
    assert tc.validate_params(dict(record, state="absent", fingerprint=None)) is None
    tenants = [dict(name="acme", fingerprint=FP), dict(name="globex", fingerprint=FP)]
    assert tc.validate_params(dict(state="check", tenants=tenants, **dict.fromkeys(tc.RECORD_ARGS))) is None


def test_build_record_normalizes_and_sorts():
    rec = tc.build_record(FP, ["/b/./x", "/a/y"], ["z.service", "a.service", "z.service"], "/mnt/", None, len)
    assert rec == {
        "files": {"/b/x": 4, "/a/y": 4},
        "fingerprint": FP,
        "mountpoint": "/mnt",
        "port": None,
        "units": ["a.service", "z.service"],
    }
    assert tc.build_record(FP, None, None, None, 5432, len)["mountpoint"] == ""
    text = tc.dump_record(rec)
    assert list(json.loads(text)) == sorted(rec)
    assert text.index('"/a/y"') < text.index('"/b/x"')


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        "{}",
        '{"fingerprint": 1}',
        '{"fingerprint": "x", "files": ["/a"]}',
        '{"fingerprint": "x", "files": {"rel": "abc"}}',
        '{"fingerprint": "x", "units": ["-x"]}',
        '{"fingerprint": "x", "mountpoint": "rel"}',
        '{"fingerprint": "x", "port": true}',
        '{"fingerprint": "x", "port": "5432"}',
    ],
)
def test_parse_record_rejects_corrupt(text):
    with pytest.raises(tc.RecordError):
        tc.parse_record(text)


class FakeProbe:
    def __init__(self, states=None, units_error=None, mounts=(), ports=()):
        self.states = states or {}
        self.units_error = units_error
        self.mounts = set(mounts)
        self.ports = set(ports)
        self.unit_calls = []

    def unit_states(self, units):
        self.unit_calls.append(list(units))
        if self.units_error:
            return {}, self.units_error
        return {u: self.states.get(u, "inactive") for u in units}, None

    def mountpoints(self):
        return self.mounts, None

    def listening_ports(self):
        return self.ports, None


def write_record(state_dir, name, **fields):
    state_dir.mkdir(exist_ok=True)
    rec = dict(files={}, fingerprint=FP, mountpoint="", port=None, units=[]) | fields
    (state_dir / f"{name}.json").write_text(tc.dump_record(rec))


def test_check_tenants_one_unit_query_in_order_and_first_reason(state_dir, conf):
    pg_conf = conf / "postgresql.conf"
    write_record(state_dir, "a", units=["pg@a.service", "shared.service"])
    write_record(state_dir, "b", units=["shared.service", "pg@b.service"], port=6000)
    write_record(state_dir, "c", units=["pg@c.service"], mountpoint="/mnt/c")
    write_record(state_dir, "d", files={str(pg_conf): "0" * 64}, units=["pg@d.service"])
    write_record(state_dir, "e", fingerprint="old", units=["pg@e.service"])
    write_record(state_dir, "f", units=["pg@f.service"], port=6001)
    probe = FakeProbe(
        states={"pg@a.service": "active", "shared.service": "active", "pg@b.service": "failed"},
        ports={6001},
    )
    tenants = [dict(name=n, fingerprint=FP) for n in "abcdefg"]
    converged, stale = tc.check_tenants(tenants, str(state_dir), probe)
    assert converged == ["a"]
    assert stale == {
        "b": "pg@b.service is failed",
        "c": "/mnt/c not mounted",
        "d": f"{pg_conf} changed",
        "e": "fingerprint changed",
        "f": "pg@f.service is inactive",
        "g": "no record",
    }
    # one query, units of the tenants still in the running only, without duplicates, in tenant order
    assert probe.unit_calls == [["pg@a.service", "shared.service", "pg@b.service", "pg@f.service"]]


def test_check_tenants_units_error_only_hits_tenants_with_units(state_dir):
    write_record(state_dir, "a", units=["pg@a.service"])
    write_record(state_dir, "b")
    probe = FakeProbe(units_error="systemctl not found")
    converged, stale = tc.check_tenants(
        [dict(name="a", fingerprint=FP), dict(name="b", fingerprint=FP)], str(state_dir), probe
    )
    assert converged == ["b"]
    assert stale == {"a": "cannot check units: systemctl not found"}


def test_check_tenants_without_units_runs_no_query(state_dir):
    write_record(state_dir, "a")
    probe = tc.HostProbe(lambda units: pytest.fail("systemctl must not run without units"))
    assert tc.check_tenants([dict(name="a", fingerprint=FP)], str(state_dir), probe) == (["a"], {})


def test_check_tenants_corrupt_record_is_stale(state_dir):
    state_dir.mkdir()
    (state_dir / "a.json").write_text("{not json")
    _converged, stale = tc.check_tenants([dict(name="a", fingerprint=FP)], str(state_dir), FakeProbe())
    assert stale["a"].startswith(f"record {state_dir / 'a.json'} unusable: invalid JSON")


def test_host_probe_reads_each_source_once(tmp_path):
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text("22 27 0:21 / /proc rw - proc proc rw\n")
    tcp = tmp_path / "tcp"
    tcp.write_text("header\n   0: 0100007F:1F90 00000000:0000 0A 0\n")
    calls = []
    probe = tc.HostProbe(
        lambda units: calls.append(units) or ({u: "active" for u in units}, None), str(mountinfo), [str(tcp)]
    )
    assert probe.mountpoints() == ({"/proc"}, None)
    assert probe.listening_ports() == ({8080}, None)
    mountinfo.unlink()
    tcp.unlink()
    assert probe.mountpoints() == ({"/proc"}, None)
    assert probe.listening_ports() == ({8080}, None)
    assert probe.unit_states(["a"]) == ({"a": "active"}, None)
    assert probe.unit_states(["a"]) == ({"a": "active"}, None)
    assert calls == [["a"]]
    missing = tc.HostProbe(None, str(mountinfo), [str(tcp)])
    assert missing.mountpoints()[1].startswith(f"cannot read {mountinfo}")
    assert missing.listening_ports() == (set(), f"none of {tcp} is readable")


def test_check_tenants_50_tenants_is_fast(state_dir, tmp_path):
    files_dir = tmp_path / "files"
    files_dir.mkdir()
    tenants = []
    for i in range(50):
        name = f"t{i:02d}"
        files = {}
        for f in ("postgresql.conf", "pg_hba.conf", "pg_ident.conf", "50-tenant.conf", "server.crt"):
            path = files_dir / f"{name}-{f}"
            path.write_text(f"{name} {f}\n" * 50)
            files[str(path)] = sha256(path)
        write_record(state_dir, name, files=files, units=[f"pg@{name}.service"], mountpoint="/proc")
        tenants.append(dict(name=name, fingerprint=FP))
    probe = tc.HostProbe(lambda units: ({u: "active" for u in units}, None))
    start = time.perf_counter()
    converged, stale = tc.check_tenants(tenants, str(state_dir), probe)
    elapsed = time.perf_counter() - start
    assert (len(converged), stale) == (50, {})
    assert elapsed < 0.3


# --- the module, run for real ---


def test_record_then_check_converged(record, check, state_dir, conf):
    result = record()
    assert result["changed"] is True
    path = state_dir / "acme.json"
    assert result["path"] == str(path)
    stored = json.loads(path.read_text())
    assert stored == result["record"]
    assert stored == {
        "files": {
            str(conf / "pg_hba.conf"): sha256(conf / "pg_hba.conf"),
            str(conf / "postgresql.conf"): sha256(conf / "postgresql.conf"),
        },
        "fingerprint": FP,
        "mountpoint": "",
        "port": None,
        "units": [],
    }
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(state_dir.stat().st_mode) == 0o700
    assert result["diff"]["before"] == ""
    assert result["diff"]["after"] == path.read_text()

    result = check(["acme"])
    assert result["changed"] is False
    assert (result["converged"], result["stale"]) == (["acme"], {})


def test_record_is_idempotent(record, state_dir):
    assert record()["changed"] is True
    mtime = (state_dir / "acme.json").stat().st_mtime_ns
    second = record()
    assert second["changed"] is False
    assert second["diff"]["before"] == second["diff"]["after"]
    assert (state_dir / "acme.json").stat().st_mtime_ns == mtime
    assert record(fingerprint="0" * 64)["changed"] is True


def test_fingerprint_change_is_stale(record, check):
    record()
    result = check({"acme": "0" * 64})
    assert (result["converged"], result["stale"]) == ([], {"acme": "fingerprint changed"})


def test_edited_file_is_stale_naming_it(record, check, conf):
    record()
    (conf / "postgresql.conf").write_text("port = 21235\n")
    assert check(["acme"])["stale"] == {"acme": f"{conf / 'postgresql.conf'} changed"}


def test_removed_file_is_stale_naming_it(record, check, conf):
    record()
    (conf / "pg_hba.conf").unlink()
    assert check(["acme"])["stale"] == {"acme": f"{conf / 'pg_hba.conf'} missing"}


def test_missing_record_is_stale(record, check):
    record()
    result = check(["acme", "globex"])
    assert (result["converged"], result["stale"]) == (["acme"], {"globex": "no record"})


def test_check_of_no_tenants(check, state_dir):
    result = check([])
    assert (result["converged"], result["stale"], result["changed"]) == ([], {}, False)
    assert not state_dir.exists()
    # The host's default address only when asked: a check delegated to another host (the etcd
    # member's or the proxy's records) must not give that host's address to the task's own host.
    assert "ansible_facts" not in result
    asked = check([], default_address=True)
    assert asked.get("ansible_facts", {}).get("default_ipv4") == (tc.default_ipv4() or None)


def test_absent_removes_record(record, tenant_check, check, state_dir):
    record()
    result = tenant_check("absent", name="acme")
    assert result["changed"] is True
    assert result["record"]["fingerprint"] == FP
    assert result["diff"]["after"] == ""
    assert not (state_dir / "acme.json").exists()
    assert check(["acme"])["stale"] == {"acme": "no record"}
    again = tenant_check("absent", name="acme")
    assert (again["changed"], again["record"]) == (False, None)


def test_check_mode_writes_nothing(record, tenant_check, check, state_dir):
    result = record(check_mode=True)
    assert result["changed"] is True
    assert result["record"]["fingerprint"] == FP
    assert not state_dir.exists()

    record()
    before = (state_dir / "acme.json").read_text()
    assert record(check_mode=True, fingerprint="0" * 64)["changed"] is True
    assert tenant_check("absent", check_mode=True, name="acme")["changed"] is True
    assert (state_dir / "acme.json").read_text() == before
    # state=check runs in check mode too
    assert check(["acme"], check_mode=True)["converged"] == ["acme"]


def test_port_must_be_listening(record, check):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        record(port=port)
        assert check(["acme"])["converged"] == ["acme"]
    assert check(["acme"])["stale"] == {"acme": f"port {port} not listening"}


@pytest.mark.parametrize("mountpoint", ["/", "/proc", "/proc/"])
def test_mountpoint_that_is_mounted_is_converged(record, check, mountpoint):
    record(mountpoint=mountpoint)
    assert check(["acme"])["converged"] == ["acme"]


def test_mountpoint_not_mounted_is_stale(record, check, tmp_path):
    record(mountpoint=str(tmp_path))
    assert check(["acme"])["stale"] == {"acme": f"{tmp_path} not mounted"}


def test_units_checked_with_one_systemctl_call(record, check, fake_systemctl):
    env, calls = fake_systemctl
    record(units=["shadowdb-postgres@acme.service", "shadowdb-volume@acme.service"])
    record(name="globex", units=["shadowdb-postgres@globex.service"])
    record(name="initech", units=["shadowdb-postgres@failed.service"])
    result = check(["acme", "globex", "initech"], env=env)
    assert result["converged"] == ["acme", "globex"]
    assert result["stale"] == {"initech": "shadowdb-postgres@failed.service is failed"}
    assert calls.read_text().splitlines() == [
        "is-active shadowdb-postgres@acme.service shadowdb-volume@acme.service "
        "shadowdb-postgres@globex.service shadowdb-postgres@failed.service"
    ]


def test_units_without_systemctl_are_stale(record, check, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    env = dict(os.environ, PATH=str(empty))
    if any(
        os.access(os.path.join(d, "systemctl"), os.X_OK) for d in ("/sbin", "/usr/sbin", "/usr/local/sbin")
    ):
        pytest.skip("systemctl is in an sbin directory, which Ansible always searches")
    record(units=["shadowdb-postgres@acme.service"])
    record(name="globex")
    result = check(["acme", "globex"], env=env)
    assert result["converged"] == ["globex"]
    assert result["stale"] == {"acme": "cannot check units: systemctl not found"}


def test_record_of_missing_file_fails_naming_files(record, state_dir, tmp_path):
    result = record(files=[str(tmp_path / "nope.conf")])
    assert result["failed"] is True
    assert result["msg"].startswith(f"files: cannot hash {tmp_path / 'nope.conf'}: No such file")
    assert not state_dir.exists()


def test_record_of_missing_file_in_check_mode_warns(record, state_dir, tmp_path):
    missing = tmp_path / "nope.conf"
    result = record(check_mode=True, files=[str(missing)])
    assert result.get("failed") is not True
    assert result["changed"] is True
    assert result["record"]["files"] == {str(missing): None}
    assert str(missing) in json.dumps(result["warnings"])  # plain strings or WarningSummary objects
    assert not state_dir.exists()


def test_invalid_arguments_fail_naming_them(record, tenant_check):
    assert record(name="Acme")["msg"].startswith("name='Acme' is invalid")
    assert record(port=70000)["msg"].startswith("port=70000 is invalid")
    assert record(units=["-x.service"])["msg"].startswith("units[0]='-x.service' is invalid")
    result = tenant_check("check", tenants=[dict(name="acme", fingerprint=FP)] * 2)
    assert result["msg"].startswith("tenants[1].name='acme' is invalid: the name is listed twice")
    assert tenant_check("check")["failed"] is True  # tenants is required
    assert tenant_check("record", name="acme")["failed"] is True  # fingerprint is required


def test_state_dir_not_a_directory_fails_naming_it(tenant_check, record, state_dir):
    state_dir.write_text("")
    result = record()
    assert result["failed"] is True
    assert result["msg"].startswith(f"state_dir='{state_dir}'")


def test_check_50_tenants_as_a_module_run(tmp_path, state_dir, conf):
    """End to end: one module run over 50 recorded tenants, including process start-up."""
    files = [str(conf / "postgresql.conf"), str(conf / "pg_hba.conf")]
    rec = tc.build_record(FP, files, [], "/proc", None)
    state_dir.mkdir()
    for i in range(50):
        (state_dir / f"t{i:02d}.json").write_text(tc.dump_record(rec))
    tenants = [dict(name=f"t{i:02d}", fingerprint=FP) for i in range(50)]
    cmd = module_command(MODULE, dict(state="check", state_dir=str(state_dir), tenants=tenants), tmp_path)
    start = time.perf_counter()
    result = parse_result(subprocess.run(cmd, capture_output=True, text=True, timeout=60))
    elapsed = time.perf_counter() - start
    assert len(result["converged"]) == 50
    assert elapsed < 3  # mostly interpreter and AnsibleModule start-up; the check itself is tested above


# --- Files in a tenant's directory: never hashed through a link the tenant planted ---


def test_a_symlinked_file_is_not_hashed_when_recording(record, state_dir, conf, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$y$secret-hash\n")
    (conf / "postgresql.conf").unlink()
    os.symlink(secret, conf / "postgresql.conf")
    result = record()
    assert result.get("failed") is True and "symbolic link" in result["msg"], result
    assert "secret-hash" not in json.dumps(result)
    assert not (state_dir / "acme.json").exists()


def test_a_file_replaced_by_a_symlink_is_stale(record, check, conf, tmp_path):
    record()
    secret = tmp_path / "copy"
    secret.write_text((conf / "postgresql.conf").read_text())  # same content: same hash
    (conf / "postgresql.conf").unlink()
    os.symlink(secret, conf / "postgresql.conf")
    reason = check(["acme"])["stale"]["acme"]
    assert "symbolic link" in reason and str(conf / "postgresql.conf") in reason, reason


def test_a_fifo_is_stale_without_blocking(record, check, conf):
    record()
    (conf / "pg_hba.conf").unlink()
    os.mkfifo(conf / "pg_hba.conf")
    reason = check(["acme"])["stale"]["acme"]
    assert "not a regular file" in reason, reason


# --- list forms: a batch of tenants in one call ---


@pytest.fixture
def record_args(conf):
    """record_args(name, **overrides): one item of records, as record() records it."""

    def make(name, **overrides):
        files = [str(conf / "postgresql.conf"), str(conf / "pg_hba.conf")]
        return dict(name=name, fingerprint=FP, files=files, units=[], mountpoint="", port=None) | overrides

    return make


def test_absent_of_many_tenants_returns_each_record(record, tenant_check, state_dir):
    record()
    record(name="globex", port=21235)
    result = tenant_check("absent", tenants=[dict(name="acme"), dict(name="globex"), dict(name="initech")])
    assert result["changed"] is True and result["failed_tenants"] == {}
    assert set(result["records"]) == {"acme", "globex", "initech"}
    assert result["records"]["acme"]["fingerprint"] == FP
    assert result["records"]["globex"]["port"] == 21235
    assert result["records"]["initech"] is None
    assert [d["before_header"] for d in result["diff"]] == [
        str(state_dir / "acme.json"),
        str(state_dir / "globex.json"),
    ]
    assert list(state_dir.iterdir()) == []
    again = tenant_check("absent", tenants=[dict(name="acme"), dict(name="globex")])
    assert (again["changed"], again["records"]) == (False, {"acme": None, "globex": None})


def test_absent_of_many_tenants_in_check_mode_deletes_nothing(record, tenant_check, state_dir):
    record()
    result = tenant_check("absent", check_mode=True, tenants=[dict(name="acme", fingerprint=FP)])
    assert result["changed"] is True and result["records"]["acme"]["fingerprint"] == FP
    assert (state_dir / "acme.json").exists()
    empty = tenant_check("absent", tenants=[])
    assert (empty["changed"], empty["records"], empty["failed_tenants"]) == (False, {}, {})


def test_absent_of_many_tenants_reports_a_failure_per_tenant(record, tenant_check, state_dir):
    record()
    (state_dir / "globex.json").mkdir()  # cannot be read as a record
    result = tenant_check("absent", tenants=[dict(name="globex"), dict(name="acme")])
    assert result.get("failed") is not True, result
    assert list(result["failed_tenants"]) == ["globex"]
    assert result["failed_tenants"]["globex"].startswith(f"state_dir='{state_dir}': cannot read the record")
    assert result["records"] == {"globex": None, "acme": result["records"]["acme"]}
    assert result["records"]["acme"]["fingerprint"] == FP
    assert result["changed"] is True and not (state_dir / "acme.json").exists()


def test_record_of_many_tenants_writes_each_record(tenant_check, record_args, state_dir, conf):
    records = [record_args("acme"), record_args("globex", port=21235, units=["b.service", "a.service"])]
    result = tenant_check("record", records=records)
    assert result["changed"] is True and result["failed_tenants"] == {}
    assert set(result["results"]) == {"acme", "globex"}
    for name in ("acme", "globex"):
        stored = json.loads((state_dir / f"{name}.json").read_text())
        assert result["results"][name] == dict(
            changed=True, failed=False, record=stored, path=str(state_dir / f"{name}.json")
        )
    assert result["results"]["globex"]["record"]["units"] == ["a.service", "b.service"]
    assert len(result["diff"]) == 2
    # the same records as the single form writes them
    single = tenant_check("record", **record_args("acme"))
    assert single["changed"] is False and single["record"] == result["results"]["acme"]["record"]

    again = tenant_check("record", records=records)
    assert again["changed"] is False and again["diff"] == []
    assert {n: r["changed"] for n, r in again["results"].items()} == {"acme": False, "globex": False}


def test_record_of_many_tenants_as_the_playbook_converges_them(tenant_check, record_args, state_dir, conf):
    """absent (the previous records), converge, record with previous: changed only for a real change."""
    tenant_check("record", records=[record_args("acme"), record_args("globex"), record_args("initech")])
    names = ["acme", "globex", "initech", "umbrella"]
    forgotten = tenant_check("absent", tenants=[dict(name=n) for n in names])
    previous = forgotten["records"]
    assert previous["umbrella"] is None
    result = tenant_check(
        "record",
        records=[
            # a new fingerprint alone (an upgrade of ShadowDB) is bookkeeping, not a change
            record_args("acme", fingerprint="0" * 64, previous=previous["acme"]),
            record_args("globex", port=21236, previous=previous["globex"]),
            record_args("initech", files=[str(conf / "postgresql.conf")], previous=previous["initech"]),
            record_args("umbrella", previous=previous["umbrella"]),  # a new tenant
        ],
    )
    changed = {n: r["changed"] for n, r in result["results"].items()}
    assert changed == {"acme": False, "globex": True, "initech": True, "umbrella": True}
    assert result["changed"] is True and len(result["diff"]) == 4  # every file was written again
    assert json.loads((state_dir / "acme.json").read_text())["fingerprint"] == "0" * 64

    unchanged = tenant_check(
        "record", records=[record_args("acme", fingerprint="0" * 64, previous=previous["acme"])]
    )
    assert (unchanged["changed"], unchanged["diff"]) == (False, [])
    empty = tenant_check("record", records=[record_args("acme", fingerprint="0" * 64, previous={})])
    assert empty["changed"] is True and empty["diff"] == []  # {}: a previous record of nothing


def test_record_of_many_tenants_fails_per_tenant(tenant_check, record_args, state_dir, tmp_path):
    missing = tmp_path / "nope.conf"
    result = tenant_check(
        "record",
        records=[
            record_args("acme", files=[str(missing)]),
            record_args("globex"),
            record_args("initech", port=70000),
            record_args("umbrella", units=["-x.service"]),
        ],
    )
    assert result.get("failed") is not True, result
    assert sorted(result["failed_tenants"]) == ["acme", "initech", "umbrella"]
    assert result["failed_tenants"]["acme"].startswith(f"files: cannot hash {missing}: No such file")
    assert result["failed_tenants"]["initech"].startswith("records[2].port=70000 is invalid")
    assert result["failed_tenants"]["umbrella"].startswith("records[3].units[0]='-x.service' is invalid")
    acme = result["results"]["acme"]
    assert (acme["failed"], acme["changed"], acme["record"]) == (True, False, None)
    assert acme["msg"] == result["failed_tenants"]["acme"]
    assert result["results"]["globex"]["failed"] is False and result["changed"] is True
    assert sorted(p.name for p in state_dir.iterdir()) == ["globex.json"]


def test_record_of_many_tenants_in_check_mode_writes_nothing(tenant_check, record_args, state_dir, tmp_path):
    missing = tmp_path / "nope.conf"
    result = tenant_check("record", check_mode=True, records=[record_args("acme", files=[str(missing)])])
    assert result["changed"] is True and result["failed_tenants"] == {}
    assert result["results"]["acme"]["record"]["files"] == {str(missing): None}
    warnings = json.dumps(result["warnings"])
    assert "tenant acme: check mode: cannot hash" in warnings and str(missing) in warnings
    assert not state_dir.exists()


def test_list_forms_wrong_calls_fail(tenant_check, record_args):
    result = tenant_check("check", tenants=[dict(name="acme")])
    assert result["failed"] and result["msg"] == "missing required arguments: fingerprint found in tenants"
    result = tenant_check("absent", name="acme", tenants=[dict(name="globex")])
    assert result["failed"] and result["msg"].startswith(
        "name: give the options of each tenant inside tenants"
    )
    result = tenant_check("record", records=[record_args("acme")], fingerprint=FP)
    assert result["failed"] and result["msg"].startswith("fingerprint: give the options")
    result = tenant_check("absent", tenants=[dict(name="acme"), dict(name="acme")])
    assert result["msg"] == "tenants[1].name='acme' is invalid: the name is listed twice"
    result = tenant_check("record", records=[record_args("Acme")])
    assert result["failed"] and result["msg"].startswith("records[0].name='Acme' is invalid")
    result = tenant_check("absent", name="acme", records=[record_args("acme")])
    assert result["msg"] == "records is only used with state=record, not with state=absent"
    result = tenant_check("record", records=[], tenants=[dict(name="acme")])
    assert result["failed"] and result["msg"].startswith(
        "tenants is only used with state=check or state=absent"
    )
    result = tenant_check("record", records=[dict(name="acme")])
    assert result["failed"] and "fingerprint" in result["msg"]
    result = tenant_check("absent")
    assert result["failed"] and "name, tenants" in result["msg"]
    result = tenant_check("record", name="acme")
    assert result["msg"] == "state is record but all of the following are missing: fingerprint"


# --- ports: the host check tells which tenants would get no port (before anything is made) ---


def write_leases(lease_dir, leases, pool="postgres"):
    lease_dir.mkdir(parents=True, exist_ok=True)
    (lease_dir / f"{pool}.json").write_text(json.dumps({"leases": leases}))


def free_range(width):
    """A range of `width` ports with no listening socket on this machine (the check reads /proc)."""
    listening, _ = tc.read_listening_ports()
    for start in range(40000, 60000, 50):
        if not any(p in listening for p in range(start, start + width)):
            return start, start + width - 1
    pytest.skip("no free range of ports")


def test_check_with_ports_names_the_tenants_a_full_range_leaves_without(check, tmp_path):
    lease_dir = tmp_path / "ports"
    start, end = free_range(2)
    write_leases(lease_dir, {"acme": start})
    result = check(
        [], ports=dict(names=["acme", "b1", "b2"], range_start=start, range_end=end, lease_dir=str(lease_dir))
    )
    # acme keeps its lease, b1 takes the last free port, b2 finds none.
    assert list(result["ports_short"]) == ["b2"]
    assert f"port range {start}-{end} of pool 'postgres' is exhausted" in result["ports_short"]["b2"]
    assert not result["changed"]
    # Nothing was leased.
    assert json.loads((lease_dir / "postgres.json").read_text()) == {"leases": {"acme": start}}


def test_check_with_ports_and_no_lease_file_has_room(check, tmp_path):
    start, end = free_range(3)
    result = check(
        [], ports=dict(names=["a1", "a2"], range_start=start, range_end=end, lease_dir=str(tmp_path / "none"))
    )
    assert result["ports_short"] == {}
    assert not (tmp_path / "none").exists()


def test_check_without_ports_returns_no_ports_short(check):
    assert "ports_short" not in check([])


@pytest.mark.parametrize(
    ("ports", "message"),
    [
        (dict(names=["Bad"], range_start=20000, range_end=20010), "ports.names[0]='Bad' is invalid"),
        (dict(names=["a"], range_start=80, range_end=20010), "ports.range_start=80 is invalid"),
        (dict(names=["a"], range_start=20010, range_end=20000), "ports.range_end=20000 is invalid"),
    ],
)
def test_check_with_a_bad_ports_request_fails_naming_it(check, ports, message):
    result = check([], ports=ports)
    assert result.get("failed") and message in result["msg"]


def test_check_with_an_unusable_lease_file_fails_naming_it(check, tmp_path):
    lease_dir = tmp_path / "ports"
    lease_dir.mkdir()
    (lease_dir / "postgres.json").write_text("{not json")
    result = check([], ports=dict(names=["a"], range_start=20000, range_end=20010, lease_dir=str(lease_dir)))
    assert result.get("failed") and "cannot check the leases of pool 'postgres'" in result["msg"]
