"""The tenant path's cost on a converged routing host (db host, etcd and HAProxy in one lab
host): remote module calls per new tenant (counted by tests/bench/callback_plugins), the time of
one tenant with registration and HAProxy against the raw baseline (the shell steps, an etcd put,
an HAProxy fragment and reload: tests/bench/raw_tenant.sh), and a batch of N tenants
in one tenant.yml run against one tenant's time. Also with two more db hosts in the inventory
(never contacted: a call to them would fail the run), to show nothing on the path grows with
the fleet. Figures printed as ratios of the same run. Run with `make bench`.
"""

import json
import os
import statistics
import time
from pathlib import Path

import pytest
import yaml

from tests.bench.cpukit import CpuMeter, background_load
from tests.bench.rawkit import raw_times
from tests.labkit import Lab

pytestmark = pytest.mark.bench

BATCH = int(os.environ.get("SHADOWDB_BENCH_BATCH", "10"))
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    lab = Lab("bpath", hosts=1, inventory_dir=tmp_path_factory.mktemp("bench-path"), routing=True)
    lab.up()
    lab.playbook("site.yml")
    yield lab
    lab.down()


def run(lab: Lab, calls_file: Path, extravars: dict) -> tuple[float, dict]:
    env = {
        # The project's own callbacks too (the module payload cache, as in every run).
        "ANSIBLE_CALLBACK_PLUGINS": f"{HERE / 'callback_plugins'}:{HERE.parent.parent / 'callback_plugins'}",
        "ANSIBLE_CALLBACKS_ENABLED": "shadowdb_calls",
        "SHADOWDB_CALLS_FILE": str(calls_file),
    }
    lab.env.update(env)
    try:
        t0 = time.monotonic()
        lab.playbook("tenant.yml", "-e", json.dumps(extravars))
        seconds = time.monotonic() - t0
    finally:
        for key in env:
            lab.env.pop(key, None)
    return seconds, json.loads(calls_file.read_text())


def add_fake_db_hosts(lab: Lab, count: int) -> None:
    """Two more db hosts in the inventory that do not exist: any call to them fails the run."""
    path = lab.inventory_dir / "hosts.yml"
    inventory = yaml.safe_load(path.read_text())
    db = inventory["all"]["children"]["lab"]["children"]["db"]["hosts"]
    for i in range(count):
        db[f"{lab.name}-absent{i}"] = {}
    path.write_text(yaml.safe_dump(inventory, sort_keys=False))


def test_tenant_path(lab, tmp_path):
    host = lab.hosts[0]
    calls_file = tmp_path / "calls.json"
    load = background_load()
    # The raw baseline does the playbook's work by hand: the shell steps (volume to health check),
    # then an etcd put and an HAProxy fragment and reload. The shell steps alone are measured too,
    # for comparison with earlier figures. Both before any tenant; the clean-up included.
    shell_mean = statistics.mean(raw_times(lab, host, 3, prefix="pshell", first_port=15500))
    with CpuMeter() as raw_cpu:
        routed = raw_times(lab, host, 3, prefix="praw", first_port=15600, first_proxy_port=16600)
    raw_mean = statistics.mean(routed)
    print(f"\n[bench] tenant path on a converged routing host; raw baseline {raw_mean:.2f} s/tenant")
    print(f"[bench]   {load}")
    print(f"[bench]   raw baseline    : shell steps {shell_mean:.2f} s, + etcd put, HAProxy fragment, reload")
    print(f"[bench]   raw baseline    : {raw_cpu.summary(3)}")
    run(lab, calls_file, {"tenant_host": host, "tenant": {"name": "pwarm"}})  # warm-up, not counted

    with CpuMeter() as one_cpu:
        one, calls = run(lab, calls_file, {"tenant_host": host, "tenant": {"name": "pone"}})
    per_host = calls["hosts"]
    print(
        f"[bench]   remote module calls, one new tenant : {sum(per_host.values())} {per_host} (target <= 10)"
    )
    print(f"[bench]   one tenant      : {one:6.1f} s = {one / raw_mean:5.1f}x raw (target <= 5x)")
    print(f"[bench]   one tenant      : {one / shell_mean:5.1f}x the shell steps alone")
    print(f"[bench]   one tenant      : {one_cpu.summary(1)}")
    busiest = sorted(calls["tasks"], key=lambda t: -t[2])[:15]
    print("[bench]   calls of one tenant by task: " + "; ".join(f"{t} x{n}" for _, t, n in busiest))

    batch_specs = [{"name": f"pb{i}"} for i in range(BATCH)]
    with CpuMeter() as batch_cpu:
        batch, batch_calls = run(lab, calls_file, {"tenant_host": host, "tenants": batch_specs})
    print(f"[bench]   remote module calls, batch of {BATCH}    : {sum(batch_calls['hosts'].values())}")
    print(
        f"[bench]   batch of {BATCH:<3}    : {batch:6.1f} s = {batch / one:5.2f}x one tenant (target <= 2x)"
    )
    print(
        f"[bench]   batch of {BATCH:<3}    : {batch_cpu.summary(BATCH)}"
        f" = {batch_cpu.floor / one:4.2f}x one tenant's time"
    )

    add_fake_db_hosts(lab, 2)
    # The inventory is part of the host's fingerprint: the first run after the change converges
    # the host's shared part again (not counted), as it would after any inventory change.
    run(lab, calls_file, {"tenant_host": host, "tenant": {"name": "pwarm3"}})
    one3, calls3 = run(lab, calls_file, {"tenant_host": host, "tenant": {"name": "pthree"}})
    print(f"[bench]   the same, 3 db hosts in inventory  : {sum(calls3['hosts'].values())} {calls3['hosts']}")
    print(f"[bench]   one, 3 db hosts : {one3:6.1f} s")
