"""One HA lab (3 db hosts + an etcd/HAProxy host, tests/ha/halab.py) shared by every tests/ha
module: it is brought up and converged once per session, and each module works on tenants of
its own names and removes them. SHADOWDB_HA_NET (first three octets of a /24, default 10.89.215)
moves its network, for labs run side by side (the failover bench's and molecule's HA labs use
.214 and .213)."""

import os

import pytest

from tests.ha import halab


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    net = os.environ.get("SHADOWDB_HA_NET", "10.89.215")
    with halab.converged("hatest", tmp_path_factory.mktemp("hatest"), net=net) as lab:
        yield lab
