"""The tenants' egress firewall (module_utils/shadowdb_firewall.py): the ruleset it renders (checked
by the kernel's own parser, nft --check) and when it loads it. The firewall itself is attacked
from inside a tenant's sandbox in tests/integration/test_isolation.py."""

import json
import shutil
import subprocess

import pytest
from ansible.module_utils.shadowdb_firewall import (
    TABLE,
    check_allowance,
    converge_firewall,
    egress_file_entry,
    read_allowances,
    render_ruleset,
    tenant_users,
)

HOST_USERS = (
    "root:x:0:0:root:/root:/bin/bash\n"
    "postgres:x:100:102:PostgreSQL administrator,,,:/var/lib/postgresql:/bin/bash\n"
    "pg-acme:x:999:996:ShadowDB tenant acme:/mnt/db/acme:/usr/sbin/nologin\n"
    "pg-globex:x:998:995:ShadowDB tenant globex:/mnt/db/globex:/usr/sbin/nologin\n"
    "pg-evil:x:997:994:ShadowDB tenant ../../etc:/mnt/db/evil:/usr/sbin/nologin\n"
)
PATRONI = [
    {"addresses": ["10.0.0.12", "10.0.0.11", "10.0.0.11"], "ports": ["16000-17999", "18000-19999"]},
    {"addresses": ["10.0.0.5"], "ports": ["2379"]},
]


def test_tenant_users_come_from_the_comment():
    users = tenant_users(HOST_USERS)
    assert users == {"pg-acme": (999, "acme"), "pg-globex": (998, "globex"), "pg-evil": (997, None)}


@pytest.mark.parametrize(
    "allowance, fragment",
    [
        ({"addresses": ["10.0.0.1"]}, "at least one address and one port"),
        ({"addresses": ["example"], "ports": ["1"]}, "'example' is not an IPv4 address"),
        ({"addresses": ["10.0.0.1"], "ports": ["70000"]}, "'70000' is not a port"),
        ({"addresses": ["10.0.0.1"], "ports": ["9-1"]}, "'9-1' is not a port"),
        ({"addresses": ["10.0.0.1"], "ports": ["1"], "protocol": "udp"}, "is not {addresses"),
    ],
)
def test_a_bad_allowance_names_the_problem(allowance, fragment):
    with pytest.raises(ValueError, match="egress") as info:
        check_allowance(allowance)
    assert fragment in str(info.value)


def test_the_ruleset_rejects_every_tenant_but_its_own_allowances():
    users = tenant_users(HOST_USERS)
    ruleset = render_ruleset(users, {"pg-globex": [check_allowance(a) for a in PATRONI]})
    assert "elements = { 999, 997, 998 }" in ruleset
    assert "meta skuid @tenant_uids jump tenant" in ruleset
    assert ruleset.count("accept comment") == 2  # globex's two allowances, nobody else's
    members = "ip daddr { 10.0.0.11, 10.0.0.12 } tcp dport { 16000-17999, 18000-19999 }"
    assert f"meta skuid 998 {members} accept" in ruleset
    assert ruleset.index("ct state established,related accept") < ruleset.index("reject with tcp reset")
    # Replaces the table whole, and only it (nothing else of the host's firewall).
    assert ruleset.startswith("#") and f"delete table inet {TABLE}\n" in ruleset
    assert "flush ruleset" not in ruleset


@pytest.mark.skipif(shutil.which("nft") is None, reason="nft is installed by make setup")
@pytest.mark.parametrize("users", [HOST_USERS, "root:x:0:0:root:/root:/bin/bash\n"], ids=["tenants", "none"])
def test_the_kernel_parses_the_ruleset(tmp_path, users):
    parsed = tenant_users(users)
    path = tmp_path / "ruleset.nft"
    path.write_text(render_ruleset(parsed, {"pg-globex": [check_allowance(a) for a in PATRONI]}))
    checked = subprocess.run(["nft", "--check", "-f", str(path)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


class FakeModule:
    """The AnsibleModule parts converge_firewall uses; nft's answers are scripted."""

    def __init__(self, loaded=True, load_rc=0):
        self.loaded, self.load_rc, self.commands = loaded, load_rc, []

    def get_bin_path(self, name):
        return "/usr/sbin/nft"

    def run_command(self, argv):
        self.commands.append(argv[1:])
        if argv[1] == "list":
            return (0 if self.loaded else 1), "", ""
        self.loaded = self.load_rc == 0
        return self.load_rc, "", "" if self.load_rc == 0 else "Error: syntax error"


@pytest.fixture
def host(tmp_path):
    etc, tenants, firewall = tmp_path / "etc", tmp_path / "tenants", tmp_path / "firewall"
    for d in (etc, tenants / "globex", firewall):
        d.mkdir(parents=True)
    (etc / "passwd").write_text(HOST_USERS)
    return dict(etc=str(etc), tenants_dir=str(tenants), ruleset_path=str(firewall / "tenant-egress.nft"))


def test_loaded_once_then_only_when_it_changes_or_is_gone(host, tmp_path):
    module = FakeModule(loaded=False)
    assert converge_firewall(module, False, **host)
    assert module.commands[-1] == ["-f", host["ruleset_path"]]
    assert not converge_firewall(module, False, **host)
    assert module.commands[-1][0] == "list"
    # An allowance written for globex (egress.json) changes the ruleset: loaded again.
    entry = egress_file_entry(str(tmp_path / "tenants" / "globex"), PATRONI)
    (tmp_path / "tenants" / "globex" / "egress.json").write_text(entry["content"])
    assert read_allowances(tenant_users(HOST_USERS), host["tenants_dir"])["pg-globex"][0]["addresses"] == [
        "10.0.0.11",
        "10.0.0.12",
    ]
    assert converge_firewall(module, False, **host)
    assert "pg-globex" in open(host["ruleset_path"]).read()
    # Flushed by someone else: loaded again although the file is the same.
    module.loaded = False
    assert converge_firewall(module, False, **host) and module.commands[-1][0] == "-f"


def test_check_mode_loads_nothing(host):
    module = FakeModule(loaded=False)
    assert converge_firewall(module, True, **host)
    assert all(command[0] == "list" for command in module.commands)


def test_a_ruleset_nft_refuses_fails_with_its_error(host):
    with pytest.raises(ValueError, match="nft -f .* failed: Error: syntax error"):
        converge_firewall(FakeModule(loaded=False, load_rc=1), False, **host)


def test_a_host_without_the_host_role_is_named(host, tmp_path):
    host["ruleset_path"] = str(tmp_path / "missing" / "tenant-egress.nft")
    with pytest.raises(ValueError, match="missing does not exist on this host: run the host role"):
        converge_firewall(FakeModule(), False, **host)
    assert converge_firewall(FakeModule(), True, **host)  # check mode: it would be made


def test_an_unreadable_allowance_file_names_it(host, tmp_path):
    (tmp_path / "tenants" / "globex" / "egress.json").write_text("{not json")
    with pytest.raises(ValueError, match="globex/egress.json: not JSON"):
        converge_firewall(FakeModule(), False, **host)
    bad = [{"addresses": ["x"], "ports": [1]}]
    (tmp_path / "tenants" / "globex" / "egress.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="'x' is not an IPv4 address"):
        converge_firewall(FakeModule(), False, **host)
