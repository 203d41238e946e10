"""High availability through the API, end to end on the HA lab of tests/ha/conftest.py (3 db hosts
+ an etcd/HAProxy host, shared with the other tests/ha modules): the API as a real process with a
real catalog runs the real playbooks. One tenant, with backups: created standalone -> PATCH
replicas 1 (converted in place by tenant_ha.yml) -> connected through HAProxy by SNI with the
credentials returned once (`<t>` to the leader, `<t>-ro` to the replica) -> rows written -> a
backup and a restore to a time through the API (tenant_restore.yml) -> PATCH replicas 0
(back to standalone) -> rows still there -> DELETE -> nothing left on any host, in the registry,
the DCS or HAProxy. The password is in no runner artifact, catalog row or API log line.

    pytest tests/ha -q -k api   (the lab, site.yml and four jobs: ~12-25 minutes)

SHADOWDB_API_HA_FULL=1 adds a second tenant on the same lab, HA from its creation (credentials
sealed from tenant_ha.yml's passwords) and removed as HA (tenant_ha.yml, state absent).
"""

import json
import os
import time

import httpx
import psycopg
import pytest

from api.catalog import Catalog, migrate
from api.devdb import DevDB
from tests.api.conftest import Server, bearer, server_env
from tests.api.test_e2e_lab import connect, follow, succeeded
from tests.ha import hakit
from tests.ha.hakit import ETCDCTL

pytestmark = pytest.mark.lab

TENANT = "hapi"


@pytest.fixture(scope="module")
def catalog_url():
    db = DevDB.start()
    migrate(db.url)
    yield db.url
    db.stop()


@pytest.fixture(scope="module")
def api(lab, catalog_url, tmp_path_factory):
    work = tmp_path_factory.mktemp("haapi-work")
    env = server_env(
        {
            "database_url": catalog_url,
            "inventory": lab.inventory_dir,
            "work_dir": work,
            "keep_artifacts": "true",  # kept so that this test can search them for secrets
            "poll_interval": 0.2,
            "sni_port": hakit.SNI_PORT,
            "max_replicas": 2,
        }
    )
    server = Server(env, tmp_path_factory.mktemp("haapi-log") / "api.log").start()
    server.work_dir = work
    yield server
    server.stop()


@pytest.fixture(scope="module")
def token(catalog_url):
    catalog = Catalog(catalog_url, max_size=2)
    catalog.open()
    try:
        return catalog.create_token("haapi", "admin")[1]
    finally:
        catalog.close()


def run(api, token, method: str, path: str, **kwargs) -> dict:
    """A write request, its job followed to the end; the job as GET returns it (once: credentials)."""
    r = httpx.request(method, f"{api.url}{path}", headers=bearer(token), timeout=30, **kwargs)
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    events = follow(api, token, job_id, timeout=1800)
    succeeded(api, token, job_id, events)
    job = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=bearer(token)).json()
    job["events"] = events
    return job


def tenant(api, token) -> dict:
    return httpx.get(f"{api.url}/v1/tenants/{TENANT}", headers=bearer(token)).json()


def query(lab, endpoint: dict, password: str, sql: str):
    with connect(lab, endpoint, password, lab.proxy[1]) as conn:
        cursor = conn.execute(sql)
        return cursor.fetchone() if cursor.description else None


def leftovers(host: str, name: str = TENANT) -> str:
    checks = (
        f"systemctl list-units --all --plain --no-legend 'shadowdb-*@{name}*' | grep -v not-found;"
        f"ls -d /etc/systemd/system/shadowdb-*@{name}.service.d /etc/patroni/{name}.yml"
        f" /etc/shadowdb/tenants/{name} /etc/shadowdb/volumes/{name}.env"
        f" /var/lib/shadowdb/volumes/{name}.img /var/lib/shadowdb/converged/{name}.json;"
        f"findmnt -n /mnt/db/{name}; getent passwd pg-{name};"
        f"grep -h '\"{name}\"' /var/lib/shadowdb/ports/*.json"
    )
    return hakit.sh(host, f"{{ {checks}; }} 2>/dev/null; true").strip()


def test_standalone_to_ha_and_back_through_the_api(lab, api, token, catalog_url):
    h = bearer(token)
    proxy = lab.proxy[0]
    timings = {}

    # --- create standalone: one host step (the create guard, then tenant.yml, which routes) ---
    t0 = time.monotonic()
    job = run(api, token, "POST", "/v1/tenants", json={"name": TENANT, "tier": "small", "backup": True})
    timings["create"] = time.monotonic() - t0
    assert [d["step"] for k, d in job["events"] if k == "step"][::2] == ["host"]
    creds = job["credentials"]
    assert creds and creds["user"] == TENANT and len(creds["password"]) >= 20
    password = creds["password"]
    t = tenant(api, token)
    assert not t["ha"] and t["endpoints"]["sni_ro"] is None and t["endpoints"]["direct"]
    first_host = t["host"]
    query(lab, t["endpoints"]["sni"], password, "CREATE TABLE api_rows (id int PRIMARY KEY)")
    query(lab, t["endpoints"]["sni"], password, "INSERT INTO api_rows SELECT generate_series(1, 50)")

    # --- too many replicas: 422 before any job ---
    r = httpx.patch(f"{api.url}/v1/tenants/{TENANT}", json={"replicas": 3}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "replicas"], r.text

    # --- replicas 1: converted in place by tenant_ha.yml, one exclusive step ---
    t0 = time.monotonic()
    job = run(api, token, "PATCH", f"/v1/tenants/{TENANT}", json={"replicas": 1})
    timings["to_ha"] = time.monotonic() - t0
    assert [d["step"] for k, d in job["events"] if k == "step"] == ["ha", "ha"]
    t = tenant(api, token)
    assert t["ha"] and t["state"] == "ready" and t["spec"]["replicas"] == 1, t
    roles = {m["host"]: m["role"] for m in t["members"]}
    assert sorted(roles.values()) == ["primary", "replica"] and len(roles) == 2, t["members"]
    assert roles[first_host] == "primary"  # the standalone host leads on the same data
    assert all(m["port"] and m["api_port"] for m in t["members"])
    eps = t["endpoints"]
    assert eps["direct"] is None and eps["proxy"]["port"]
    assert eps["sni"]["host"] == f"{TENANT}.{hakit.DOMAIN}"
    assert eps["sni_ro"]["host"] == f"{TENANT}-ro.{hakit.DOMAIN}" and eps["sni_ro"]["port"] == hakit.SNI_PORT

    # rw through SNI reaches the leader with the credentials returned at creation; ro a replica.
    assert query(lab, eps["sni"], password, "SELECT count(*) FROM api_rows") == (50,)
    assert query(lab, eps["sni"], password, "SELECT pg_is_in_recovery()") == (False,)
    query(lab, eps["sni"], password, "INSERT INTO api_rows SELECT generate_series(51, 60)")
    assert query(lab, eps["proxy"], password, "SELECT count(*) FROM api_rows") == (60,)
    replica = hakit.wait_for(
        "the -ro route to serve the rows",
        lambda: (
            query(lab, eps["sni_ro"], password, "SELECT pg_is_in_recovery(), count(*) FROM api_rows")
            == (True, 60)
        ),
        timeout=30,
    )
    assert replica is not None
    record = json.loads(hakit.sh(proxy, f"{ETCDCTL} get --print-value-only /shadowdb/tenants/{TENANT}"))
    assert sorted(m["host"] for m in record["members"]) == sorted(roles)

    # --- HA backups through the API: a backup on demand, then a restore to a time T (exclusive:
    # a new Patroni cluster on the same hosts with the rows of T, its replica rebuilt) ---
    job = run(api, token, "POST", f"/v1/tenants/{TENANT}/backups", json={"type": "full"})
    assert job["result"]["backups"]["backups"][-1]["type"] == "full", job["result"]
    target = query(lab, eps["sni"], password, "SELECT now()")[0].isoformat(sep=" ")
    query(lab, eps["sni"], password, "SELECT pg_sleep(1.1)")
    query(lab, eps["sni"], password, "INSERT INTO api_rows SELECT generate_series(61, 70)")
    t0 = time.monotonic()
    r = httpx.post(
        f"{api.url}/v1/tenants/{TENANT}/restore",
        json={"target": {"time": target}, "confirm": TENANT},
        headers=h,
        timeout=180,  # the target is checked against the repository's backups before the job
    )
    assert r.status_code == 202 and r.json()["kind"] == "restore", r.text
    events = follow(api, token, r.json()["id"], timeout=1800)
    succeeded(api, token, r.json()["id"], events)
    timings["restore"] = time.monotonic() - t0
    assert [d["step"] for k, d in events if k == "step"] == ["ha", "ha"]
    hakit.wait_for(
        "the restored leader to serve the rows of T",
        lambda: query(lab, eps["sni"], password, "SELECT count(*), max(id) FROM api_rows") == (60, 60),
        timeout=120,
    )
    hakit.wait_for(
        "the rebuilt replica to serve them",
        lambda: (
            query(lab, eps["sni_ro"], password, "SELECT pg_is_in_recovery(), count(*) FROM api_rows")
            == (True, 60)
        ),
        timeout=120,
    )
    t = tenant(api, token)
    assert t["state"] == "ready" and {m["host"]: m["role"] for m in t["members"]} == roles, t

    # --- replicas 0: back to standalone on the leader's host, rows kept ---
    t0 = time.monotonic()
    run(api, token, "PATCH", f"/v1/tenants/{TENANT}", json={"replicas": 0})
    timings["to_standalone"] = time.monotonic() - t0
    t = tenant(api, token)
    assert not t["ha"] and t["host"] == first_host and t["endpoints"]["sni_ro"] is None, t
    assert t["members"] == [
        {"host": first_host, "role": "primary", "address": None, "port": None, "api_port": None}
    ]
    assert query(
        lab, t["endpoints"]["sni"], password, "SELECT count(*), pg_is_in_recovery() FROM api_rows"
    ) == (
        60,
        False,
    )
    replica_host = next(host for host in roles if host != first_host)
    assert leftovers(replica_host) == ""

    # --- the password is nowhere: artifacts, catalog, API log ---
    for path in api.work_dir.rglob("*"):
        if path.is_file():
            assert password not in path.read_text(errors="replace"), f"the password is in {path}"
    assert any(api.work_dir.rglob("job_events/*.json"))
    with psycopg.connect(catalog_url) as conn:
        for table in ("jobs", "job_events", "tenants", "api_tokens"):
            dump = json.dumps(conn.execute(f"SELECT * FROM {table}").fetchall(), default=str)  # noqa: S608
            assert password not in dump, f"the password is in the catalog table {table}"
    assert password not in api.log.read_text()

    # --- delete (standalone again: tenant_remove.yml's path): nothing left anywhere ---
    t0 = time.monotonic()
    run(api, token, "DELETE", f"/v1/tenants/{TENANT}", params={"confirm": TENANT})
    timings["delete"] = time.monotonic() - t0
    assert httpx.get(f"{api.url}/v1/tenants/{TENANT}", headers=h).status_code == 404
    for host in lab.db:
        assert leftovers(host) == "", host
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/tenants/{TENANT}").strip() == ""
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/patroni/{TENANT}/").strip() == ""
    assert hakit.sh(proxy, f"ls /etc/haproxy/conf.d/{TENANT}.cfg 2>/dev/null; true").strip() == ""
    assert f"{TENANT}." not in hakit.sh(proxy, "cat /etc/haproxy/maps/sni.map")
    assert hakit.sh(proxy, f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/*.json; true").strip() == ""
    print("\nAPI HA round trip (s): " + ", ".join(f"{k} {v:.1f}" for k, v in timings.items()))


@pytest.mark.skipif(
    os.environ.get("SHADOWDB_API_HA_FULL") != "1",
    reason="a second tenant (HA from its creation, removed as HA): SHADOWDB_API_HA_FULL=1",
)
def test_ha_create_and_delete_through_the_api(lab, api, token):
    """Created with replicas 1 (credentials sealed from tenant_ha.yml's passwords, returned once),
    reachable by <t> and <t>-ro, removed by tenant_ha.yml (state absent + confirm): nothing left."""
    name, proxy = "hapi2", lab.proxy[0]
    job = run(api, token, "POST", "/v1/tenants", json={"name": name, "replicas": 1, "readonly_role": True})
    assert [d["step"] for k, d in job["events"] if k == "step"] == ["ha", "ha"]
    creds = job["credentials"]
    assert creds and creds["user"] == name and creds["readonly_user"] == f"{name}_ro", job
    t = httpx.get(f"{api.url}/v1/tenants/{name}", headers=bearer(token)).json()
    assert t["ha"] and sorted(m["role"] for m in t["members"]) == ["primary", "replica"], t
    assert len({m["host"] for m in t["members"]}) == 2
    eps = t["endpoints"]
    assert query(lab, eps["sni"], creds["password"], "SELECT pg_is_in_recovery()") == (False,)
    assert hakit.wait_for(
        "the -ro route",
        lambda: query(lab, eps["sni_ro"], creds["password"], "SELECT pg_is_in_recovery()") == (True,),
        timeout=30,
    )
    ro = eps["sni_ro"] | {"user": creds["readonly_user"]}
    assert query(lab, ro, creds["readonly_password"], "SELECT current_user") == (f"{name}_ro",)

    job = run(api, token, "DELETE", f"/v1/tenants/{name}", params={"confirm": name})
    assert [d["step"] for k, d in job["events"] if k == "step"] == ["ha", "ha"]
    assert httpx.get(f"{api.url}/v1/tenants/{name}", headers=bearer(token)).status_code == 404
    for host in lab.db:
        assert leftovers(host, name) == "", host
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/tenants/{name}").strip() == ""
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/patroni/{name}/").strip() == ""
    assert hakit.sh(proxy, f"ls /etc/haproxy/conf.d/{name}.cfg 2>/dev/null; true").strip() == ""
