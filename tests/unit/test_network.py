"""The proxy networks a tenant's pg_hba admits (shadowdb/network.py)."""

import pytest

from shadowdb.errors import SpecError
from shadowdb.network import shadowdb_proxy_cidrs as cidrs

PROXIES = [{"host": "px1", "address": "10.0.5.10"}, {"host": "px2", "address": "10.0.5.11"}]


def test_an_open_tenant_needs_no_proxy_line():
    assert cidrs({"name": "acme", "hba": ["0.0.0.0/0"]}, PROXIES) == []


def test_a_restricted_tenant_admits_each_proxy_host():
    assert cidrs({"name": "acme", "hba": ["192.168.1.0/24"]}, PROXIES) == ["10.0.5.10/32", "10.0.5.11/32"]


def test_a_proxy_already_in_the_networks_gets_no_line_of_its_own():
    assert cidrs({"name": "acme", "hba": ["10.0.5.10/32"]}, PROXIES) == ["10.0.5.11/32"]


def test_given_networks_and_ipv6_addresses_are_kept_as_networks():
    proxies = [
        {"host": "shadowdb_proxy_addresses", "address": "10.0.6.0/28"},
        {"host": "px", "address": "fd00::5"},
    ]
    assert cidrs({"name": "acme", "hba": ["192.168.1.0/24"]}, proxies) == ["10.0.6.0/28", "fd00::5/128"]


def test_an_unknown_proxy_address_is_an_error_only_for_a_restricted_tenant():
    unknown = [{"host": "px1", "address": None}]
    assert cidrs({"name": "acme", "hba": ["0.0.0.0/0"]}, unknown) == []
    with pytest.raises(SpecError, match="tenant.hba: tenant acme .* proxy host px1 is unknown"):
        cidrs({"name": "acme", "hba": ["192.168.1.0/24"]}, unknown)


def test_a_bad_proxy_address_names_the_host():
    with pytest.raises(SpecError, match="address of proxy host px1: 'nope'"):
        cidrs({"name": "acme", "hba": ["192.168.1.0/24"]}, [{"host": "px1", "address": "nope"}])
