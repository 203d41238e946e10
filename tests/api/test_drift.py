"""Drift (api/drift.py): the comparison of the catalog with what the hosts and the registry hold,
the periodic check recorded in the catalog, shown by GET /v1/tenants and /metrics, and a real run
of the read-only api/playbooks/drift.yml (a local "db host" under a test root, and one that does
not exist). The check against real lab hosts is in tests/api/test_e2e_lab.py."""

import json
import time

import pytest

from api.drift import DriftCheck, compare

from .conftest import make_settings

READY = "ready"


def tenant(name, host, state=READY, members=None):
    return {"name": name, "host": host, "state": state, "ha": bool(members), "members": members}


HA_MEMBERS = [{"host": "db2", "role": "leader"}, {"host": "db3", "role": "replica"}]
OBSERVED = {
    "hosts": {
        "db1": {"reachable": True, "standalone": ["solo", "stray"], "members": []},
        "db2": {"reachable": True, "standalone": ["site"], "members": ["acme"]},
        "db3": {"reachable": True, "standalone": [], "members": []},
        "db4": {"reachable": False, "standalone": [], "members": []},
    },
    "registry": [{"tenant": "solo", "host": "db1"}, {"tenant": "acme", "host": "db2"}, {"tenant": "ghost"}],
    "leaders": {"acme": "db3"},
}


def test_every_kind_of_drift_is_found_and_named():
    tenants = [
        tenant("solo", "db1"),
        tenant("acme", "db2", members=HA_MEMBERS),
        tenant("gone", "db1"),
        tenant("far", "db4"),  # on a host that could not be read: nothing concluded
        tenant("busy", "db1", state="updating"),  # a job is under way
    ]
    findings = compare(tenants, {"site"}, OBSERVED, moving=set())
    assert [(f["kind"], f["tenant"], f["host"]) for f in findings] == [
        ("host_unreachable", None, "db4"),
        ("leader_changed", "acme", "db3"),
        ("missing_from_host", "acme", "db3"),
        ("missing_from_host", "gone", "db1"),
        ("not_registered", "far", "db4"),
        ("not_registered", "gone", "db1"),
        ("unknown_in_registry", "ghost", None),
        ("unknown_on_host", "stray", "db1"),
    ]
    assert "acme is led by db3 now (catalog: db2)" in [f["detail"] for f in findings]


def test_no_drift_when_everything_matches_and_moving_tenants_are_left_out():
    observed = {
        "hosts": {"db1": {"reachable": True, "standalone": ["solo", "new"], "members": []}},
        "registry": None,  # no routing in this deployment: the registry is not compared
        "leaders": {},
    }
    assert (
        compare([tenant("solo", "db1"), tenant("old", "db1")], set(), observed, moving={"new", "old"}) == []
    )


@pytest.fixture
def local_inventory(tmp_path):
    """Two db hosts: one this machine (its paths under a test root), one that does not exist."""
    root = tmp_path / "root"
    (root / "var/lib/shadowdb/converged").mkdir(parents=True)
    (root / "etc/patroni").mkdir(parents=True)
    (root / "var/lib/shadowdb/converged/solo.json").write_text("{}")
    (root / "var/lib/shadowdb/converged/stray.json").write_text("{}")
    (root / "var/lib/shadowdb/converged/host_base.json").write_text("{}")  # the host's own record
    (root / "etc/patroni/acme.yml").write_text("scope: acme\n")
    inventory = tmp_path / "inventory"
    inventory.mkdir()
    (inventory / "hosts.yml").write_text(
        json.dumps(
            {
                "all": {
                    "children": {
                        "db": {
                            "hosts": {
                                "sdb-api-local": {"ansible_connection": "local", "api_drift_root": str(root)},
                                "sdb-api-nohost-x": {"ansible_connection": "containers.podman.podman"},
                            }
                        }
                    }
                }
            }
        )
    )
    return inventory


def test_a_real_check_is_recorded_and_shown(devdb, catalog, local_inventory, tmp_path, client, admin):
    with catalog.conn() as conn:
        conn.execute(
            "INSERT INTO tenants (name, host, spec, state) VALUES"
            " ('solo', 'sdb-api-local', '{}', 'ready'), ('lost', 'sdb-api-local', '{}', 'ready')"
        )
    check = DriftCheck(make_settings(devdb, local_inventory, tmp_path / "work"))
    with catalog.conn() as conn:
        row = check.run(conn)
    assert row["error"] is None, row
    assert [(f["kind"], f["tenant"], f["host"]) for f in row["findings"]] == [
        ("host_unreachable", None, "sdb-api-nohost-x"),
        ("missing_from_host", "lost", "sdb-api-local"),
        ("unknown_on_host", "acme", "sdb-api-local"),
        ("unknown_on_host", "stray", "sdb-api-local"),
    ]
    assert list((tmp_path / "work").iterdir()) == []  # the runner's directory is gone
    listed = client.get("/v1/tenants", headers=admin).json()
    assert listed["drift"]["error"] is None
    assert {f["tenant"] for f in listed["drift"]["findings"]} == {None, "lost", "acme", "stray"}
    metrics = client.get("/metrics").text
    assert 'shadowdb_api_drift_findings{kind="unknown_on_host"} 2.0' in metrics
    assert 'shadowdb_api_drift_checked_timestamp_seconds{ok="true"}' in metrics
    # No backup group in this inventory: no backups read, none shown.
    assert row["backups"] is None
    assert client.get("/v1/tenants/solo", headers=admin).json()["backup"] is None
    assert "shadowdb_tenant_last_backup_age_seconds" not in metrics


def test_the_age_of_each_tenants_last_backup_is_shown(catalog, client, admin):
    """What the drift check read on the repository (tests/integration/test_backup.py reads a real
    one): the age of each tenant's last backup in GET /v1/tenants/{name} and /metrics."""
    last = time.time() - 3600
    with catalog.conn() as conn:
        conn.execute(
            "INSERT INTO tenants (name, host, spec, state) VALUES"
            " ('solo', 'h1', '{}', 'ready'), ('fresh', 'h1', '{}', 'ready'), ('none', 'h1', '{}', 'ready')"
        )
        conn.execute(
            "INSERT INTO drift_checks (started_at, finished_at, findings, backups)"
            " VALUES (now(), now(), '[]', %s)",
            (json.dumps({"solo": last, "fresh": None}),),
        )
    solo = client.get("/v1/tenants/solo", headers=admin).json()["backup"]
    assert 3590 < solo["last_backup_age_seconds"] < 3700
    assert solo["last_backup_at"].startswith(time.strftime("%Y-%m-%dT", time.gmtime(last)))
    fresh = client.get("/v1/tenants/fresh", headers=admin).json()["backup"]
    assert fresh["last_backup_at"] is None and fresh["last_backup_age_seconds"] is None
    assert client.get("/v1/tenants/none", headers=admin).json()["backup"] is None  # no stanza
    metrics = client.get("/metrics").text
    line = next(
        m
        for m in metrics.splitlines()
        if m.startswith('shadowdb_tenant_last_backup_age_seconds{tenant="solo"}')
    )
    assert 3590 < float(line.split()[-1]) < 3700
    assert 'tenant="fresh"' not in metrics


def test_a_check_that_cannot_run_says_why(devdb, catalog, tmp_path, client, admin):
    check = DriftCheck(make_settings(devdb, tmp_path / "no-such-inventory", tmp_path / "work"))
    with catalog.conn() as conn:
        row = check.run(conn)
    assert row["findings"] == [] and "could not run" in row["error"]
    assert client.get("/v1/tenants", headers=admin).json()["drift"]["error"] == row["error"]
