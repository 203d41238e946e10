"""Unit tests for action_plugins/shadowdb_tenant_specs.py's pure parts: what tenant.yml's check
sets from the validated batch and the names taken on another host."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from shadowdb.errors import SpecError
from shadowdb.spec import shadowdb_check_tenants

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "shadowdb_tenant_specs_action", ROOT / "action_plugins" / "shadowdb_tenant_specs.py"
)
action = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(action)

PROXY = [{"host": "px1", "address": "10.0.0.5"}]


def check(*specs, strict=False):
    return shadowdb_check_tenants(list(specs), {}, None, None, standalone=True, strict=strict)


def test_a_batch_keeps_the_good_specs_and_names_each_refusal():
    checked = check({"name": "acme"}, {"tier": "small"}, {"name": "globex", "state": "absent"})
    facts = action.outcome(checked, {}, strict=False, proxies=PROXY)
    assert [spec["name"] for spec in facts["shadowdb_tenant_specs"]] == ["acme", "globex"]
    assert list(facts["shadowdb_batch_refused"]) == ["tenants[1]"]
    assert "name" in facts["shadowdb_batch_refused"]["tenants[1]"]
    # Proxy networks for the present tenants only; an open tenant needs no line of its own.
    assert facts["shadowdb_proxy_cidrs_of"] == {"acme": []}
    assert "shadowdb_tenant" not in facts


def test_a_name_taken_elsewhere_is_refused_with_the_host_that_has_it():
    results = [
        {"item": ["db2", "acme"], "stat": {"exists": True}},
        {"item": ["db2", "globex"], "stat": {"exists": False}},
        {"item": ["db3", "acme"], "stat": {"exists": True}},
    ]
    taken = action.found_elsewhere(results)
    assert taken == {"acme": "tenant.name: a tenant named 'acme' already exists on db2, db3"}
    facts = action.outcome(check({"name": "acme"}, {"name": "globex"}), taken, strict=False, proxies=[])
    assert [spec["name"] for spec in facts["shadowdb_tenant_specs"]] == ["globex"]
    assert facts["shadowdb_batch_refused"] == taken


def test_one_tenant_is_set_and_any_refusal_fails_it():
    facts = action.outcome(check({"name": "acme", "hba": ["192.0.2.0/24"]}), {}, strict=True, proxies=PROXY)
    assert facts["shadowdb_tenant"]["name"] == "acme"
    assert facts["shadowdb_proxy_cidrs_of"] == {"acme": ["10.0.0.5/32"]}
    taken = {"acme": "tenant.name: a tenant named 'acme' already exists on db2"}
    with pytest.raises(action.Refused, match="already exists on db2"):
        action.outcome(check({"name": "acme"}), taken, strict=True, proxies=[])


def test_no_tenant_left_fails_naming_every_refusal():
    with pytest.raises(action.Refused, match="tenant.name") as refused:
        checked = check({"name": "Bad"}, {"name": "acme"}, {"name": "acme"})
        action.outcome(checked, {}, strict=False, proxies=[])
    assert "given 2 times" in str(refused.value)
    with pytest.raises(action.Refused, match="no tenant given"):
        action.outcome([], {}, strict=False, proxies=[])


def test_a_restricted_tenant_needs_the_proxy_address():
    with pytest.raises(SpecError, match="address of proxy host px1 is unknown"):
        action.outcome(
            check({"name": "acme", "hba": ["192.0.2.0/24"]}), {}, strict=False, proxies=[{"host": "px1"}]
        )
