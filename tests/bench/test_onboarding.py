"""Onboarding benchmark: tenant.yml against the raw shell steps, on the same lab host, same run.

Prints seconds per tenant for both and their ratio (target: <= 6x raw), then the time of a
no-op re-run of site.yml over SHADOWDB_BENCH_SITE_TENANTS tenants (target: < 60 s for 20).
Run with `make bench`.
"""

import json
import os
import re
import statistics
import time

import pytest

from tests.bench.rawkit import raw_times
from tests.labkit import Lab

pytestmark = pytest.mark.bench

K = int(os.environ.get("SHADOWDB_BENCH_TENANTS", "5"))
SITE_TENANTS = int(os.environ.get("SHADOWDB_BENCH_SITE_TENANTS", "20"))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("b", hosts=1, inventory_dir=tmp_path_factory.mktemp("bench-inventory"))
    lab.up()
    yield lab
    lab.down()


def recap_changed(output: str, host: str) -> int:
    match = re.search(rf"^{re.escape(host)}\s*:.*changed=(\d+)", output, re.M)
    assert match, output[-3000:]
    return int(match.group(1))


def test_onboarding_against_raw_shell(lab):
    host = lab.hosts[0]
    # Warm-up (not timed): packages, CA, host-wide files.
    t0 = time.monotonic()
    lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps({"tenant": {"name": "warm"}}))
    first = time.monotonic() - t0

    managed = []
    for i in range(K):
        spec = {"tenant": {"name": f"bench{i}", "extensions": ["pgcrypto"]}}
        t0 = time.monotonic()
        lab.playbook("tenant.yml", "-e", f"tenant_host={host}", "-e", json.dumps(spec))
        managed.append(time.monotonic() - t0)

    raw = raw_times(lab, host, K)

    managed_mean, raw_mean = statistics.mean(managed), statistics.mean(raw)
    print(f"\n[bench] onboarding, {K} tenants on one lab host (first tenant incl. packages: {first:.1f} s)")
    spread = f"(min {min(managed):.2f}, max {max(managed):.2f})"
    print(f"[bench]   tenant.yml : {managed_mean:6.2f} s/tenant  {spread}")
    print(f"[bench]   raw shell  : {raw_mean:6.2f} s/tenant  (min {min(raw):.2f}, max {max(raw):.2f})")
    print(f"[bench]   ratio      : {managed_mean / raw_mean:6.2f}x raw  (target <= 6x)")


def test_site_noop_rerun(lab):
    host = lab.hosts[0]
    tenants = [{"name": "warm"}] + [{"name": f"bench{i}", "extensions": ["pgcrypto"]} for i in range(K)]
    tenants += [{"name": f"site{i}"} for i in range(SITE_TENANTS - len(tenants))]
    lab.write_host_vars(host, {"shadowdb_tenants": tenants})

    t0 = time.monotonic()
    lab.playbook("site.yml")
    converge = time.monotonic() - t0
    t0 = time.monotonic()
    out = lab.playbook("site.yml")
    noop = time.monotonic() - t0
    changed = recap_changed(out, host)
    print(
        f"\n[bench] site.yml over {len(tenants)} tenants: converge {converge:.1f} s, "
        f"no-op re-run {noop:.1f} s (target < 60 s), changed={changed}"
    )
    assert changed == 0, "a no-op re-run of site.yml changed something"
