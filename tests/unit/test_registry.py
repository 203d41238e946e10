"""The registry records of a host's tenants (shadowdb/registry.py)."""

from shadowdb.registry import (
    shadowdb_ha_members,
    shadowdb_ha_records,
    shadowdb_registry_current,
    shadowdb_registry_records,
    shadowdb_registry_taken,
)

HOST, ADDRESS = "db1", "10.0.0.5"


def plan(specs, records=(), **kwargs):
    args = {"host": HOST, "address": ADDRESS, "ports": {"acme": 20001, "globex": 20002}} | kwargs
    return shadowdb_registry_records(specs, list(records), **args)


def test_a_new_routed_tenant_gets_its_proxy_port_as_written_and_no_networks_when_it_admits_all():
    result = plan([{"name": "acme", "tier": "small", "pg_version": 17, "hba": ["0.0.0.0/0"]}], routed=True)
    assert result == {
        "records": [
            {
                "tenant": "acme",
                "record": {
                    "tenant": "acme",
                    "host": HOST,
                    "address": ADDRESS,
                    "port": 20001,
                    # Chosen by the registry module from the registry as it writes the record.
                    "proxy_port": "auto",
                    "pg_version": 17,
                    "tier": "small",
                    "state": "active",
                    "members": [{"host": HOST, "address": ADDRESS, "port": 20001}],
                },
            }
        ],
        "refused": [],
        "failed": {},
    }


def test_what_the_spec_leaves_out_is_kept_from_the_current_record():
    current = {
        "tenant": "acme",
        "host": HOST,
        "proxy_port": 30007,
        "pg_version": 16,
        "tier": "large",
        "hba": ["10.1.0.0/16"],
    }
    record = plan([{"name": "acme"}], [current], routed=True)["records"][0]["record"]
    assert (record["proxy_port"], record["pg_version"], record["tier"], record["hba"]) == (
        30007,
        16,
        "large",
        ["10.1.0.0/16"],
    )


def test_a_version_neither_gives_is_the_one_read_on_the_host():
    record = plan([{"name": "acme"}], versions={"acme": "15"})["records"][0]["record"]
    assert record["pg_version"] == 15 and record["tier"] is None and "hba" not in record
    assert record["proxy_port"] is None  # no proxy hosts: no proxy port


def test_a_tenant_registered_on_another_host_is_reported_and_not_written():
    result = plan(
        [{"name": "acme", "pg_version": 17}, {"name": "globex", "pg_version": 17}],
        [{"tenant": "acme", "host": "db2", "proxy_port": 30001}],
    )
    assert [item["tenant"] for item in result["records"]] == ["globex"]
    assert result["failed"] == {
        "acme": "register: tenant.name: a tenant named 'acme' is already registered on db2, not db1"
    }


def test_a_tenant_without_a_cluster_here_is_refused():
    result = plan([{"name": "initech", "pg_version": 17}])
    assert result["refused"] == [
        "tenant_register: tenant 'initech' has no PostgreSQL port lease or data directory on db1: "
        "onboard it first (playbooks/tenant.yml)"
    ]


def test_a_proxy_port_held_by_another_tenant_is_refused_naming_both():
    records = [
        {"tenant": "globex", "host": HOST, "proxy_port": 30002},
        {"tenant": "hooli", "host": "db2", "proxy_port": 30002},
    ]
    result = plan([{"name": "globex", "pg_version": 17}], records, routed=True)
    assert result["refused"] == [
        "tenant_register: proxy port 30002 of tenant 'globex' is already the proxy port of hooli"
        " in the registry"
    ]


def test_the_current_records_are_those_of_the_batch():
    records = [{"tenant": "acme", "host": HOST}, {"tenant": "hooli", "host": "db2"}]
    assert shadowdb_registry_current(records, [{"name": "acme"}, {"name": "globex"}]) == {
        "acme": {"tenant": "acme", "host": HOST}
    }


def test_taken_names_another_host_or_an_ha_tenant():
    records = [
        {"tenant": "acme", "host": "db1", "members": [{"host": "db1"}]},
        {"tenant": "globex", "host": "db2", "members": [{"host": "db2"}]},
        {
            "tenant": "hooli",
            "host": "db1",
            "members": [{"host": "db1", "api_port": 8008}, {"host": "db3", "api_port": 8008}],
        },
    ]
    taken = shadowdb_registry_taken(records, ["acme", "globex", "hooli", "initech"], "db1")
    # acme is this host's own; initech is in no record.
    assert sorted(taken) == ["globex", "hooli"]
    assert taken["globex"] == "tenant.name: a tenant named 'globex' already exists on db2"
    assert (
        "already exists on db1, db3 (an HA tenant: converge it with playbooks/tenant_ha.yml)"
        in taken["hooli"]
    )


def test_ha_members_are_the_members_with_a_rest_api_port():
    standalone = {"tenant": "solo", "host": "db1", "members": [{"host": "db1", "port": 20001}]}
    ha = {
        "tenant": "duo",
        "host": "db1",
        "members": [
            {"host": "db1", "port": 20002, "api_port": 21002, "role": "leader"},
            {"host": "db2", "port": 20003, "api_port": 21003, "role": "replica"},
        ],
    }
    assert shadowdb_ha_members(standalone) == []
    assert shadowdb_ha_members({"tenant": "old"}) == [] and shadowdb_ha_members({}) == []
    assert [m["host"] for m in shadowdb_ha_members(ha)] == ["db1", "db2"]
    assert shadowdb_ha_records([standalone, ha, {"tenant": "old"}]) == [ha]
