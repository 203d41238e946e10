"""Tests of the pure helpers of library/shadowdb_cluster_prepare.py and shadowdb_cluster_apply.py
(both modules run on real lab hosts in every integration test that onboards a tenant)."""

import os
import pwd
import random
import string
import threading
import time
from types import SimpleNamespace

import pytest
import shadowdb_cluster_apply as ca
import shadowdb_cluster_prepare as cp


def test_missing_extensions_are_named():
    installed = {"/usr/share/postgresql/17/extension/pgcrypto.control"}
    assert cp.missing_extensions(["pgcrypto", "postgis"], 17, exists=installed.__contains__) == ["postgis"]
    assert cp.missing_extensions([], 17, exists=installed.__contains__) == []


def test_version_refusal():
    assert cp.version_refusal("acme", None, 17) is None
    assert cp.version_refusal("acme", "17\n", 17) is None
    why = cp.version_refusal("acme", "16\n", 17)
    assert "PostgreSQL 16" in why and "asks for 17" in why and "acme" in why
    # What a tenant wrote into its own PG_VERSION is never echoed unless it is a version number.
    assert "not a version" not in cp.version_refusal("acme", "not a version", 17)
    assert "(unreadable PG_VERSION)" in cp.version_refusal("acme", "not a version", 17)


def test_new_passwords_are_long_distinct_and_alphanumeric():
    passwords = cp.new_passwords(random.Random(1))
    assert set(passwords) == {"postgres", "owner", "readonly"}
    assert len(set(passwords.values())) == 3
    for value in passwords.values():
        assert len(value) == 32 and set(value) <= set(string.ascii_letters + string.digits)


def test_user_changes():
    entry = pwd.struct_passwd(
        ("pg-acme", "x", 990, 990, "ShadowDB tenant acme", "/mnt/db/acme", "/usr/sbin/nologin")
    )
    assert cp.user_changes(entry, "/mnt/db/acme", 990, "ShadowDB tenant acme") == []
    assert cp.user_changes(entry, "/mnt/db/other", 991, "ShadowDB tenant acme") == [
        "--home",
        "/mnt/db/other",
        "--gid",
        "991",
    ]


def test_pg_file_settings_rows():
    rows = [("shared_buffers", "setting could not be applied"), ("work_mem", "invalid value")]
    assert ca.invalid_settings(rows) == ["work_mem"]
    assert ca.needs_restart(rows)
    assert ca.invalid_settings([("shared_buffers", "setting could not be applied")]) == []
    assert not ca.needs_restart([])


def test_last_error_line():
    journal = "LOG:  starting\nFATAL:  could not map anonymous shared memory\nLOG:  shut down\n"
    assert ca.last_error_line(journal, "fallback") == "FATAL:  could not map anonymous shared memory"
    assert ca.last_error_line("LOG: fine\n", "the server did not come up") == "the server did not come up"
    assert len(ca.last_error_line("FATAL: " + "x" * 1000, "")) == 300


# --- the batch form (module_utils/shadowdb_batch.py) ---


def test_taken_ports_reads_the_listening_ports_once_and_only_when_asked():
    reads = []

    def read():
        reads.append(1)
        return {5432}, 2

    taken = cp.TakenPorts(read)
    taken.given.add(20000)
    assert 20000 in taken and reads == []  # a port given in this call needs no read
    assert 5432 in taken and 20001 not in taken and 20002 not in taken
    assert reads == [1]


@pytest.mark.parametrize("check_mode", [False, True])
def test_tenants_of_one_call_never_get_the_same_port(tmp_path, check_mode):
    prepare_module = SimpleNamespace(check_mode=check_mode)
    taken = cp.TakenPorts(lambda: (set(), 2))
    ports = []
    for name in ("acme", "globex"):
        params = dict(name=name, lease_dir=str(tmp_path), port_range_start=20000, port_range_end=20001)
        ports.append(cp.Prepare(prepare_module, params, taken).port())
    assert sorted(ports) == [20000, 20001]
    params = dict(name="initech", lease_dir=str(tmp_path), port_range_start=20000, port_range_end=20001)
    with pytest.raises(cp.PrepareError, match="initech: port range 20000-20001 .* is exhausted"):
        cp.Prepare(prepare_module, params, taken).port()
    # A tenant holding its lease keeps it, without reading the host's listening ports.
    if not check_mode:
        never = cp.TakenPorts(lambda: pytest.fail("the listening ports were read"))
        params = dict(name="acme", lease_dir=str(tmp_path), port_range_start=20000, port_range_end=20001)
        assert cp.Prepare(prepare_module, params, never).port() == ports[0]


def test_checked_directories():
    entries = [{"path": "/mnt/db/acme"}, {"path": "/mnt/db/acme/data", "mode": "0700"}]
    checked = cp.checked_directories("acme", entries)
    assert [e["mode"] for e in checked] == ["0755", "0700"]
    assert "mode" not in entries[0]  # the caller's entries are left as they are
    for path in ("data", None):
        with pytest.raises(cp.PrepareError, match=f"tenant acme: directories: path {path!r} is not absolute"):
            cp.checked_directories("acme", [{"path": path}])


def test_daemon_reload_runs_once_for_the_tenants_whose_files_it_read():
    reloader = ca.DaemonReload()
    runs = []
    marks = [reloader.mark() for _ in range(8)]  # eight tenants wrote their unit files

    def run():
        runs.append(1)
        time.sleep(0.05)

    threads = [threading.Thread(target=reloader.reload, args=(run, mark)) for mark in marks]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert runs == [1]
    assert reloader.reload(run, reloader.mark())  # files written since: reloaded again
    assert len(runs) == 2


def test_a_failed_daemon_reload_is_not_taken_for_one_that_read_the_files():
    reloader = ca.DaemonReload()
    mark = reloader.mark()

    def fail():
        raise ca.ApplyError("tenant acme: systemctl daemon-reload failed (rc 1)")

    with pytest.raises(ca.ApplyError):
        reloader.reload(fail, mark)
    assert reloader.reload(lambda: None, mark)


def prepare_args(tmp_path, name, **extra):
    root = tmp_path / name
    args = dict(
        name=name,
        os_user=f"shadowdb-test-no-{name}",  # no such user: check mode stops before its directories
        home=str(root),
        directories=[{"path": str(root / "data"), "owner": "root", "group": "root", "mode": "0700"}],
        data_dir=str(root / "data"),
        tls_dir=str(root / "tls"),
        secrets_dir=str(root / "secrets"),
        pg_version=17,
        server_name=f"{name}.db.example",
    )
    args.update(extra)
    return args


PREPARE_SHARED = dict(port_range_start=20000, port_range_end=20001)


def test_a_prepare_batch_reports_each_tenant_and_a_refusal_is_the_tenants_own(run_module, tmp_path):
    lease_dir = str(tmp_path / "ports")
    globex = prepare_args(tmp_path, "globex", directories=[{"path": "data"}])
    tenants = [prepare_args(tmp_path, "acme"), globex, prepare_args(tmp_path, "umbrella")]
    args = dict(PREPARE_SHARED, lease_dir=lease_dir, tenants=tenants)
    result, _ = run_module("shadowdb_cluster_prepare", args, check_mode=True)
    assert not result.get("failed"), result
    assert set(result["results"]) == {"acme", "globex", "umbrella"}
    assert result["failed_tenants"] == {"globex": "tenant globex: directories: path 'data' is not absolute"}
    assert result["results"]["globex"]["failed"]
    acme, umbrella = result["results"]["acme"], result["results"]["umbrella"]
    for tenant in (acme, umbrella):
        assert not tenant["failed"] and tenant["changed"]
        assert tenant["csr"] is None and tenant["existing_certificate"] is None and tenant["passwords"] == {}
        assert tenant["existing_version"] is False
    assert sorted([acme["port"], umbrella["port"]]) == [20000, 20001]
    assert f"leased port {acme['port']}" in acme["actions"]
    assert result["changed"]
    assert not (tmp_path / "ports").exists()  # check mode


def test_a_prepare_batch_refuses_a_tenant_listed_twice_and_a_bad_port_range(run_module, tmp_path):
    acme = prepare_args(tmp_path, "acme")
    result, _ = run_module("shadowdb_cluster_prepare", dict(PREPARE_SHARED, tenants=[acme, acme]), True)
    assert result["failed"] and "acme listed more than once" in result["msg"]
    args = dict(port_range_start=30000, port_range_end=20000, tenants=[acme])
    result, _ = run_module("shadowdb_cluster_prepare", args, check_mode=True)
    assert result["failed"] and result["msg"].startswith("port range 30000-20000 is invalid")


def test_the_single_prepare_form_keeps_its_messages(run_module, tmp_path):
    args = dict(prepare_args(tmp_path, "acme"), port_range_start=30000, port_range_end=20000)
    result, _ = run_module("shadowdb_cluster_prepare", args, check_mode=True)
    assert result["failed"] and result["msg"].startswith("tenant acme: port range 30000-20000 is invalid")
    args = dict(prepare_args(tmp_path, "acme", directories=[{"path": "data"}]), **PREPARE_SHARED)
    result, _ = run_module("shadowdb_cluster_prepare", args, check_mode=True)
    assert result["failed"] and result["msg"] == "tenant acme: directories: path 'data' is not absolute"
    assert "results" not in result and "actions" not in result
    data = tmp_path / "acme" / "data"
    data.mkdir(parents=True)
    (data / "PG_VERSION").write_text("16\n")
    args = dict(prepare_args(tmp_path, "acme"), lease_dir=str(tmp_path / "ports"), **PREPARE_SHARED)
    result, _ = run_module("shadowdb_cluster_prepare", args, check_mode=True)
    assert result["failed"] and "holds a PostgreSQL 16 cluster" in result["msg"]
    assert result["actions"] == []


SECRETS = ("Superuser-secret-4f1d", "Owner-secret-8c2e", "Credentials-secret-77aa", "Health-secret-31b0")


def apply_args(tmp_path, name, **extra):
    root = tmp_path / name
    data = root / "data"
    dropin = str(tmp_path / "systemd" / f"shadowdb-cluster@{name}.service.d" / "50-tenant.conf")
    owned = dict(owner="root", group="root", mode="0600")
    args = dict(
        name=name,
        os_user=f"pg-{name}",
        unit=f"shadowdb-cluster@{name}.service",
        data_dir=str(data),
        socket_dir=str(root / "run"),
        port=20000,
        bin_dir="/usr/lib/postgresql/17/bin",
        superuser_password=SECRETS[0],
        files=[
            dict(owned, path=str(data / "postgresql.conf"), content="port = 20000\n"),
            dict(owned, path=dropin, content="[Service]\n", mode="0644"),
        ],
        dropin=dropin,
        last_good_dir=str(root / "last-good"),
        sql=dict(owner=name, owner_password=SECRETS[1], dbname=name),
        health=dict(
            server_name=f"{name}.db.example",
            dbname=name,
            user=name,
            password=SECRETS[3],
            sslrootcert=str(tmp_path / "ca.crt"),
        ),
        credentials_file=str(root / "secrets" / "owner.env"),
        credentials=f"PGPASSWORD={SECRETS[2]}\n",
    )
    args.update(extra)
    return args


def fake_systemctl(tmp_path):
    """PATH with a systemctl that says every unit is enabled and stopped (check mode asks no more)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    systemctl = bin_dir / "systemctl"
    systemctl.write_text(
        "#!/bin/sh\n"
        'case "$1" in\n'
        "  is-enabled) echo enabled ;;\n"
        "  is-active) echo inactive; exit 3 ;;\n"
        '  *) echo "unexpected systemctl $*" >&2; exit 1 ;;\n'
        "esac\n"
    )
    systemctl.chmod(0o755)
    return dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}")


def test_an_apply_batch_reports_each_tenant_and_a_refusal_is_the_tenants_own(run_module, tmp_path):
    env = fake_systemctl(tmp_path)
    tenants = []
    for name in ("acme", "initech", "umbrella"):
        (tmp_path / name / "data").mkdir(parents=True)
        (tmp_path / name / "data" / "PG_VERSION").write_text("17\n")
        tenants.append(apply_args(tmp_path, name))
    globex = apply_args(tmp_path, "globex")
    globex["files"] = globex["files"][:1]  # without its drop-in
    tenants.insert(1, globex)
    # The module echoes its arguments: the secrets inside tenants must be masked there too.
    args = dict(tenants=tenants, _ansible_inject_invocation=True)
    result, proc = run_module("shadowdb_cluster_apply", args, check_mode=True, env=env)
    assert not result.get("failed"), result
    assert set(result["results"]) == {"acme", "globex", "initech", "umbrella"}
    assert result["failed_tenants"] == {
        "globex": f"tenant globex: files must hold postgresql.conf and the drop-in {globex['dropin']}"
    }
    assert result["results"]["globex"]["failed"]
    for name in ("acme", "initech", "umbrella"):
        tenant = result["results"][name]
        assert not tenant["failed"] and tenant["changed"], tenant
        assert tenant["content_changed"] == [f["path"] for f in apply_args(tmp_path, name)["files"]]
        assert tenant["actions"][-1] == f"started shadowdb-cluster@{name}.service"
        assert "health" not in tenant  # check mode
    assert result["changed"]
    echoed = result["invocation"]["module_args"]["tenants"][0]
    assert echoed["name"] == "acme" and echoed["sql"]["owner"] == "acme"
    for secret in SECRETS:
        assert secret not in proc.stdout
    assert not (tmp_path / "systemd").exists()  # check mode


def test_an_apply_batch_refuses_a_tenant_listed_twice_and_too_few_workers(run_module, tmp_path):
    acme = apply_args(tmp_path, "acme")
    result, _ = run_module("shadowdb_cluster_apply", {"tenants": [acme, acme]}, check_mode=True)
    assert result["failed"] and "acme listed more than once" in result["msg"]
    result, _ = run_module("shadowdb_cluster_apply", {"tenants": [acme], "workers": 0}, check_mode=True)
    assert result["failed"] and result["msg"] == "workers must be at least 1, got 0"
    result, _ = run_module("shadowdb_cluster_apply", {"tenants": [acme], "port": 5432}, check_mode=True)
    assert result["failed"] and "port: give per-tenant options inside tenants" in result["msg"]


def test_the_single_apply_form_keeps_its_messages(run_module, tmp_path):
    args = apply_args(tmp_path, "acme")
    args["files"] = args["files"][:1]
    result, _ = run_module("shadowdb_cluster_apply", args, check_mode=True)
    assert result["failed"]
    assert result["msg"] == f"tenant acme: files must hold postgresql.conf and the drop-in {args['dropin']}"
    assert "actions" not in result and "results" not in result
    env = fake_systemctl(tmp_path)
    result, _ = run_module("shadowdb_cluster_apply", apply_args(tmp_path, "acme"), check_mode=True, env=env)
    assert not result.get("failed"), result
    assert result["actions"][0] == "initialised the cluster (initdb)"
    assert result["actions"][-1] == "started shadowdb-cluster@acme.service"
    assert len(result["content_changed"]) == 2 and "results" not in result


# --- apply: the converged record written by the same call (option record) ---


def record_params(tmp_path, previous=None, fingerprint="f" * 64):
    conf = tmp_path / "acme.conf"
    conf.write_text("port = 21234\n")
    return dict(
        name="acme",
        port=21234,
        record=dict(
            state_dir=str(tmp_path / "converged"),
            fingerprint=fingerprint,
            files=[str(conf)],
            units=["shadowdb-postgres@acme.service"],
            mountpoint="/mnt/db/acme",
            previous=previous,
        ),
    )


def test_apply_writes_the_record_shadowdb_tenant_check_reads(tmp_path):
    import shadowdb_tenant_check as tc

    module = SimpleNamespace(check_mode=False, warn=lambda msg: None)
    assert ca.write_record(record_params(tmp_path, previous={}), module) is True
    record = tc.load_record(str(tmp_path / "converged" / "acme.json"))
    assert record["port"] == 21234 and record["mountpoint"] == "/mnt/db/acme"
    assert record["units"] == ["shadowdb-postgres@acme.service"]
    assert list(record["files"].values()) == [tc.sha256_file(str(tmp_path / "acme.conf"))]
    # Again, against the record it left: no change; a new fingerprint alone is bookkeeping.
    assert ca.write_record(record_params(tmp_path, previous=record), module) is False
    assert ca.write_record(record_params(tmp_path, previous=record, fingerprint="e" * 64), module) is False
    assert tc.load_record(str(tmp_path / "converged" / "acme.json"))["fingerprint"] == "e" * 64


def test_apply_refuses_a_bad_record_naming_it(tmp_path):
    params = record_params(tmp_path)
    params["record"]["files"] = ["relative/postgresql.conf"]
    with pytest.raises(ca.TenantFailure, match=r"record\.files\[0\]='relative/postgresql.conf' is invalid"):
        ca.write_record(params, SimpleNamespace(check_mode=False, warn=lambda msg: None))
    assert not (tmp_path / "converged").exists()
