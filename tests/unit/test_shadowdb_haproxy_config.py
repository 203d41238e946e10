"""Tests of roles/haproxy/library/shadowdb_haproxy_config.py, run for real as a subprocess.

The validator is a small shell command standing in for `haproxy -c`: it refuses a candidate
whose main file contains the word INVALID, so both outcomes are exercised on real files.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

VALIDATE = ["/bin/sh", "-c", '! grep -q INVALID "$0/haproxy.cfg"', "%s"]


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / "haproxy"
    (d / "conf.d").mkdir(parents=True)
    return d


def apply(run_module, dest, files, check_mode=False, **extra):
    args = {"dest": str(dest), "files": files, "prune": ["conf.d/*.cfg"], "validate": VALIDATE} | extra
    return run_module("shadowdb_haproxy_config", args, check_mode=check_mode)


def test_applies_a_valid_set_then_changes_nothing(run_module, dest):
    files = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "backend t_acme\n"}
    result, _ = apply(run_module, dest, files)
    assert result["changed"] and sorted(result["changed_files"]) == ["conf.d/acme.cfg", "haproxy.cfg"]
    assert (dest / "conf.d" / "acme.cfg").read_text() == "backend t_acme\n"
    again, _ = apply(run_module, dest, files)
    assert not again["changed"]


def test_refused_candidate_leaves_the_live_files_untouched(run_module, dest):
    apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "backend t_acme\n"})
    result, proc = apply(run_module, dest, {"haproxy.cfg": "INVALID\n", "conf.d/beta.cfg": "x\n"})
    assert proc.returncode != 0 and result["failed"]
    assert "refused the candidate configuration" in result["msg"] and "untouched" in result["msg"]
    assert (dest / "haproxy.cfg").read_text() == "global\n"
    assert (dest / "conf.d" / "acme.cfg").exists() and not (dest / "conf.d" / "beta.cfg").exists()


def test_prunes_fragments_no_longer_wanted(run_module, dest):
    apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n", "conf.d/beta.cfg": "b\n"})
    result, _ = apply(run_module, dest, {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n"})
    assert result["changed"] and result["removed_files"] == ["conf.d/beta.cfg"]
    assert not (dest / "conf.d" / "beta.cfg").exists()


def test_check_mode_changes_nothing(run_module, dest):
    result, _ = apply(run_module, dest, {"haproxy.cfg": "global\n"}, check_mode=True, revision=5)
    assert result["changed"]
    assert not (dest / "haproxy.cfg").exists() and not (dest / ".shadowdb-revision").exists()


def test_an_older_registry_view_is_not_applied(run_module, dest):
    """Two runs read the registry at revisions 10 and 12; the one from 10 applies last."""
    newer = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n", "conf.d/beta.cfg": "b\n"}
    older = {"haproxy.cfg": "global\n", "conf.d/acme.cfg": "a\n"}
    result, _ = apply(run_module, dest, newer, revision=12)
    assert result["changed"] and not result["stale"]
    assert (dest / ".shadowdb-revision").read_text().strip() == "12"

    result, _ = apply(run_module, dest, older, revision=10)
    assert not result["changed"] and result["stale"] and result["applied_revision"] == 12
    assert (dest / "conf.d" / "beta.cfg").exists(), "the older view must not drop beta's route"

    # A newer view (beta removed at revision 13) is applied, and the same revision again changes nothing.
    result, _ = apply(run_module, dest, older, revision=13)
    assert result["changed"] and result["removed_files"] == ["conf.d/beta.cfg"]
    result, _ = apply(run_module, dest, older, revision=13)
    assert not result["changed"] and not result["stale"]


def test_a_newer_revision_alone_is_bookkeeping(run_module, dest):
    files = {"haproxy.cfg": "global\n"}
    apply(run_module, dest, files, revision=3)
    result, _ = apply(run_module, dest, files, revision=7)
    assert not result["changed"]
    assert (dest / ".shadowdb-revision").read_text().strip() == "7"


# --- Registry records are checked before anything is rendered from them (issue 12, item 4) ---
#
# The role renders HAProxy's configuration from registry records, which whoever can write etcd
# controls. These tests run the role's own render step (tasks/candidate.yml: the filter
# shadowdb_haproxy_records, then the real templates) in a local ansible-playbook, and check that
# a hostile record is skipped with a warning naming its key and injects nothing, while the valid
# records around it are still rendered.

REPO = Path(__file__).resolve().parents[2]
FILTERS = REPO / "roles" / "haproxy" / "filter_plugins" / "shadowdb_haproxy.py"
PREFIX = "/shadowdb/tenants/"
GOOD = {
    "tenant": "acme",
    "host": "db1",
    "address": "10.0.0.21",
    "port": 20001,
    "proxy_port": 30001,
    "state": "active",
}
# Each of these must be refused: (what is wrong, the record).
HOSTILE = [
    ("name with a newline", GOOD | {"tenant": "evil\nserver x 6.6.6.6:1"}),
    ("name with a trailing newline", GOOD | {"tenant": "evilb\n"}),
    ("name with a space", GOOD | {"tenant": "evil c"}),
    (
        "address with a port and a server line",
        GOOD | {"tenant": "evild", "address": "1.2.3.4:5 \n  server evil 6.6.6.6:5432"},
    ),
    ("address with a blank", GOOD | {"tenant": "evile", "address": "1.2.3.4 backup"}),
    ("port as text with more", GOOD | {"tenant": "evilf", "port": "5432\nfrontend evil"}),
    ("port out of range", GOOD | {"tenant": "evilg", "port": 70000}),
    ("proxy port that is a bool", GOOD | {"tenant": "evilh", "proxy_port": True}),
    ("hba entry that is not a CIDR", GOOD | {"tenant": "evili", "hba": ["10.0.0.0/8 } || { always_true"]}),
    ("hba entry without a prefix length", GOOD | {"tenant": "evilj", "hba": ["10.0.0.1"]}),
    ("tier with a newline", GOOD | {"tenant": "evilk", "tier": "small\nbackend evil"}),
    ("host with a blank", GOOD | {"tenant": "evill", "host": "db1 6.6.6.6:1"}),
    (
        "member address with a newline",
        GOOD | {"tenant": "evilm", "members": [{"host": "db1", "address": "10.0.0.21\n", "port": 5432}]},
    ),
    ("unknown field with blanks", GOOD | {"tenant": "eviln", "note": "x\n  server evil 6.6.6.6:1"}),
    ("not a dict", ["tenant", "evilo"]),
]


def load_filters():
    spec = importlib.util.spec_from_file_location("shadowdb_haproxy_filters", FILTERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("reason", "record"), HOSTILE, ids=[h[0] for h in HOSTILE])
def test_a_hostile_record_is_refused_naming_the_field(reason, record):
    filters = load_filters()
    with pytest.raises(filters.RecordError):
        filters.check_record(record)
    valid, warnings = filters.split_records([GOOD, record], PREFIX)
    assert valid == [GOOD] and len(warnings) == 1
    if isinstance(record, dict):
        assert json.dumps(PREFIX + record["tenant"]) in warnings[0], warnings[0]
    assert "\n" not in warnings[0]


def test_records_that_cannot_be_served_together_are_named():
    filters = load_filters()
    other = GOOD | {"tenant": "beta", "proxy_port": 30002}
    valid, _ = filters.split_records([GOOD, other], PREFIX)
    assert filters.clash(valid, 5432, 8404) is None
    shared, _ = filters.split_records([GOOD, other | {"proxy_port": 30001}], PREFIX)
    assert "proxy port(s) 30001 given to more than one tenant" in filters.clash(shared, 5432, 8404)
    twice, _ = filters.split_records([GOOD, GOOD | {"proxy_port": 30003}], PREFIX)
    assert "tenant(s) acme registered more than once" in filters.clash(twice, 5432, 8404)
    reserved, _ = filters.split_records([GOOD | {"proxy_port": 8404}], PREFIX)
    assert "proxy port(s) 8404 equal to haproxy_sni_port 5432 or haproxy_stats_port 8404" in filters.clash(
        reserved, 5432, 8404
    )


def test_valid_records_are_kept_and_normalized():
    filters = load_filters()
    records = [
        GOOD
        | {
            "port": "20001",
            "hba": ["10.0.0.0/8", "2001:db8::/32", "10.0.0.0/8"],
            "pg_version": 17,
            "tier": "small",
        },
        {
            "tenant": "b2",
            "host": "db-2.example",
            "address": "db2.example.com",
            "port": 5432,
            "proxy_port": None,
        },
        GOOD
        | {
            "tenant": "ha1",
            "members": [
                {"host": "db1", "address": "fd00::21", "port": 5433, "api_port": 8008, "role": "leader"}
            ],
        },
    ]
    valid, warnings = filters.split_records(records, PREFIX)
    assert warnings == []
    assert [r["tenant"] for r in valid] == ["acme", "b2", "ha1"]
    assert valid[0]["port"] == 20001 and valid[0]["hba"] == ["10.0.0.0/8", "2001:db8::/32"]
    assert valid[2]["members"][0]["address"] == "fd00::21"


RENDER_PLAYBOOK = """
- hosts: localhost
  connection: local
  gather_facts: false
  tasks:
    - ansible.builtin.include_role:
        name: haproxy
        tasks_from: candidate.yml
      vars:
        # The render step alone: no proxy host's records to check.
        haproxy_fast_path: false
    - ansible.builtin.copy:
        content: "{{ haproxy_candidate | to_json }}"
        dest: "{{ out }}"
        mode: "0600"
"""


def render(tmp_path, records, **role_vars):
    """Run the role's render step on records; return (candidate files, ansible-playbook output)."""
    playbook = tmp_path / "render.yml"
    playbook.write_text(RENDER_PLAYBOOK)
    out = tmp_path / "candidate.json"
    extra = {"haproxy_records": records, "haproxy_host": "localhost", "out": str(out)} | role_vars
    env = dict(
        os.environ, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1"
    )
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    proc = subprocess.run(
        ["ansible-playbook", "-i", "localhost,", str(playbook), "-e", json.dumps(extra)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    return json.loads(out.read_text()), output


def test_hostile_records_inject_nothing_into_the_rendered_configuration(tmp_path):
    records = [GOOD] + [record for _, record in HOSTILE]
    files, output = render(tmp_path, records)
    assert sorted(files) == ["conf.d/acme.cfg", "haproxy.cfg", "maps/sni.map"]
    everything = "\n".join(files.values())
    for marker in ("evil", "6.6.6.6", "always_true", "1.2.3.4"):
        assert marker not in everything, marker
    assert "server db1 10.0.0.21:20001 check" in files["conf.d/acme.cfg"]
    warnings = " ".join(output.split())
    for _, record in HOSTILE:
        if isinstance(record, dict):
            # The key as JSON (newlines escaped); Ansible's display may fold it over lines.
            assert " ".join(json.dumps(PREFIX + record["tenant"]).split()) in warnings, record["tenant"]
    assert warnings.count("holds an invalid record") == len(HOSTILE), output[-4000:]


def test_client_networks_and_per_source_limit_are_rendered(tmp_path):
    records = [
        GOOD | {"hba": ["10.89.0.5/32", "192.168.0.0/16"]},
        GOOD | {"tenant": "beta", "port": 20002, "proxy_port": 30002},
        GOOD | {"tenant": "gamma", "port": 20003, "proxy_port": 30003, "hba": []},
        GOOD
        | {
            "tenant": "hat",
            "port": 20004,
            "proxy_port": 30004,
            "hba": ["10.1.0.0/16"],
            "members": [
                {"host": "db1", "address": "10.0.0.21", "port": 20004, "api_port": 8008},
                {"host": "db2", "address": "10.0.0.22", "port": 20004, "api_port": 8008},
            ],
        },
    ]
    files, _ = render(tmp_path, records, haproxy_max_conn_per_source=7, haproxy_admin_bind=["10.10.0.5"])
    main = files["haproxy.cfg"]
    # Admin endpoints: the root-only socket and the admin address only.
    stats = main[main.index("frontend stats") : main.index("frontend pg_sni")]
    assert [line.split()[1] for line in stats.splitlines() if line.strip().startswith("bind ")] == [
        "/run/haproxy/stats.sock",
        "10.10.0.5:8404",
    ]
    # SNI route: each restricted tenant's routes are refused from outside its networks.
    assert "reject if { var(txn.route) -m str t_acme t_acme-ro } !{ src 10.89.0.5/32 192.168.0.0/16 }" in main
    assert "reject if { var(txn.route) -m str t_gamma t_gamma-ro }\n" in main
    assert "reject if { var(txn.route) -m str t_hat t_hat-ro } !{ src 10.1.0.0/16 }" in main
    assert "t_beta" not in main
    # Own port: the same networks, and the per-source limit on every frontend.
    assert (
        "tcp-request connection reject unless { src 10.89.0.5/32 192.168.0.0/16 }" in files["conf.d/acme.cfg"]
    )
    assert "tcp-request connection reject\n" in files["conf.d/gamma.cfg"]
    assert "reject unless" not in files["conf.d/beta.cfg"]
    for name in ("acme", "beta", "gamma", "hat"):
        fragment = files[f"conf.d/{name}.cfg"]
        assert fragment.count(f"frontend f_{name}\n") == 1, fragment
        assert "tcp-request connection reject if { sc0_conn_cur gt 7 }" in fragment
    assert "tcp-request connection reject unless { src 10.1.0.0/16 }" in files["conf.d/hat.cfg"]
    assert main.count("tcp-request connection reject if { sc0_conn_cur gt 7 }") == 1
    assert "stick-table type ipv6" in main


def test_admin_endpoints_default_to_a_root_only_socket(tmp_path):
    files, _ = render(tmp_path, [GOOD])
    main = files["haproxy.cfg"]
    stats = main[main.index("frontend stats") : main.index("frontend pg_sni")]
    binds = [line.split() for line in stats.splitlines() if line.strip().startswith("bind ")]
    assert binds == [["bind", "/run/haproxy/stats.sock", "mode", "600", "user", "root", "group", "root"]]
