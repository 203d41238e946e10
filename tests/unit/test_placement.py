"""Unit tests for shadowdb/placement.py: a new tenant's host, members of a tenant on distinct hosts."""

from __future__ import annotations

import pytest

from shadowdb import placement as pl
from shadowdb.errors import SpecError

HOSTS = ["db1", "db2", "db3", "db4"]


def record(tenant, tier, *hosts):
    return {"tenant": tenant, "host": hosts[0], "tier": tier, "members": [{"host": h} for h in hosts]}


def test_members_are_on_distinct_hosts():
    chosen = pl.shadowdb_placement(HOSTS, 3, "acme")
    assert len(chosen) == 3
    assert len(set(chosen)) == 3
    assert set(chosen) <= set(HOSTS)


def test_empty_hosts_are_chosen_in_name_order():
    assert pl.shadowdb_placement(HOSTS, 2, "acme") == ["db1", "db2"]


def test_least_committed_memory_first():
    # db1 holds one large tenant (2048 MB), db3 two small ones (1024 MB): memory wins over count.
    records = [record("big", "large", "db1"), record("s1", "small", "db3"), record("s2", "small", "db3")]
    assert pl.shadowdb_placement(HOSTS, 3, "acme", records=records) == ["db2", "db4", "db3"]


def test_tenant_count_breaks_memory_ties():
    tiers = {"t": {"disk_size_mb": 1, "memory_mb": 100, "cpu_quota_pct": 1, "max_connections": 1,
                   "nofile": 1, "tasks_max": 1},
             "z": {"disk_size_mb": 1, "memory_mb": 200, "cpu_quota_pct": 1, "max_connections": 1,
                   "nofile": 1, "tasks_max": 1}}  # fmt: skip
    records = [record("a", "t", "db1"), record("b", "t", "db1"), record("c", "z", "db2")]
    # db1 and db2 both commit 200 MB; db2 has one tenant, db1 two.
    assert pl.shadowdb_placement(["db1", "db2"], 1, "acme", records=records, tiers=tiers) == ["db2"]


def test_every_member_of_an_ha_record_counts_on_its_host():
    records = [record("ha", "large", "db1", "db2", "db3")]
    assert pl.shadowdb_placement(HOSTS, 1, "acme", records=records) == ["db4"]
    load = pl.shadowdb_host_load(HOSTS, records)
    assert [load[h]["tenants"] for h in HOSTS] == [1, 1, 1, 0]
    assert load["db1"]["memory_mb"] == load["db3"]["memory_mb"] > 0


def test_inventory_tenants_count_once_with_the_registry():
    records = [record("a", "large", "db1")]
    host_tenants = {"db1": [{"name": "a", "tier": "large"}], "db2": [{"name": "b", "tier": "small"}]}
    load = pl.shadowdb_host_load(HOSTS, records, host_tenants=host_tenants)
    assert load["db1"]["tenants"] == 1
    assert load["db2"]["tenants"] == 1
    assert pl.shadowdb_placement(HOSTS, 2, "acme", records=records, host_tenants=host_tenants) == [
        "db3",
        "db4",
    ]


def test_existing_members_stay_where_they_are():
    # A re-run must never move a member, even to an emptier host.
    records = [record("acme", "small", "db3", "db1"), record("x", "large", "db3")]
    assert pl.shadowdb_placement(HOSTS, 2, "acme", records=records) == ["db3", "db1"]
    # Growing keeps them and adds the least loaded host; the tenant's own load is not counted.
    assert pl.shadowdb_placement(HOSTS, 3, "acme", records=records) == ["db3", "db1", "db2"]


def test_current_hosts_from_the_hosts_themselves_come_first():
    assert pl.shadowdb_placement(HOSTS, 2, "acme", current=["db4"]) == ["db4", "db1"]


def test_members_on_hosts_no_longer_available_are_replaced():
    records = [record("acme", "small", "gone", "db2")]
    assert pl.shadowdb_placement(HOSTS, 2, "acme", records=records) == ["db2", "db1"]


def test_fewer_hosts_than_members_is_a_clear_error():
    with pytest.raises(SpecError) as err:
        pl.shadowdb_placement(["db1", "db2"], 3, "acme")
    message = str(err.value)
    assert message.startswith("tenant.replicas:")
    assert "acme needs 3 members on 3 different db hosts" in message
    assert "only 2 db host(s)" in message
    assert "db1, db2" in message


def test_duplicate_host_names_do_not_count_twice():
    with pytest.raises(SpecError):
        pl.shadowdb_placement(["db1", "db1"], 2, "acme")


@pytest.mark.parametrize("members", [0, -1, "x", None])
def test_member_count_is_checked(members):
    with pytest.raises(SpecError, match="tenant.replicas"):
        pl.shadowdb_placement(HOSTS, members, "acme")


def test_pick_host_takes_the_fewest_tenants_then_the_first_name():
    assert pl.pick_host(["db2", "db1"], {}) == "db1"
    assert pl.pick_host(["db1", "db2", "db3"], {"db1": 3, "db2": 1, "db3": 1}) == "db2"


def test_pick_host_without_hosts_is_no_hosts():
    with pytest.raises(pl.NoHosts, match="no db host"):
        pl.pick_host([], {})


# --- tenant_hosts: the hosts a job touches (the API locks them) --------------------------------


def test_a_standalone_tenant_goes_where_fewest_tenants_are_ha_members_counted():
    records = [
        {"tenant": "ha1", "host": "db1", "tier": "small", "members": [{"host": "db1"}, {"host": "db2"}]},
        {"tenant": "s1", "host": "db3", "tier": "small"},
    ]
    # db1, db2 and db3 hold one each (ha1's members count on both of their hosts): db4 is empty.
    assert pl.tenant_hosts(["db1", "db2", "db3", "db4"], {"name": "new"}, records) == ["db4"]
    assert pl.tenant_hosts(["db1", "db2", "db3"], {"name": "new"}, records) == ["db1"]  # a tie: the first


def test_an_ha_tenant_touches_its_members_current_and_placed():
    records = [{"tenant": "s1", "host": "db1", "tier": "small"}]
    spec = {"name": "acme", "replicas": 1}
    assert pl.tenant_hosts(["db1", "db2", "db3"], spec, records) == ["db2", "db3"]
    # Converting a standalone tenant: its host stays first, one member is added.
    assert pl.tenant_hosts(
        ["db1", "db2", "db3"], {"name": "s1", "replicas": 1}, records, current=["db1"]
    ) == [
        "db1",
        "db2",
    ]
    # Fewer members wanted, or the tenant removed: the current hosts only (the dropped ones too).
    shrink = {"name": "acme", "replicas": 1}
    assert pl.tenant_hosts(["db1", "db2", "db3"], shrink, current=["db3", "db2", "db1"]) == [
        "db3",
        "db2",
        "db1",
    ]
    gone = {"name": "acme", "state": "absent"}
    assert pl.tenant_hosts(["db1", "db2", "db3"], gone, current=["db2", "db3"]) == ["db2", "db3"]
    with pytest.raises(SpecError, match="needs 3 members"):
        pl.tenant_hosts(["db1", "db2"], {"name": "acme", "replicas": 2})
