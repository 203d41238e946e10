"""The API validates against the deployment's own tiers: ``shadowdb_tiers`` in its inventory's
group_vars/all.yml replaces the default table whole, as in the playbooks (shadowdb.resolve_tiers)."""

import pytest
from fastapi.testclient import TestClient

from api.app import create_app

from .conftest import make_settings, write_inventory

TINY = {"disk_size_mb": 256, "memory_mb": 128, "cpu_quota_pct": 25, "max_connections": 20}
TINY |= {"nofile": 1024, "tasks_max": 128}


@pytest.fixture
def client_for(devdb, catalog, tmp_path):
    """client_for(all_yml): an app (engine off) on an inventory with that group_vars/all.yml."""
    clients = []

    def make(all_yml: str) -> TestClient:
        inventory = write_inventory(tmp_path / f"inv{len(clients)}", ["db-a", "db-b"])
        (inventory / "group_vars").mkdir()
        (inventory / "group_vars" / "all.yml").write_text(all_yml)
        client = TestClient(create_app(make_settings(devdb, inventory, tmp_path / "work")))
        clients.append(client.__enter__())
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def tiers_yml(table: dict) -> str:
    lines = ["shadowdb_tiers:"]
    for name, tier in table.items():
        lines += [f"  {name}:"] + [f"    {key}: {value}" for key, value in tier.items()]
    return "\n".join(lines) + "\n"


def tier_enum(client: TestClient) -> list:
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TenantCreate"]
    return schema["properties"]["tier"]["enum"]


def test_group_vars_tiers_replace_the_defaults(client_for, admin, catalog):
    client = client_for(tiers_yml({"tiny": TINY}))
    r = client.post("/v1/tenants", json={"name": "t1", "tier": "tiny"}, headers=admin)
    assert r.status_code == 202, r.text
    assert catalog.tenant("t1")["spec"]["tier"] == "tiny"
    # A tier only in the default table is refused: the inventory's table replaces it whole.
    r = client.post("/v1/tenants", json={"name": "t2", "tier": "large"}, headers=admin)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "tier"]
    assert error["msg"] == "unknown tier 'large'; known tiers: tiny"
    # So is the default tier "small", which a create without a tier asks for.
    r = client.post("/v1/tenants", json={"name": "t3"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["msg"].startswith("unknown tier 'small'")
    assert tier_enum(client) == ["tiny"]
    # An update is checked against the same table.
    r = client.patch("/v1/tenants/t1", json={"tier": "medium"}, headers=admin)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tier"], r.text


def test_without_shadowdb_tiers_the_defaults(client_for, admin):
    client = client_for("shadowdb_domain: db.example.test\n")
    r = client.post("/v1/tenants", json={"name": "t1", "tier": "large"}, headers=admin)
    assert r.status_code == 202, r.text
    assert tier_enum(client) == ["large", "medium", "small"]


def test_an_invalid_tier_table_is_the_deployments_fault(client_for, admin, catalog):
    client = client_for(tiers_yml({"tiny": {"memory_mb": 128}}))
    r = client.post("/v1/tenants", json={"name": "t1", "tier": "tiny"}, headers=admin)
    assert r.status_code == 503, r.text
    assert "tier table is invalid" in r.json()["detail"]
    assert catalog.tenants() == []
