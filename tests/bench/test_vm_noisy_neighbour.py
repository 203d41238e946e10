"""Noisy neighbour on a VM db host (issue 16, docs/vm-lab.md): the p99 latency of pgbench -S
against one small tenant (vmb), alone and while the other small tenant (vma) runs a CPU hog
inside its own cluster (busy PL/pgSQL sessions, held to the tier's CPUQuota of 50 %), printed as
a ratio, with TPS and the hog tenant's CPU use over the same interval. Two rounds of each,
alternating (solo, hog, solo, hog), each figure the median of its rounds. Then, as a control, one
run with the hog tenant's quota lifted at runtime (`systemctl set-property --runtime CPUQuota=`):
what the quota holds off (and what tests/vm's usage assertion would see without it).

Needs the VM lab (qemu and the image of scripts/vm-setup.sh; skipped without the image): it boots
its own VM (sdb-vmt-<checkout>-db1, as tests/vm; not at the same time as them) and removes it at
the end; about 10 minutes on a quiet 2-core machine, most of it boot, site.yml and tenant.yml
under TCG. Run with `make vm-bench` (`make bench` leaves it out) or
`pytest tests/bench/test_vm_noisy_neighbour.py -q -s`.
"""

import json

import pytest

from tests.vm.vmkit import TENANTS, converge_tenants, cpu_quota, noisy_rounds, noisy_run, running_lab, unit

pytestmark = [pytest.mark.bench, pytest.mark.vm]

ROUNDS = 2
SECONDS = 20
HOGS = 3
TIMES: dict[str, float] = {}
FIGURES: dict[str, object] = {}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with running_lab(tmp_path_factory, TIMES, FIGURES, title="VM noisy-neighbour bench") as vm:
        converge_tenants(vm, TIMES)
        yield vm


def test_noisy_neighbour_p99(lab):
    hog_tenant, victim = TENANTS
    alone, beside, runs = noisy_rounds(lab, victim, hog_tenant, rounds=ROUNDS, seconds=SECONDS, hogs=HOGS)
    ratios = {k: round(beside[k] / alone[k], 2) for k in ("tps", "p50_ms", "p99_ms")}
    FIGURES.update(solo=alone, hog=beside, ratios=ratios)
    print(f"\n[bench] noisy neighbour on a VM db host: pgbench -S against {victim}, 4 clients, {SECONDS} s,")
    print(f"[bench]   {HOGS} busy sessions in {hog_tenant} (small tier, CPUQuota 50 %), medians of {ROUNDS}")
    print(f"[bench]   {'':26} {'solo':>9} {'with hog':>9} {'ratio':>6}")
    for key, label in (("tps", "TPS"), ("p50_ms", "p50 latency (ms)"), ("p99_ms", "p99 latency (ms)")):
        print(f"[bench]   {label:26} {alone[key]:9.2f} {beside[key]:9.2f} {ratios[key]:6.2f}")
    for tenant, key in ((hog_tenant, "hog_cpu"), (victim, "victim_cpu")):
        label = f"{tenant}'s cgroup CPU (CPUs)"
        print(f"[bench]   {label:26} {alone[key]:9.3f} {beside[key]:9.3f}")
    print("[bench]   runs:", json.dumps(runs))

    # Control: the same hog without its quota (runtime only; the unit's own drop-in restored after).
    lift = f"systemctl set-property --runtime {unit(hog_tenant)} CPUQuota="
    restore = (
        f"rm -f /run/systemd/system.control/{unit(hog_tenant)}.d/50-CPUQuota.conf; systemctl daemon-reload"
    )
    try:
        lab.sh(lift)
        assert lab.out(f"systemctl show -p CPUQuotaPerSecUSec --value {unit(hog_tenant)}") == "infinity"
        unquota = noisy_run(lab, victim, hog_tenant, seconds=SECONDS, hogs=HOGS)
    finally:
        lab.sh(restore, check=False)
    FIGURES["hog without its quota"] = unquota
    print(f"[bench]   control, {hog_tenant}'s quota lifted: {hog_tenant} used {unquota['hog_cpu']:.3f} CPUs;")
    tps, p99 = unquota["tps"] / alone["tps"], unquota["p99_ms"] / alone["p99_ms"]
    print(
        f"[bench]     {victim}: TPS {unquota['tps']:.1f} ({tps:.2f} of solo), p50 {unquota['p50_ms']:.2f} ms,"
    )
    print(
        f"[bench]     p99 {unquota['p99_ms']:.2f} ms ({p99:.2f} of solo),"
        f" its cgroup {unquota['victim_cpu']:.3f} CPUs"
    )
    assert cpu_quota(lab, hog_tenant) == 0.5  # restored
