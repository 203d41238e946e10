"""The HTTP contract against a real catalog (PostgreSQL), the job engine off: auth, validation,
conflicts, limits, cancel, credentials delivery, metrics."""

import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from api import sealing
from api.backups import BackupsUnavailable
from api.catalog import migrate

from .conftest import bearer

SPEC = {"name": "acme", "tier": "small", "extensions": ["pgcrypto"]}


def create(client, headers, spec=None):
    return client.post("/v1/tenants", json=spec or SPEC, headers=headers)


def loc(response) -> list:
    return [tuple(e["loc"]) for e in response.json()["detail"]]


# --- health, docs, metrics ------------------------------------------------------------------


def test_healthz_and_openapi_need_no_token(client):
    assert client.get("/healthz").json()["status"] == "ok"
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/tenants", "/v1/tenants/{name}", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events"} <= set(
        paths
    )


def test_metrics(client, admin):
    create(client, admin)
    client.get("/v1/tenants", headers=admin)
    text = client.get("/metrics").text
    assert 'shadowdb_api_jobs{status="queued"} 1.0' in text
    assert 'shadowdb_api_tenants{state="creating"} 1.0' in text
    assert 'shadowdb_api_requests_total{method="GET",route="/v1/tenants",status="200"}' in text


# --- auth -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Basic dXNlcjpwdw=="},
        {"Authorization": "Bearer "},
    ],
)
def test_missing_or_wrong_token_is_401(client, headers):
    r = client.get("/v1/tenants", headers=headers)
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"


def test_read_token_reads_but_cannot_write(client, admin, reader):
    assert client.get("/v1/tenants", headers=reader).status_code == 200
    r = create(client, reader)
    assert r.status_code == 403 and "admin required" in r.json()["detail"]
    job = create(client, admin).json()
    assert client.get(f"/v1/jobs/{job['id']}", headers=reader).status_code == 200
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=reader).status_code == 403
    assert client.patch("/v1/tenants/acme", json={"tier": "medium"}, headers=reader).status_code == 403
    assert client.delete("/v1/tenants/acme?confirm=acme", headers=reader).status_code == 403


def test_revoked_token_is_401(client, catalog):
    token_id, token = catalog.create_token("short-lived", "admin")
    assert client.get("/v1/tenants", headers=bearer(token)).status_code == 200
    assert catalog.revoke_token(token_id)
    assert client.get("/v1/tenants", headers=bearer(token)).status_code == 401


def test_tokens_are_stored_hashed(catalog):
    _, token = catalog.create_token("x", "read")
    with catalog.conn() as conn:
        rows = conn.execute("SELECT * FROM api_tokens").fetchall()
    assert token not in json.dumps(rows, default=str)
    assert all(len(bytes(r["token_sha256"])) == 32 for r in rows)


# --- create ---------------------------------------------------------------------------------


def test_create_is_202_with_a_job(client, admin):
    r = create(client, admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert r.headers["location"] == f"/v1/jobs/{job['id']}"
    assert job["kind"] == "create" and job["status"] == "queued" and job["tenant"] == "acme"
    assert job["host"] in ("sdb-api-nohost-a", "sdb-api-nohost-b")
    tenant = client.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["state"] == "creating"
    assert tenant["spec"]["extensions"] == ["pgcrypto"] and tenant["spec"]["pg_version"] == 17
    assert tenant["last_job"]["id"] == job["id"]
    assert [t["name"] for t in client.get("/v1/tenants", headers=admin).json()["tenants"]] == ["acme"]


def test_duplicate_create_is_409(client, admin):
    assert create(client, admin).status_code == 202
    r = create(client, admin, {"name": "acme", "tier": "large"})
    assert r.status_code == 409 and "already exists" in r.json()["detail"]


def test_placement_spreads_tenants_over_hosts(client, admin, catalog):
    hosts = [create(client, admin, {"name": f"t{i}"}).json()["host"] for i in range(4)]
    assert sorted(hosts) == ["sdb-api-nohost-a"] * 2 + ["sdb-api-nohost-b"] * 2
    assert catalog.tenant_counts() == {"sdb-api-nohost-a": 2, "sdb-api-nohost-b": 2}


@pytest.mark.parametrize(
    ("body", "where", "words"),
    [
        ({"name": "Acme"}, ("body", "name"), "pattern"),
        ({"name": "1acme"}, ("body", "name"), "pattern"),
        ({"name": "a" * 17}, ("body", "name"), "at most 16"),
        ({"name": "acme", "tier": "huge"}, ("body", "tier"), "small"),
        ({"name": "acme", "pg_version": 9}, ("body", "pg_version"), "15"),
        ({"name": "acme", "extensions": ["plpython3u"]}, ("body", "extensions", 0), "pgcrypto"),
        ({"name": "acme", "colour": "blue"}, ("body", "colour"), "Extra inputs"),
        ({"name": "acme", "settings": {"port": 5433}}, ("body", "settings", "port"), "Extra inputs"),
        ({"name": "acme", "settings": {"work_mem": "lots"}}, ("body", "settings", "work_mem"), ""),
        ({"name": "acme", "settings": {"work_mem": 1}}, ("body", "settings", "work_mem"), ""),
        ({"name": "acme", "hba": ["10.0.0.1/8"]}, ("body", "hba"), "host bits set"),
        ({"name": "acme", "replicas": 1}, ("body", "replicas"), "high availability"),
        ({"name": "acme", "state": "absent"}, ("body", "state"), "Extra inputs"),
        ({"tier": "small"}, ("body", "name"), "required"),
    ],
)
def test_invalid_spec_is_422_naming_the_field(client, admin, body, where, words):
    r = create(client, admin, body)
    assert r.status_code == 422, r.text
    errors = r.json()["detail"]
    assert any(tuple(e["loc"][: len(where)]) == where for e in errors), errors
    assert any(words in e["msg"] for e in errors), errors
    assert client.get("/v1/tenants", headers=admin).json()["tenants"] == []


def test_rules_come_from_the_filter(client, admin):
    """A value the schema lets through but the playbooks' filter refuses is refused, with its message."""
    r = create(client, admin, {"name": "acme", "settings": {"shared_buffers": "64kB"}})
    assert r.status_code == 422
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "settings", "shared_buffers"]
    assert error["msg"] == "'64kB' is below the minimum of 128kB"


def test_malformed_json_is_422(client, admin):
    r = client.post(
        "/v1/tenants", content=b'{"name": "acme",', headers=admin | {"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"


def test_wrong_content_type_is_rejected(client, admin):
    r = client.post("/v1/tenants", content=json.dumps(SPEC), headers=admin | {"content-type": "text/plain"})
    assert r.status_code == 422


def test_oversized_body_is_413(client, admin):
    big = {"name": "acme", "settings": {"search_path": "x" * 1000}, "hba": ["10.0.0.0/8"] * 64}
    body = json.dumps(big | {"padding": "y" * 20000})
    r = client.post("/v1/tenants", content=body, headers=admin | {"content-type": "application/json"})
    assert r.status_code == 413
    assert client.get("/v1/tenants", headers=admin).json()["tenants"] == []


def test_queue_bound_is_429(client, admin, catalog):
    for i in range(20):  # max_queued in these tests
        assert create(client, admin, {"name": f"q{i}"}).status_code == 202
    r = create(client, admin, {"name": "q20"})
    assert r.status_code == 429 and r.headers["retry-after"]
    assert catalog.job_counts() == {"queued": 20}


# --- patch / delete -------------------------------------------------------------------------


def finish(catalog, job_id, status="succeeded", endpoint=None):
    """Settle a job as the engine would (the engine is off in these tests)."""
    from api.catalog import _settle_tenant, add_event

    with catalog.conn() as conn, conn.transaction():
        result = {
            "endpoint": endpoint
            or {
                "host": "acme.db.shadowdb.test",
                "address": "10.1.2.3",
                "port": 21000,
                "dbname": "acme",
                "user": "acme",
                "readonly_user": None,
            }
        }
        job = conn.execute(
            "UPDATE jobs SET status = %s, started_at = now(), finished_at = now(), result = %s WHERE id = %s"
            " RETURNING *",
            (status, json.dumps(result), job_id),
        ).fetchone()
        _settle_tenant(conn, job)
        add_event(conn, job_id, "job", {"status": status})
    return job


def test_unfinished_job_blocks_patch_and_delete_409(client, admin):
    create(client, admin)
    r = client.patch("/v1/tenants/acme", json={"tier": "medium"}, headers=admin)
    assert r.status_code == 409 and "queued or running" in r.json()["detail"]
    r = client.delete("/v1/tenants/acme?confirm=acme", headers=admin)
    assert r.status_code == 409


def test_patch_after_create(client, admin, catalog):
    job = create(client, admin).json()
    finish(catalog, job["id"])
    tenant = client.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["state"] == "ready"
    assert tenant["endpoints"]["direct"]["conninfo"] == (
        "host=acme.db.shadowdb.test port=21000 dbname=acme user=acme sslmode=verify-full hostaddr=10.1.2.3"
    )
    r = client.patch(
        "/v1/tenants/acme", json={"tier": "medium", "settings": {"work_mem": "8MB"}}, headers=admin
    )
    assert r.status_code == 202, r.text
    patch_job = catalog.job(r.json()["id"])
    assert patch_job["spec"]["tier"] == "medium" and patch_job["spec"]["settings"] == {"work_mem": "8MB"}
    assert patch_job["spec"]["extensions"] == ["pgcrypto"]
    assert client.get("/v1/tenants/acme", headers=admin).json()["state"] == "updating"
    finish(catalog, r.json()["id"])
    tenant = client.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["state"] == "ready" and tenant["spec"]["tier"] == "medium"


def test_patch_validation(client, admin, catalog):
    finish(catalog, create(client, admin, SPEC | {"tier": "medium"}).json()["id"])
    r = client.patch("/v1/tenants/acme", json={}, headers=admin)
    assert r.status_code == 422 and "nothing to change" in r.text
    r = client.patch("/v1/tenants/acme", json={"tier": "small"}, headers=admin)
    assert r.status_code == 422 and loc(r) == [("body", "tier")] and "do not shrink" in r.text
    r = client.patch("/v1/tenants/acme", json={"name": "other"}, headers=admin)
    assert r.status_code == 422 and loc(r) == [("body", "name")]
    r = client.patch("/v1/tenants/acme", json={"settings": {"timezone": "it's"}}, headers=admin)
    assert r.status_code == 422
    assert client.patch("/v1/tenants/ghost", json={"tier": "large"}, headers=admin).status_code == 404


def test_delete_needs_confirmation(client, admin, catalog):
    finish(catalog, create(client, admin).json()["id"])
    for query in ("", "?confirm=", "?confirm=acm"):
        r = client.delete(f"/v1/tenants/acme{query}", headers=admin)
        assert r.status_code == 422 and loc(r) == [("query", "confirm")], r.text
    r = client.delete("/v1/tenants/acme?confirm=acme", headers=admin)
    assert r.status_code == 202 and r.json()["kind"] == "delete"
    assert client.get("/v1/tenants/acme", headers=admin).json()["state"] == "deleting"
    finish(catalog, r.json()["id"])
    assert client.get("/v1/tenants/acme", headers=admin).status_code == 404
    assert create(client, admin).status_code == 202  # the name is free again


def test_delete_unknown_tenant_is_404(client, admin):
    assert client.delete("/v1/tenants/ghost?confirm=ghost", headers=admin).status_code == 404
    assert client.get("/v1/tenants/ghost", headers=admin).status_code == 404
    assert client.get("/v1/tenants/NOT_A_NAME", headers=admin).status_code == 422


# --- jobs -----------------------------------------------------------------------------------


def test_unknown_job_is_404(client, admin):
    assert client.get("/v1/jobs/00000000-0000-4000-8000-000000000000", headers=admin).status_code == 404
    assert client.get("/v1/jobs/not-a-uuid", headers=admin).status_code == 422


def test_cancel_queued_create_forgets_the_tenant(client, admin):
    job = create(client, admin).json()
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    assert client.get("/v1/tenants/acme", headers=admin).status_code == 404
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 409 and "already cancelled" in r.json()["detail"]


def test_cancel_finished_job_is_409(client, admin, catalog):
    job = create(client, admin).json()
    finish(catalog, job["id"])
    r = client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin)
    assert r.status_code == 409 and "already succeeded" in r.json()["detail"]


def test_cancel_queued_update_restores_the_state(client, admin, catalog):
    finish(catalog, create(client, admin).json()["id"])
    job = client.patch("/v1/tenants/acme", json={"tier": "large"}, headers=admin).json()
    assert client.post(f"/v1/jobs/{job['id']}/cancel", headers=admin).status_code == 202
    tenant = client.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["state"] == "ready" and tenant["spec"]["tier"] == "small"


def test_events_stream_replays_and_ends(client, admin, catalog):
    job = create(client, admin).json()
    finish(catalog, job["id"])
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=admin) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        body = "".join(r.iter_text())
    assert "event: job" in body and '"status":"succeeded"' in body.replace(" ", "")
    assert body.rstrip().splitlines()[-1].startswith("data:")
    assert "event: end" in body
    # Resume after the last event: only the end marker is left.
    with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=admin | {"Last-Event-ID": "1"}) as r:
        rest = "".join(r.iter_text())
    assert "event: job" not in rest and "event: end" in rest


def test_credentials_once_and_only_to_the_creator(client, catalog, admin):
    """The sealed box opens only with the creating token, once; the catalog never holds clear text."""
    other_id, other = catalog.create_token("other-admin", "admin")
    job = create(client, admin).json()
    row = catalog.job(job["id"])
    assert row["public_key"] and row["wrapped_key"]
    secret = {"password": "s3cret-owner-pw", "readonly_password": None}
    box = sealing.seal(bytes(row["public_key"]), secret)
    with catalog.conn() as conn:
        conn.execute("UPDATE jobs SET sealed_credentials = %s WHERE id = %s", (box, job["id"]))
    finish(catalog, job["id"])
    with catalog.conn() as conn:
        dump = json.dumps(conn.execute("SELECT * FROM jobs").fetchall(), default=str)
        dump += json.dumps(conn.execute("SELECT * FROM job_events").fetchall(), default=str)
    assert "s3cret-owner-pw" not in dump

    seen_by_other = client.get(f"/v1/jobs/{job['id']}", headers=bearer(other)).json()
    assert seen_by_other["credentials"] is None and seen_by_other["credentials_pending"] is True
    first = client.get(f"/v1/jobs/{job['id']}", headers=admin).json()
    assert first["credentials"] == {
        "user": "acme",
        "password": "s3cret-owner-pw",
        "readonly_user": None,
        "readonly_password": None,
    }
    second = client.get(f"/v1/jobs/{job['id']}", headers=admin).json()
    assert second["credentials"] is None and second["credentials_pending"] is False
    row = catalog.job(job["id"])
    assert (
        row["sealed_credentials"] is None and row["wrapped_key"] is None and row["credentials_delivered_at"]
    )


def test_migrations_are_idempotent(devdb, catalog):
    assert migrate(devdb.url) == []
    with catalog.conn() as conn:
        versions = [r["version"] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]
    ours = [v for v in versions if not v.startswith("procrastinate/")]
    assert ours == [
        "0001_catalog",
        "0002_routing_step",
        "0003_ha_jobs",
        "0004_write_scope",
        "0005_procrastinate",
        "0006_job_hosts",
        "0007_drift",
        "0008_backups",
        "0009_backup_jobs",
        "0010_guard_in_host_step",
    ]
    # procrastinate's schema, and every migration file of the pinned version marked as in it
    from procrastinate.schema import migrations_path

    shipped = {f"procrastinate/{p.stem}" for p in Path(migrations_path).glob("*.sql")}
    assert set(versions) - set(ours) == shipped | {"procrastinate/schema"}


# --- clones ---------------------------------------------------------------------------------


def test_a_clone_is_created_from_a_tenant_of_the_catalog(client, admin):
    assert create(client, admin).status_code == 202
    r = create(
        client, admin, {"name": "copy", "source": {"tenant": "acme", "time": "2026-12-02 10:00:00+00"}}
    )
    assert r.status_code == 202, r.text
    spec = client.get("/v1/tenants/copy", headers=admin).json()["spec"]
    assert spec["source"] == {"tenant": "acme", "time": "2026-12-02 10:00:00+00"}
    # A removed tenant made again from its own backups: its name is its source.
    again = create(client, admin, {"name": "gone", "source": {"tenant": "gone", "latest": True}})
    assert again.status_code == 202, again.text


@pytest.mark.parametrize(
    ("source", "replicas", "words"),
    [
        ({"tenant": "nobody", "latest": True}, 0, "no tenant 'nobody' to clone from"),
        ({"tenant": "acme", "latest": True}, 1, "a clone is made standalone"),
        ({"tenant": "acme"}, 0, "exactly one of time, lsn, latest"),
        ({"tenant": "acme", "time": "x", "lsn": "0/1"}, 0, "exactly one of time, lsn, latest"),
    ],
)
def test_a_bad_clone_is_refused(client, admin, source, replicas, words):
    assert create(client, admin).status_code == 202
    r = create(client, admin, {"name": "copy", "source": source, "replicas": replicas})
    assert r.status_code == 422, r.text
    assert words in r.text


# --- backups and restores -------------------------------------------------------------------


@pytest.fixture
def ready_acme(client, admin, catalog, monkeypatch):
    """acme, ready, in a deployment whose inventory gives it backups (the engine is off)."""
    assert create(client, admin).status_code == 202
    with catalog.conn() as conn:
        conn.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE tenant = 'acme'")
        conn.execute("UPDATE tenants SET state = 'ready' WHERE name = 'acme'")
    monkeypatch.setattr(client.app.state.inventory, "backups", lambda spec: True)
    return "acme"


def test_a_backup_is_a_job_of_its_own_that_keeps_the_tenant(client, admin, ready_acme):
    r = client.post("/v1/tenants/acme/backups", json={"type": "diff"}, headers=admin)
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["kind"] == "backup" and job["status"] == "queued"
    tenant = client.get("/v1/tenants/acme", headers=admin).json()
    assert tenant["last_job"]["id"] == job["id"] and tenant["spec"]["tier"] == "small"
    again = client.post("/v1/tenants/acme/backups", headers=admin)
    assert again.status_code == 409 and "a backup needs it ready" in again.json()["detail"]


def test_a_restore_needs_the_name_confirmed_and_a_target(client, admin, ready_acme, monkeypatch):
    url = "/v1/tenants/acme/restore"
    r = client.post(url, json={"target": {"latest": True}, "confirm": "other"}, headers=admin)
    assert r.status_code == 422 and "confirm with 'acme'" in r.text
    for target, words in (
        ({"when": "now"}, "is not a restore target"),
        ({"time": "yesterday"}, "is not a time with a zone"),
        ({"lsn": "x"}, "is not an LSN"),
        ({"latest": False}, "only true"),
    ):
        r = client.post(url, json={"target": target, "confirm": "acme"}, headers=admin)
        assert r.status_code == 422 and words in r.text, (target, r.text)
    # Checked against the backups (read on the repository) before a job is queued.
    first_stop = int(time.time()) - 7200
    summary = {"backups": [{"label": "x", "type": "full", "start": first_stop - 5, "stop": first_stop}]}
    monkeypatch.setattr("api.app.read_backups", lambda settings, name: summary)

    def at(epoch):
        return datetime.fromtimestamp(epoch, UTC).isoformat(sep=" ")

    for when, words in (
        (at(first_stop - 60), "before the end of the first backup"),
        (at(first_stop + 10**6), "in the future"),
    ):
        r = client.post(url, json={"target": {"time": when}, "confirm": "acme"}, headers=admin)
        assert r.status_code == 422 and words in r.text, r.text
    r = client.post(url, json={"target": {"time": at(first_stop + 60)}, "confirm": "acme"}, headers=admin)
    assert r.status_code == 202 and r.json()["kind"] == "restore", r.text


def test_a_restore_when_the_repository_cannot_be_read_is_a_502(client, admin, ready_acme, monkeypatch):
    def unreachable(settings, name):
        raise BackupsUnavailable("the repository host is unreachable")

    monkeypatch.setattr("api.app.read_backups", unreachable)
    r = client.post(
        "/v1/tenants/acme/restore", json={"target": {"latest": True}, "confirm": "acme"}, headers=admin
    )
    assert r.status_code == 502 and "unreachable" in r.text
    assert client.get("/v1/tenants/acme/backups", headers=admin).status_code == 502


def test_backups_are_refused_for_a_tenant_without_them(client, admin, ready_acme, monkeypatch, reader):
    monkeypatch.setattr(client.app.state.inventory, "backups", lambda spec: False)
    for method, url, body in (
        ("post", "/v1/tenants/acme/backups", None),
        ("post", "/v1/tenants/acme/restore", {"target": {"latest": True}, "confirm": "acme"}),
        ("get", "/v1/tenants/acme/backups", None),
    ):
        r = client.request(method, url, json=body, headers=admin)
        assert r.status_code == 422 and "has no backups" in r.text, (url, r.text)
    assert client.post("/v1/tenants/nobody/backups", headers=admin).status_code == 404
    assert client.post("/v1/tenants/acme/backups", headers=reader).status_code == 403


def test_an_ha_tenant_is_backed_up_and_restored_through_the_api(
    client, admin, ready_acme, catalog, monkeypatch
):
    with catalog.conn() as conn:
        conn.execute("""UPDATE tenants SET spec = spec || '{"replicas": 1}' WHERE name = 'acme'""")
    r = client.post("/v1/tenants/acme/backups", headers=admin)
    assert r.status_code == 202 and r.json()["kind"] == "backup", r.text
    with catalog.conn() as conn:
        conn.execute("UPDATE jobs SET status = 'succeeded', finished_at = now() WHERE tenant = 'acme'")
        conn.execute("UPDATE tenants SET state = 'ready' WHERE name = 'acme'")
    summary = {"backups": [{"label": "x", "type": "full", "start": 1, "stop": 2}]}
    monkeypatch.setattr("api.app.read_backups", lambda settings, name: summary)
    r = client.post(
        "/v1/tenants/acme/restore", json={"target": {"latest": True}, "confirm": "acme"}, headers=admin
    )
    assert r.status_code == 202 and r.json()["kind"] == "restore", r.text


def test_one_event_for_every_job_of_a_batch_keeps_each_jobs_sequence(client, admin, catalog):
    """A batch's run writes each event to every job of the batch in one statement; each job's
    sequence numbers stay its own and gap-free, and its stream reads them in order."""
    from api.catalog import add_event, add_events

    first = create(client, admin, {"name": "acme"}).json()["id"]
    second = create(client, admin, {"name": "globex"}).json()["id"]
    before = {job: len(catalog.events(job)) for job in (first, second)}
    with catalog.conn() as conn:
        add_event(conn, first, "play", {"name": "only the first"})
        add_events(conn, [first, second], "task", {"name": "both"})
        add_events(conn, [second, second], "task", {"name": "a repeated job gets it once"})
    events = {job: catalog.events(job)[before[job] :] for job in (first, second)}
    assert [(e["seq"], e["data"]["name"]) for e in events[first]] == [
        (before[first] + 1, "only the first"),
        (before[first] + 2, "both"),
    ]
    assert [(e["seq"], e["data"]["name"]) for e in events[second]] == [
        (before[second] + 1, "both"),
        (before[second] + 2, "a repeated job gets it once"),
    ]


def test_a_stream_is_woken_by_its_jobs_new_event(client, admin, catalog, monkeypatch):
    """An event stream waits for the catalog's notification of its job's next event (written by
    another connection here, as a worker on another machine would) and looks on its own only
    every _EVENT_FALLBACK seconds: with that set to a minute, the events still arrive at once."""
    import threading

    import api.app
    from api.catalog import add_event

    monkeypatch.setattr(api.app, "_EVENT_FALLBACK", 60)
    job = create(client, admin).json()  # the engine is off: the job stays queued, its stream open

    def elsewhere():
        with catalog.conn() as conn:
            add_event(conn, job["id"], "play", {"name": "from another process"})
        time.sleep(0.5)
        finish(catalog, job["id"])  # its last event, with the job's end

    started = time.monotonic()
    timer = threading.Timer(1.0, elsewhere)
    timer.start()
    try:
        with client.stream("GET", f"/v1/jobs/{job['id']}/events", headers=admin) as r:
            body = "".join(r.iter_text())
    finally:
        timer.join()
    assert "from another process" in body and "event: end" in body, body
    assert time.monotonic() - started < 30, "the stream waited for its fallback, not for the notification"
