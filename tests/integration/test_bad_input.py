"""Bad input: refused with a clear message naming the problem, and nothing created on the host.

Every case compares a snapshot of the host's tenant-level state (OS users and groups, mount
points and mounts, loop images and devices, volume settings, secrets, unit files, enabled and
active units, port leases) before and after the run.

Where a case is refused only after a role has started creating the tenant, whatever was left is
removed with tenant_remove.yml (which must bring the host back to the snapshot) and the case is
reported as xfail naming what was left: the tenant spec must be refused before anything is made.
"""

import shutil

import pytest
import yaml

NAME_RULE = "use 2-16 characters"

SPEC_CASES = [
    pytest.param(
        {"name": "Uppercase"}, ["tenant.name:", "'Uppercase'", "uppercase", NAME_RULE], id="name-upper"
    ),
    pytest.param(
        {"name": "under_score"}, ["tenant.name:", "'under_score'", "'_'", NAME_RULE], id="name-underscore"
    ),
    pytest.param(
        {"name": "abcdefghijklmnopq"},
        ["tenant.name:", "'abcdefghijklmnopq'", "17 characters", NAME_RULE],
        id="name-17-chars",
    ),
    pytest.param(
        {"name": "1tenant"}, ["tenant.name:", "'1tenant'", "starts with a digit"], id="name-digit-first"
    ),
    pytest.param({"tier": "small"}, ["tenant.name:"], id="name-missing"),
    pytest.param(
        {"name": "itbad", "tier": "huge"}, ["tenant.tier:", "'huge'", "known tiers"], id="tier-unknown"
    ),
    pytest.param(
        {"name": "itbad", "extensions": ["plpython3u"]},
        ["tenant.extensions:", "'plpython3u'", "not allow-listed"],
        id="extension-not-allowed",
    ),
    pytest.param(
        {"name": "itbad", "settings": {"not_a_setting": "1"}},
        ["tenant.settings.not_a_setting:", "'not_a_setting'"],
        id="setting-unknown",
    ),
    pytest.param(
        {"name": "itbad", "settings": {"port": 5432}},
        ["tenant.settings.port:"],
        id="setting-managed",
    ),
    pytest.param(
        {"name": "itbad", "settings": {"work_mem": "lots"}},
        ["tenant.settings.work_mem:", "'lots'", "not a valid size"],
        id="setting-bad-value",
    ),
    pytest.param(
        {"name": "itbad", "settings": {"shared_buffers": "1kB"}},
        ["tenant.settings.shared_buffers:", "'1kB'", "minimum"],
        id="setting-below-minimum",
    ),
    # Reserved names (issue 12 item 1): refused before anything is made, with the reason.
    pytest.param(
        {"name": "postgres"},
        ["tenant.name:", "'postgres' is reserved", "bootstrap superuser role", "choose another name"],
        id="reserved-postgres",
    ),
    pytest.param(
        {"name": "template1"},
        ["tenant.name:", "'template1' is reserved", "template database"],
        id="reserved-template1",
    ),
    pytest.param(
        {"name": "root"},
        ["tenant.name:", "'root' is reserved", "system account"],
        id="reserved-root",
    ),
    # ita is a session tenant: ita-ro would be its read-only route once it has replicas.
    pytest.param(
        {"name": "ita-ro"},
        ["tenant.name:", "'ita-ro' is reserved", "read-only route", "'ita'"],
        id="reserved-ro-route",
    ),
    # Settings above the tier (issue 12 item 7a).
    pytest.param(
        {"name": "itbad", "settings": {"max_connections": 10000}},
        ["tenant.settings.max_connections:", "10000 is above the small tier's limit of 50"],
        id="setting-above-tier-connections",
    ),
    pytest.param(
        {"name": "itbad", "tier": "medium", "settings": {"shared_buffers": "4GB"}},
        ["tenant.settings.shared_buffers:", "'4GB' is above the medium tier's limit of 512MB", "memory"],
        id="setting-above-tier-memory",
    ),
    # A major version the host cannot install (issue 12 item 11): the lab's hosts serve 17 only
    # (shadowdb_pg_versions), so 15 is refused in validation, not by apt half-way through.
    pytest.param(
        {"name": "itbad", "pg_version": 15},
        ["tenant.pg_version:", "15 is not a supported PostgreSQL version", "supported versions: 17"],
        id="pg-version-not-served",
    ),
]


def assert_mentions(run, fragments):
    missing = [fragment for fragment in fragments if fragment not in run.text]
    assert not missing, f"message does not mention {missing}: {run.describe()}"


def assert_only_validation_ran(run):
    plays = run.plays()
    assert len(plays) == 1 and plays[0].startswith("Check"), f"plays that started: {plays}\n{run.describe()}"


def _changes(was: str, now: str) -> str:
    """What a snapshot line gained (+) and lost (-), token by token."""
    if was.startswith("{") or now.startswith("{"):  # the port leases, as JSON
        return f"{was} -> {now}"
    tokens_was, tokens_now = was.split(), now.split()
    gained = [f"+{token}" for token in tokens_now if token not in tokens_was]
    lost = [f"-{token}" for token in tokens_was if token not in tokens_now]
    return " ".join(gained + lost)


def assert_nothing_made(lab, host, name, before, known_issue=None):
    """The host's tenant-level state is as before; else clean up, then fail (or xfail a known issue)."""
    left = lab.diff(before, lab.snapshot(host))
    if not left:
        return
    cleanup = lab.remove(host, name, confirm=name)
    assert cleanup.rc == 0, f"cleaning up the half-made tenant {name} failed: {cleanup.describe()}"
    assert lab.diff(before, lab.snapshot(host)) == {}, f"tenant_remove.yml did not clean up {name}"
    report = "; ".join(f"{key}: {_changes(was, now)}" for key, (was, now) in left.items())
    if known_issue:
        pytest.xfail(f"{known_issue}. Left behind (removed again by tenant_remove.yml): {report}")
    pytest.fail(f"refused tenant {name} left a half-made tenant on {host}: {report}")


@pytest.mark.parametrize(("spec", "fragments"), SPEC_CASES)
def test_invalid_spec_is_refused_before_anything_changes(lab, db1, spec, fragments):
    before = lab.snapshot(db1)
    run = lab.onboard(db1, spec)
    assert run.rc != 0, run.describe()
    assert_mentions(run, fragments)
    # Refused by the validation task: before it, only the check of the arguments of the shadowdb
    # role's tenant_check entry point (imported by the play) passed; no other play started.
    assert_only_validation_ran(run)
    assert "Validating arguments against arg spec 'tenant_check'" in run.text, run.describe()
    assert run.recap().get(db1, {}).get("ok") == 1, run.describe()
    assert_nothing_made(lab, db1, spec.get("name", "itbad"), before)


def test_port_range_exhausted(lab, db1):
    port = lab.leases(db1)["ita"]
    before = lab.snapshot(db1)
    run = lab.onboard(db1, {"name": "itport"}, shadowdb_port_range_start=port, shadowdb_port_range_end=port)
    assert run.rc != 0, run.describe()
    assert_mentions(run, [f"port range {port}-{port}", "is exhausted", "1 port leased"])
    lab.wait_serving(db1, "ita", timeout=10)
    assert lab.leases(db1)["ita"] == port
    assert_nothing_made(lab, db1, "itport", before)


def test_device_backend_missing_disk(lab, db1):
    before = lab.snapshot(db1)
    run = lab.onboard(
        db1,
        {"name": "itdev"},
        shadowdb_volume_backend="device",
        shadowdb_volume_devices={"itdev": "/dev/does-not-exist"},
    )
    assert run.rc != 0, run.describe()
    assert_mentions(run, ["/dev/does-not-exist", "itdev", "does not exist or is not a block device"])
    assert_nothing_made(lab, db1, "itdev", before)


def test_device_backend_refuses_another_tenants_disk(lab, db1):
    ita_device = lab.sh(db1, "losetup -j /var/lib/shadowdb/volumes/ita.img | cut -d: -f1").strip()
    assert ita_device.startswith("/dev/loop"), ita_device
    with lab.connect(db1, "ita", autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS it_keep (note text)")
        conn.execute("INSERT INTO it_keep VALUES ('device-test')")
    before = lab.snapshot(db1)
    run = lab.onboard(
        db1,
        {"name": "itdev"},
        shadowdb_volume_backend="device",
        shadowdb_volume_devices={"itdev": ita_device},
    )
    assert run.rc != 0, run.describe()
    assert_mentions(run, [ita_device, "labelled 'ita'", "which is not tenant itdev", "refusing"])
    # ita's filesystem is untouched: same label, still mounted from that device, data still there.
    assert lab.sh(db1, f"blkid -p -s LABEL -o value {ita_device}").strip() == "ita"
    assert lab.sh(db1, "findmnt -n -o SOURCE /mnt/db/ita").strip() == ita_device
    with lab.connect(db1, "ita", autocommit=True) as conn:
        assert ("device-test",) in conn.execute("SELECT note FROM it_keep").fetchall()
        conn.execute("DROP TABLE it_keep")
    assert_nothing_made(lab, db1, "itdev", before)


def test_name_taken_on_another_host(lab, db1, db2):
    before = lab.snapshot(db2)
    run = lab.onboard(db2, {"name": "ita"})
    assert run.rc != 0, run.describe()
    assert_mentions(run, ["tenant.name:", "a tenant named 'ita' already exists on", db1])
    assert_only_validation_ran(run)
    assert lab.diff(before, lab.snapshot(db2)) == {}
    lab.wait_serving(db1, "ita", timeout=10)


@pytest.mark.parametrize(
    "layout",
    [
        pytest.param({0: [{"name": "itdup"}, {"name": "itdup", "tier": "medium"}]}, id="same-host"),
        pytest.param({0: [{"name": "itdup"}], 1: [{"name": "itdup"}]}, id="two-hosts"),
    ],
)
def test_site_refuses_duplicate_names(lab, tmp_path, layout):
    copy = _inventory_with_tenants(lab, tmp_path, layout)
    before = {host: lab.snapshot(host) for host in lab.hosts}
    run = lab.playbook("site.yml", inventory=copy)
    assert run.rc != 0, run.describe()
    assert_mentions(run, ["tenants:", "tenant name 'itdup' is declared 2 times", "must be unique"])
    # Refused in the validation play: no CA, host or tenant play started.
    assert_only_validation_ran(run)
    for host in lab.hosts:
        assert lab.diff(before[host], lab.snapshot(host)) == {}, host


def _inventory_with_tenants(lab, tmp_path, layout):
    """A copy of the lab inventory whose hosts declare the tenants in host_vars (whatever the
    structure of the generated hosts.yml); the CA stays the lab's. Returns its hosts.yml."""
    shutil.copy(lab.inventory, tmp_path / "hosts.yml")
    (tmp_path / "group_vars").mkdir()
    (tmp_path / "group_vars" / "all.yml").write_text(
        yaml.safe_dump({"shadowdb_ca_dir": str(lab.ca_cert.parent)})
    )
    (tmp_path / "host_vars").mkdir()
    for index, tenants in layout.items():
        host_vars = tmp_path / "host_vars" / f"{lab.hosts[index]}.yml"
        host_vars.write_text(yaml.safe_dump({"shadowdb_tenants": tenants}))
    return tmp_path / "hosts.yml"


@pytest.mark.parametrize(
    ("tenant", "fragments"),
    [
        pytest.param(
            {"name": "template1"},
            ["tenant.name:", "'template1' is reserved", "template database", "(in tenants[1])"],
            id="reserved-name",
        ),
        pytest.param(
            {"name": "itsite", "settings": {"max_connections": 51}},
            [
                "tenant.settings.max_connections:",
                "51 is above the small tier's limit of 50",
                "(in tenants[1]",
            ],
            id="setting-above-tier",
        ),
        pytest.param(
            {"name": "itrep", "replicas": 2},
            ["tenant.replicas:", "tenant itrep asks for 2 replica(s)", "playbooks/tenant_ha.yml"],
            id="replicas",
        ),
    ],
)
def test_site_refuses_reserved_names_and_settings_above_the_tier(lab, tmp_path, tenant, fragments):
    # The same rules in site.yml's validation play, for a tenant declared in the inventory
    # next to a valid one: nothing starts on any host. An HA tenant (replicas) is refused there
    # too: site.yml converges standalone tenants only.
    copy = _inventory_with_tenants(lab, tmp_path, {0: [{"name": "itok"}, tenant]})
    before = {host: lab.snapshot(host) for host in lab.hosts}
    run = lab.playbook("site.yml", inventory=copy)
    assert run.rc != 0, run.describe()
    assert_mentions(run, fragments)
    assert_only_validation_ran(run)
    for host in lab.hosts:
        assert lab.diff(before[host], lab.snapshot(host)) == {}, host


@pytest.mark.parametrize("confirm", [None, "ita", ""], ids=["no-confirm", "wrong-confirm", "empty-confirm"])
def test_remove_needs_the_name_confirmed(lab, db1, confirm):
    before = lab.snapshot(db1)
    run = lab.remove(db1, "itb", confirm=confirm)
    assert run.rc != 0, run.describe()
    assert_mentions(run, ["removing a tenant destroys its data", "confirm=<name>"])
    assert lab.diff(before, lab.snapshot(db1)) == {}
    lab.wait_serving(db1, "itb", timeout=10)


def test_remove_refuses_an_invalid_name(lab, db1):
    before = lab.snapshot(db1)
    run = lab.remove(db1, "../ita", confirm="../ita")
    assert run.rc != 0, run.describe()
    assert_mentions(run, ["tenant.name:", "'../ita'"])
    assert lab.diff(before, lab.snapshot(db1)) == {}
    lab.wait_serving(db1, "ita", timeout=10)
