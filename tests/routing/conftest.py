"""One routing lab for every test of tests/routing (paid once): a lab host that is also etcd and
HAProxy, with tenants rta and rtb onboarded through playbooks/tenant.yml. Tests that add tenants
use names of their own; tests that stop a component start it again.
"""

import json

import pytest

from tests.labkit import Lab
from tests.routing.client import TENANTS


@pytest.fixture(scope="session")
def lab(tmp_path_factory):
    lab = Lab("rt", hosts=1, inventory_dir=tmp_path_factory.mktemp("routing-inventory"), routing=True)
    lab.up()
    try:
        lab.playbook("routing.yml")
        for name in TENANTS:
            lab.playbook(
                "tenant.yml",
                "-e",
                f"tenant_host={lab.hosts[0]}",
                "-e",
                json.dumps({"tenant": {"name": name}}),
            )
        yield lab
    finally:
        lab.down()
