"""Many tenants of one host in one tenant.yml run (`tenants`): each is checked and converged on
its own. In a batch of four on db2, one spec is refused by validation and one fails on the host
(huge_pages=on: valid, but the lab reserves no huge pages, so the new server never comes up):
the two others are made and serve, the run fails naming exactly the two others with their
reasons, and a second run of the good ones changes nothing. A batch of removals
(tenant_remove.yml with `tenant_names`) needs every name confirmed and leaves nothing behind.
"""

import pytest

GOOD = ["itba", "itbc"]
FAILS = "itbb"


@pytest.fixture
def batch_cleanup(lab, db2):
    yield
    for name in [*GOOD, FAILS]:
        lab.remove(db2, name, confirm=name)


def test_one_bad_tenant_does_not_block_the_batch(lab, db2, batch_cleanup):
    if lab.sh(db2, "cat /proc/sys/vm/nr_hugepages").strip() != "0":
        pytest.skip("the host reserves huge pages: huge_pages=on would start")
    tenants = [
        {"name": "itba"},
        {"name": FAILS, "settings": {"huge_pages": "on"}},
        {"name": "Bad_Name"},
        {"name": "itbc", "extensions": ["pgcrypto"]},
    ]
    run = lab.playbook("tenant.yml", {"tenant_host": db2, "tenants": tenants})
    assert run.rc != 0, run.describe()
    report = run.text.split("Report the tenants that were refused or failed")[-1]
    assert "Bad_Name: tenant.name:" in report, run.describe()
    assert f"{FAILS}: " in report and "the server did not come up" in report, run.describe()
    for name in GOOD:
        assert f"{name}: " not in report, run.describe()
        lab.wait_serving(db2, name, timeout=30)
    with lab.connect(db2, "itbc", autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pgcrypto")

    again = lab.playbook("tenant.yml", {"tenant_host": db2, "tenants": [{"name": n} for n in GOOD[:1]]})
    assert again.rc == 0, again.describe()
    assert again.recap()[db2]["changed"] == 0, again.changed_tasks()


REMOVED = ["itbr", "itbs"]


@pytest.fixture
def removal_cleanup(lab, db2):
    yield
    for name in REMOVED:
        lab.remove(db2, name, confirm=name)


def test_a_batch_of_removals(lab, db2, removal_cleanup):
    made = lab.playbook("tenant.yml", {"tenant_host": db2, "tenants": [{"name": n} for n in REMOVED]})
    assert made.rc == 0, made.describe()

    # Each name must be confirmed: one of the two is not enough, and nothing is removed.
    one_name = {"tenant_host": db2, "tenant_names": REMOVED, "confirm": "itbr"}
    refused = lab.playbook("tenant_remove.yml", one_name)
    assert refused.rc != 0 and "confirm=<the names joined by commas>" in refused.text, refused.describe()
    for name in REMOVED:
        lab.wait_serving(db2, name, timeout=30)

    run = lab.playbook(
        "tenant_remove.yml", {"tenant_host": db2, "tenant_names": REMOVED, "confirm": ",".join(REMOVED)}
    )
    assert run.rc == 0, run.describe()
    for name in REMOVED:
        left = lab.sh(
            db2,
            f"ls -d /mnt/db/{name} /etc/shadowdb/tenants/{name} 2>/dev/null;"
            f" ls /var/lib/shadowdb/volumes/{name}.img 2>/dev/null; getent passwd pg-{name};"
            f" systemctl is-active shadowdb-postgres@{name} || true",
        ).split()
        assert left in (["inactive"], ["unknown"]), (name, left)
    again = lab.playbook(
        "tenant_remove.yml", {"tenant_host": db2, "tenant_names": REMOVED, "confirm": ",".join(REMOVED)}
    )
    assert again.rc == 0, again.describe()
    assert again.recap()[db2]["changed"] == 0, again.changed_tasks()
