"""Idempotence: tenant.yml re-run for existing tenants changes nothing (runs last: after the
restart test, it also proves a rebooted host converges with no change)."""

from concurrent.futures import ThreadPoolExecutor

import pytest


@pytest.mark.parametrize("names", [("ita", "itc")], ids=["ita@db1+itc@db2"])
def test_tenant_rerun_changes_nothing(lab, session_tenants, names):
    # One tenant per host, side by side (the CA exists: the controller side is read-only).
    jobs = [session_tenants[name] for name in names]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        runs = list(pool.map(lambda job: lab.onboard(*job), jobs))
    for name, run in zip(names, runs, strict=True):
        assert run.rc == 0, run.describe()
        recap = run.recap()
        assert session_tenants[name][0] in recap, run.describe()
        changed = {host: counts["changed"] for host, counts in recap.items() if counts["changed"]}
        failed = {host: counts["failed"] for host, counts in recap.items() if counts["failed"]}
        assert not changed and not failed, (
            f"{name}: changed {changed}, failed {failed}: {run.changed_tasks()}"
        )
    for name in names:
        host, _ = session_tenants[name]
        lab.wait_serving(host, name, timeout=10)
