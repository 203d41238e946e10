"""One HA lab (3 db hosts + an etcd/HAProxy host, tests/ha/halab.py) shared by every tests/ha
module: it is brought up and converged once per session, and each module works on tenants of
its own names and removes them. Its network is a free /24 chosen when
the lab starts (tests/ha/halab.py); SHADOWDB_HA_NET (first three octets of a /24) fixes it."""

import os

import pytest

from tests.ha import halab


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    net = os.environ.get("SHADOWDB_HA_NET")
    with halab.converged("hatest", tmp_path_factory.mktemp("hatest"), net=net) as lab:
        yield lab
