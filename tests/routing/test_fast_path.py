"""The no-op fast paths of site.yml, on the shared routing lab (conftest.py: one host that is a
db host, the etcd member and the proxy). The host's shared parts, the etcd member, the proxy host
and its routes are each checked against the record of their last full converge and skipped
while it holds; a file edited by hand or an input changed in the inventory makes that part
converge again, and the run after that is a no-op again.
"""

import re

import pytest
import yaml

pytestmark = pytest.mark.lab

# A task that only each part's full converge runs. Skipped tasks print nothing here (ansible.cfg:
# display_skipped_hosts = False), so a task's header in the output means that it ran.
FULL_CONVERGE_TASKS = {
    "host": "TASK [host : Install PostgreSQL servers, extension packages and tools]",
    "etcd": "TASK [etcd : Install etcd]",
    "haproxy": "TASK [haproxy : Install HAProxy]",
}

# A file of each part, and an input that shapes it (with the line it then holds).
EDITED_FILES = {
    "host": "/etc/security/limits.d/60-shadowdb.conf",
    "etcd": "/etc/default/etcd",
    "haproxy": "/etc/systemd/system/haproxy.service.d/shadowdb.conf",
}
# A tenant's route (a fragment of the live HAProxy configuration).
ROUTE_FILE = "/etc/haproxy/conf.d/rta.cfg"
ROUTES_APPLIED = "TASK [haproxy : Check and apply the configuration]"
NEW_INPUTS = {
    "host_nofile_limit": 54321,
    "etcd_settings": {"auto-compaction-mode": "periodic", "auto-compaction-retention": "2h"},
    "haproxy_nice": -4,
}
NEW_LINES = {
    "host": "*  hard  nofile  54321",
    "etcd": 'ETCD_AUTO_COMPACTION_RETENTION="2h"',
    "haproxy": "Nice=-4",
}


def changed(output: str, host: str) -> int:
    match = re.search(rf"^{re.escape(host)}\s*:\s*ok=\d+\s+changed=(\d+)", output, re.M)
    assert match, output[-3000:]
    return int(match.group(1))


def full_converges(output: str) -> set[str]:
    return {part for part, task in FULL_CONVERGE_TASKS.items() if task in output}


def digests(lab) -> str:
    return lab.sh(lab.hosts[0], "sha256sum " + " ".join([*EDITED_FILES.values(), ROUTE_FILE]))


@pytest.fixture(scope="module")
def settled(lab):
    """The lab after one site.yml, which records every part (the lab was made by routing.yml and
    tenant.yml); the host's inventory variables are given back at the end."""
    host_vars = lab.inventory_dir / "host_vars" / f"{lab.hosts[0]}.yml"
    saved = host_vars.read_text() if host_vars.exists() else None
    lab.playbook("site.yml")
    yield lab
    if saved is None:
        host_vars.unlink(missing_ok=True)
    else:
        host_vars.write_text(saved)


def test_a_converged_lab_is_checked_not_converged_again(settled):
    output = settled.playbook("site.yml")
    assert changed(output, settled.hosts[0]) == 0
    assert full_converges(output) == set(), "parts converged in full although their records hold"
    assert ROUTES_APPLIED not in output, "routes applied although their record holds"
    assert "Check the member's record" in output and "Check the proxy host's records" in output


def test_a_file_edited_by_hand_is_put_back(settled):
    host = settled.hosts[0]
    before = digests(settled)
    for path in [*EDITED_FILES.values(), ROUTE_FILE]:
        settled.sh(host, f"echo '# edited by hand' >> {path}")
    output = settled.playbook("site.yml")
    assert full_converges(output) == set(EDITED_FILES)
    assert ROUTES_APPLIED in output
    assert changed(output, host) > 0
    assert digests(settled) == before
    again = settled.playbook("site.yml")
    assert changed(again, host) == 0 and full_converges(again) == set()


def test_a_changed_input_converges_its_part_again(settled):
    host = settled.hosts[0]
    host_vars = settled.inventory_dir / "host_vars" / f"{host}.yml"
    saved = host_vars.read_text() if host_vars.exists() else ""
    host_vars.parent.mkdir(exist_ok=True)
    try:
        host_vars.write_text(yaml.safe_dump((yaml.safe_load(saved) or {}) | NEW_INPUTS))
        output = settled.playbook("site.yml")
        assert full_converges(output) == set(EDITED_FILES)
        for part, path in EDITED_FILES.items():
            assert NEW_LINES[part] in settled.sh(host, f"cat {path}").splitlines(), part
        again = settled.playbook("site.yml")
        assert changed(again, host) == 0 and full_converges(again) == set()
    finally:
        host_vars.write_text(saved)
    # Back to the inventory's own values: converged again, then a no-op.
    settled.playbook("site.yml")
    assert changed(settled.playbook("site.yml"), host) == 0
