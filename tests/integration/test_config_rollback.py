"""A changed setting that stops the server from starting is rolled back, and the run says why.

``huge_pages: on`` is valid by type and allowed in a spec, but the lab's hosts reserve no huge
pages (vm.nr_hugepages = 0): PostgreSQL refuses to start ("could not map anonymous shared memory").
Converging itb with it must fail naming that error, put the last good postgresql.conf back, and
leave itb serving its old settings; converging the old spec afterwards changes nothing.
"""

import pytest

TENANT = "itb"


def test_a_config_that_does_not_start_is_rolled_back(lab, db1, session_tenants):
    if lab.sh(db1, "cat /proc/sys/vm/nr_hugepages").strip() != "0":
        pytest.skip("the host reserves huge pages: huge_pages=on would start")
    spec = session_tenants[TENANT][1]
    conf = f"/mnt/db/{TENANT}/data/postgresql.conf"
    conf_before = lab.sh(db1, f"sha256sum {conf}")
    pid_before = lab.postmaster_pid(db1, TENANT)

    bad = lab.onboard(db1, {**spec, "settings": {**spec.get("settings", {}), "huge_pages": "on"}})
    assert bad.rc != 0, bad.describe()
    assert f"tenant {TENANT}: the new configuration did not come up" in bad.text, bad.describe()
    assert "could not map anonymous shared memory" in bad.text, bad.describe()
    assert "The last good configuration was put back and the server serves it again" in bad.text, (
        bad.describe()
    )

    # itb serves its old settings from its old file.
    lab.wait_serving(db1, TENANT, timeout=30)
    assert lab.sh(db1, f"sha256sum {conf}") == conf_before
    assert lab.psql_root(db1, TENANT, "SHOW huge_pages") == "try"
    assert lab.postmaster_pid(db1, TENANT) != pid_before  # it was restarted on the good file

    # The old spec converges with no change to the tenant's files.
    good = lab.onboard(db1, spec)
    assert good.rc == 0, good.describe()
    assert lab.sh(db1, f"sha256sum {conf}") == conf_before
