"""Schemathesis against the OpenAPI spec of a running API (real process, real catalog, engine off).

Every operation gets generated requests, valid and invalid; responses must match the spec (status
codes, schemas, content types) and no request may cause a server error. The SSE endpoint is left
out: a stream of a queued job (the engine is off) stays open by design.
"""

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from api.app import create_app
from api.settings import Settings

from .conftest import Server, bearer, server_env, truncate


@pytest.fixture(scope="module")
def contract_server(devdb, fake_inventory, tmp_path_factory):
    truncate(devdb.url)
    env = server_env(
        {
            "database_url": devdb.url,
            "inventory": fake_inventory,
            "work_dir": tmp_path_factory.mktemp("contract-work"),
            "engine": "false",
            "max_queued": 100000,
        }
    )
    server = Server(env, tmp_path_factory.mktemp("contract-log") / "api.log").start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def contract_token(devdb, contract_server):
    from api.catalog import Catalog

    catalog = Catalog(devdb.url, max_size=2)
    catalog.open()
    try:
        return catalog.create_token("schemathesis", "admin")[1]
    finally:
        catalog.close()


@pytest.fixture(scope="module")
def api_schema(contract_server):
    return schemathesis.openapi.from_url(f"{contract_server.url}/openapi.json")


def _operations() -> list[tuple[str, str]]:
    """(method, path) of every operation, from the app's own spec (no server needed to collect)."""
    spec = create_app(Settings(database_url="postgresql://collect-only")).openapi()
    return sorted(
        (method.upper(), path)
        for path, item in spec["paths"].items()
        for method in item
        if path != "/v1/jobs/{job_id}/events"
    )


# Spec-level rules the schema cannot express (a CIDR's host bits, a size beyond a setting's
# maximum, the delete confirmation matching the name) are checked by the tenant rules after the
# schema; such a schema-valid request gets a 422 naming the field. For the write operations,
# schemathesis' "valid data must be accepted" check is replaced by this stricter one: a
# schema-valid request may only be refused by those rules, with one error naming a field.
SEMANTIC_422 = {"value_error.spec", "value_error"}


@schemathesis.check
def rejected_only_by_the_rules(ctx, response, case):
    if case.meta is None or not case.meta.generation.mode.is_positive or response.status_code != 422:
        return None
    errors = response.json()["detail"]
    assert len(errors) == 1 and errors[0]["type"] in SEMANTIC_422 and len(errors[0]["loc"]) >= 1, errors
    return None


@pytest.mark.parametrize(("method", "path"), _operations())
def test_api_contract(api_schema, contract_token, method, path):
    operation = api_schema[path][method]
    write = method in ("POST", "PATCH", "DELETE") and path.startswith("/v1/tenants")
    options = {}
    if write:
        options = {
            "excluded_checks": [positive_data_acceptance],
            "additional_checks": [rejected_only_by_the_rules],
        }

    @given(case=operation.as_strategy())
    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def check(case):
        case.call_and_validate(headers=bearer(contract_token), timeout=30, **options)

    check()


# --- bad requests against the real server (uvicorn, not the test client) ----------------------


def test_the_server_refuses_bad_bodies(contract_server, contract_token):
    url, h = f"{contract_server.url}/v1/tenants", bearer(contract_token)
    json_h = h | {"content-type": "application/json"}
    r = httpx.post(url, content=b'{"name": "badjson",', headers=json_h)
    assert r.status_code == 422 and r.json()["detail"][0]["type"] == "json_invalid"
    r = httpx.post(url, json={"name": "unknown", "colour": "blue"}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "colour"]
    r = httpx.post(url, json={"name": "badtier", "tier": "huge"}, headers=h)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "tier"]
    big = b'{"name": "big", "padding": "' + b"y" * (256 * 1024) + b'"}'
    assert httpx.post(url, content=big, headers=json_h).status_code == 413
    chunks = (big[i : i + 4096] for i in range(0, len(big), 4096))  # no Content-Length: chunked
    assert httpx.post(url, content=chunks, headers=json_h).status_code == 413
    r = httpx.post(url, json={"name": "notoken"})
    assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
    assert httpx.post(url, json={"name": "badtoken"}, headers=bearer("sdb_wrong")).status_code == 401
    listed = httpx.get(url, headers=h).json()["tenants"]
    assert not {"badjson", "unknown", "badtier", "big", "notoken", "badtoken"} & {t["name"] for t in listed}
