"""Lifecycle of an HA tenant on an HA lab (3 db hosts + an etcd/HAProxy host), through
playbooks/tenant_ha.yml: two replicas, then one replica removed from the live tenant (never the
leader; rows written before are still there, writes go on through the same HAProxy address),
then the whole tenant removed (nothing of it left on any host, in the registry, in Patroni's
DCS keys or in HAProxy).

    pytest tests/ha -q -k lifecycle   (the lab is shared by tests/ha: conftest.py)
"""

import json
import re
import time
from pathlib import Path

import pytest
import yaml

from tests.ha import hakit
from tests.ha.hakit import DOMAIN, ETCDCTL, SNI_PORT, members_of, tenant_ha
from tests.routing.client import PROBE

pytestmark = pytest.mark.lab

TENANT = "hlife"
# A second HA tenant on the same hosts: the failsafe test's cluster and the target of the
# isolation attacks made from TENANT's OS user.
OTHER = "hatk"
ATTACK_SCRIPT = Path(__file__).with_name("tenant_attack.py")
# An HA tenant restricted to one client network (the first db host's address).
NET_TENANT = "hnet"
SECURITY_THRESHOLD = 5.0  # systemd-analyze security: below 5.0 is rated "OK" or better


@pytest.fixture(scope="module")
def other(lab):
    """HA tenant OTHER with one replica; yields its hakit.Cluster."""
    tenant_ha(lab, {"name": OTHER, "replicas": 1})
    cluster = hakit.Cluster(OTHER, members_of(lab, OTHER), lab.proxy[1])
    try:
        hakit.wait_for(f"a healthy cluster of 2 ({OTHER})", cluster.healthy, timeout=120)
        yield cluster
    finally:
        cluster.close()


def execute(cluster: hakit.Cluster, sql: str) -> None:
    with cluster.connect() as conn:
        conn.execute(sql)


def leftovers(host: str) -> dict[str, str]:
    """What a host still has of the tenant (empty strings: nothing)."""
    checks = {
        "units": f"systemctl list-units --all --plain --no-legend 'shadowdb-*@{TENANT}*' | grep -v not-found",
        "volume": f"ls /etc/shadowdb/volumes/{TENANT}.env /var/lib/shadowdb/volumes/{TENANT}.img",
        "mount": f"findmnt -n /mnt/db/{TENANT}",
        "user": f"getent passwd pg-{TENANT}",
        "config": f"ls /etc/patroni/{TENANT}.yml /etc/shadowdb/tenants/{TENANT}",
        "ports": f"grep -h '\"{TENANT}\"' /var/lib/shadowdb/ports/*.json",
    }
    return {what: hakit.sh(host, f"{cmd} 2>/dev/null; true").strip() for what, cmd in checks.items()}


def test_failsafe_keeps_the_leader_through_an_etcd_outage(lab, other):
    """Issue 12 item 10: every etcd member stopped for 60 s; a writer through HAProxy keeps writing
    to the leader, which is never demoted; no acknowledged row is lost."""
    cluster = other
    leader = hakit.wait_for("a healthy cluster", cluster.healthy, timeout=60)
    config = cluster.api(leader, "/config")[1]
    assert config["failsafe_mode"] is True, config
    hakit.Writer.prepare(cluster)
    writer = hakit.Writer(cluster, duration=150)
    writer.start()
    proxy = lab.proxy[0]
    roles: list[tuple[float, str]] = []
    try:
        hakit.wait_for("first writes", lambda: len(writer.acked) > 20, timeout=30)
        stopped = time.time()
        hakit.sh(proxy, "systemctl stop etcd.service")
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                role = cluster.roles().get(leader, ("unreachable", ""))[0]
                roles.append((time.time() - stopped, role))
                time.sleep(1)
            assert hakit.sh(proxy, "systemctl is-active etcd.service; true").strip() != "active"
        finally:
            hakit.sh(proxy, "systemctl start etcd.service")
        restarted = time.time()
        assert hakit.wait_for("the cluster healthy again", cluster.healthy, timeout=90) == leader
        time.sleep(3)
    finally:
        writer.stop_event.set()
        writer.join(timeout=30)
    during = [n for n, t in writer.acked if stopped < t < restarted]
    gap = writer.outage(stopped, until=restarted)
    print(
        f"\netcd down {restarted - stopped:.0f} s: {len(during)} rows acknowledged meanwhile, longest "
        f"write gap {gap:.1f} s, {len(writer.errors)} failed attempts, leader {leader} kept"
    )
    assert len(roles) >= 30 and all(role == "primary" for _, role in roles), roles
    assert len(during) > 100 and gap < 5, (len(during), gap)
    assert writer.lost() == []


def refused_local_reads(journal: str) -> list[str]:
    """Patroni's failed reads of the local timeline (its replication connection to localhost)
    whose error was a refused connection, as the egress firewall's reset gives; a read that
    fails while PostgreSQL is still starting up says so instead and is not counted."""
    lines, refused = journal.splitlines(), []
    for i, line in enumerate(lines):
        if "Can not fetch local timeline" in line:
            after = lines[i + 1 : i + 60]
            # The traceback runs until the next line that starts with a timestamp.
            end = next((j for j, text in enumerate(after) if re.match(r"\d{4}-\d\d-\d\d ", text)), len(after))
            if any("Connection refused" in text for text in after[:end]):
                refused.append(line)
    return refused


def test_an_old_leader_that_wrote_alone_is_rewound_after_its_host_crashed(lab, other):
    """The leader's last rows reach no replica (its routes to them cut, synchronous_commit=local),
    then its host crashes (podman kill: no clean shutdown). A replica takes over; when the host is
    back, the old leader's timeline has diverged from the new leader's, and Patroni must rewind it
    (pg_rewind) before it can stream again. Patroni runs as the tenant's OS user, under the egress
    firewall, and reads the local timeline over a replication connection to localhost: it was
    refused there once, and the old leader stayed out for good."""
    leader = hakit.wait_for(f"a healthy cluster ({OTHER})", other.healthy, timeout=120)
    hakit.wait_for("a synchronous standby", other.sync_standbys, timeout=30)
    execute(other, "CREATE TABLE IF NOT EXISTS crashed (n int, kind text)")
    execute(other, "INSERT INTO crashed SELECT g, 'replicated' FROM generate_series(1, 50) g")
    replicas = [address for member, address in other.members.items() if member != leader]
    hakit.partition(leader, replicas)
    with other.connect() as conn:
        conn.execute("SET synchronous_commit = local")  # acknowledged on the leader alone
        conn.execute("INSERT INTO crashed SELECT g, 'alone' FROM generate_series(1, 50) g")
    loops = hakit.own_loop_devices(leader, OTHER)
    hakit.stop_host(leader)
    try:
        hakit.wait_for("a new leader", lambda: other.leader() not in (None, leader), timeout=90, interval=1)
    finally:
        hakit.release_loops(loops)
        restarted = int(time.time())
        hakit.start_host(leader)
    try:
        hakit.wait_for(
            "the old leader back as a streaming replica",
            lambda: other.roles().get(leader) == ("replica", "streaming"),
            timeout=150,
            interval=1,
        )
    finally:
        unit = f"shadowdb-patroni@{OTHER}"
        since = f"--since @{restarted} --no-pager -o cat"
        journal = hakit.sh(leader, f"journalctl -u {unit} {since}", check=False)
        print("\n".join(line for line in journal.splitlines() if "rewind" in line or "timeline" in line))
    # It diverged (the rows it wrote alone are gone) and Patroni rewound it. Patroni reads the
    # timeline of a RUNNING member over its local replication connection: when that is refused,
    # a member whose PostgreSQL started before the check is never rewound (seen in the failover
    # bench); here PostgreSQL is usually down at the check (pg_controldata is read instead), so
    # the refusal is checked on its own.
    assert "running pg_rewind from" in journal, journal[-3000:]
    assert refused_local_reads(journal) == [], journal[-3000:]
    counts = dict(other.query("SELECT kind, count(*) FROM crashed GROUP BY kind"))
    assert counts == {"replicated": 50}, counts
    new_leader = hakit.wait_for(f"a healthy cluster ({OTHER})", other.healthy, timeout=60)
    assert new_leader != leader
    execute(other, "DROP TABLE crashed")
    # The leader back where it was: the registry's record (members' roles at registration) and
    # the next tests see the tenant as before. In synchronous mode Patroni switches over only to
    # the synchronous standby (412 before the rejoined member is one again).
    standby = "the old leader as the synchronous standby"
    hakit.wait_for(standby, lambda: leader in other.sync_standbys(), timeout=90, interval=1)
    other.switchover(new_leader)
    hakit.wait_for("the old leader leading again", lambda: other.healthy() == leader, timeout=60, interval=1)


def attack(
    lab, attacker: str, host: str, victim: hakit.Cluster, victim_member: str, as_root: bool = False
) -> dict[str, str]:
    """Run tests/ha/tenant_attack.py as the attacker tenant's OS user from its own PostgreSQL on
    host (COPY ... FROM PROGRAM as its superuser, as a superuser tenant can); {attempt: outcome}.
    as_root: run it as root instead, a network client holding the tenant's secrets (no sandbox,
    no egress firewall)."""
    script = "/usr/local/share/shadowdb-tenant-attack.py"
    hakit.podman("cp", str(ATTACK_SCRIPT), f"{host}:{script}")
    hakit.sh(host, f"chmod 0644 {script}")
    port = json.loads(hakit.sh(host, "cat /var/lib/shadowdb/ports/ha_postgres.json"))["leases"][attacker]
    etcd = f"https://{lab.proxy[1]}:2379"
    rest = f"https://{victim.members[victim_member]}:{victim.api_ports[victim_member]}"
    own_host = next(h for h in members_of(lab, attacker) if h != host)
    own_port = json.loads(hakit.sh(own_host, "cat /var/lib/shadowdb/ports/patroni_api.json"))["leases"][
        attacker
    ]
    own_rest = f"https://{lab.db[own_host]}:{own_port}"
    program = f"python3 {script} {attacker} {victim.tenant} {etcd} {rest} {own_rest}"
    sql = (
        f"CREATE TEMP TABLE attack (line text); COPY attack FROM PROGRAM '{program}'; SELECT line FROM attack"  # noqa: S608
    )
    try:
        if as_root:
            out = hakit.sh(host, program)
        else:
            out = hakit.sh(
                host, f'psql -q -h /mnt/db/{attacker}/run -p {port} -U postgres -d postgres -Atc "{sql}"'
            )
    finally:
        hakit.sh(host, f"rm -f {script}")
    return dict(line.split(" ", 1) for line in out.splitlines() if " " in line)


def own_volumes_mounted(lab, tenant: str) -> dict[str, tuple[str, str]]:
    """{member: (device mounted at the tenant's mount point, the member's own loop device)}.
    The members' volumes carry the same label on one kernel (lab hosts share its loop devices):
    each member must have mounted its own."""
    mounts = {}
    for host in members_of(lab, tenant):
        mounted = hakit.sh(host, f"findmnt -n -o SOURCE --mountpoint /mnt/db/{tenant}").strip()
        own = hakit.sh(host, f"losetup -j /var/lib/shadowdb/volumes/{tenant}.img | cut -d: -f1").strip()
        mounts[host] = (mounted, own)
    return mounts


def test_replica_removed_from_a_live_tenant_then_the_tenant(lab, other):
    tenant_ha(lab, {"name": TENANT, "replicas": 2})
    # The three members were made at the same time, their volumes labelled within moments.
    mounts = own_volumes_mounted(lab, TENANT)
    assert len(mounts) == 3, mounts
    assert all(mounted == own and own.startswith("/dev/loop") for mounted, own in mounts.values()), mounts
    cluster = hakit.Cluster(TENANT, lab.db, lab.proxy[1])
    try:
        leader = hakit.wait_for("a healthy cluster of 3", cluster.healthy, timeout=120)
        hakit.Writer.prepare(cluster)
        execute(cluster, "INSERT INTO ha_writes (run, n) SELECT 1, g FROM generate_series(1, 100) g")
    finally:
        cluster.close()

    # Issue 12 items 4 and 6, the HA capstone: etcd authentication is on, each tenant's Patroni
    # has its own etcd user, and TENANT's OS user (a superuser's COPY ... PROGRAM) reaches etcd
    # only as itself (its own prefix) and none of OTHER's unsafe REST API endpoints.
    proxy = lab.proxy[0]
    assert "Authentication Status: true" in hakit.sh(proxy, f"{ETCDCTL} auth status")
    users = hakit.sh(proxy, f"{ETCDCTL} user list").split()
    assert {f"patroni-{TENANT}", f"patroni-{OTHER}", "registry-writer", "registry-reader", "root"} <= set(
        users
    )
    assert f"/shadowdb/patroni/{TENANT}/" in hakit.sh(proxy, f"{ETCDCTL} role get patroni-{TENANT}")
    for host in lab.db:  # the registry writer's credentials are the controller's only
        assert hakit.sh(host, "grep -rl registry-writer /etc/shadowdb/etcd 2>/dev/null; true").strip() == ""
    # Patroni's REST API: TLS on the member's address only.
    api_port = json.loads(hakit.sh(leader, "cat /var/lib/shadowdb/ports/patroni_api.json"))["leases"][TENANT]
    listening = hakit.sh(leader, f"ss -Hltn 'sport = :{api_port}'")
    local = [
        line.split()[3] for line in listening.splitlines() if line.strip()
    ]  # State Recv-Q Send-Q Local Peer
    assert local == [f"{lab.db[leader]}:{api_port}"], listening
    victim_member = next(iter(other.members))
    outcomes = attack(lab, TENANT, leader, other, victim_member)
    print(f"\nattack from {TENANT}'s OS user: {outcomes}")
    expected = {
        "login": "ok",
        "own_read": "ok",
        "own_write": "ok",
        "own_delete": "ok",
        "other_read": "denied",
        "other_write": "denied",
        "other_delete": "denied",
        "all_read": "denied",
        "registry_read": "denied",
        "registry_write": "denied",
        "user_list": "denied",
        "grant_root": "denied",
        "cert_only": "anonymous",
        "other_login": "badpassword",
        # The egress firewall: its own members' exact ports only, not the other tenant's.
        "rest_own": "200",
        "rest_restart": "refused",
        "rest_config": "refused",
        "rest_switchover": "refused",
        "rest_reinitialize": "refused",
        "rest_restart_nocert": "refused",
        "list_configs": "denied",
    }
    assert {attempt: outcomes.get(attempt) for attempt in expected} == expected, outcomes
    # The same secrets used from outside the sandbox (root, a network client): the other
    # tenant's REST API asks for its own password and a client certificate.
    outside = attack(lab, TENANT, leader, other, victim_member, as_root=True)
    rest_expected = {
        "rest_restart": "401",
        "rest_config": "401",
        "rest_switchover": "401",
        "rest_reinitialize": "401",
        "rest_restart_nocert": "403",
    }
    assert {attempt: outside.get(attempt) for attempt in rest_expected} == rest_expected, outside
    # The other tenant's Patroni configuration, when it has a member on this host: unreadable.
    assert outcomes.get("other_config") in ("denied", "absent"), outcomes
    # etcdctl (gRPC) with TENANT's certificate: no identity from the certificate, its own
    # password reaches its own prefix only.
    hakit.sh(proxy, "mkdir -p -m 0700 /tmp/attack")
    for name in ("etcd.crt", "etcd.key"):
        local = Path(hakit.Cluster._copy(leader, f"/mnt/db/{TENANT}/tls/{name}"))
        try:
            hakit.podman("cp", str(local), f"{proxy}:/tmp/attack/{name}")
        finally:
            local.unlink()
    etcd_password = yaml.safe_load(hakit.sh(leader, f"cat /etc/patroni/{TENANT}.yml"))["etcd3"]["password"]
    grpc = (
        "/usr/bin/etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/etcd/pki/ca.crt"
        " --cert=/tmp/attack/etcd.crt --key=/tmp/attack/etcd.key --command-timeout=5s"
    )
    try:
        as_cert = hakit.sh(proxy, f"{grpc} get --prefix /shadowdb/patroni/{OTHER}/ 2>&1; true")
        as_tenant = f"{grpc} --user=patroni-{TENANT}:{etcd_password}"
        own = hakit.sh(proxy, f"{as_tenant} get --prefix --keys-only /shadowdb/patroni/{TENANT}/ 2>&1; true")
        theirs = hakit.sh(proxy, f"{as_tenant} put /shadowdb/patroni/{OTHER}/config x 2>&1; true")
    finally:
        hakit.sh(proxy, "rm -rf /tmp/attack")
    assert "user name is empty" in as_cert, as_cert
    assert f"/shadowdb/patroni/{TENANT}/leader" in own, own
    assert "permission denied" in theirs, theirs

    # Root never follows a link the tenant planted in its own directory: its OS user (what a
    # superuser tenant can act as) replaces its server certificate with a link to /etc/shadow.
    # The next converge fails naming the link; /etc/shadow is neither read out nor written.
    shadow = "sha256sum /etc/shadow; stat -c '%U %a %s' /etc/shadow"
    before = hakit.sh(leader, shadow)
    hakit.sh(leader, f"runuser -u pg-{TENANT} -- ln -sf /etc/shadow /mnt/db/{TENANT}/tls/server.crt")
    output = tenant_ha(lab, {"name": TENANT, "replicas": 2}, check=False)
    assert f"/mnt/db/{TENANT}/tls/server.crt: refused" in output and "symbolic link" in output, output[-3000:]
    assert hakit.sh(leader, "head -1 /etc/shadow").strip() not in output  # nothing of it came back
    assert hakit.sh(leader, shadow) == before
    hakit.sh(leader, f"rm /mnt/db/{TENANT}/tls/server.crt")  # the next converge puts it back

    # One replica fewer: the leader stays where it is, one replica's host is emptied.
    output = tenant_ha(lab, {"name": TENANT, "replicas": 1})
    assert "Remove the members no longer wanted" in output
    remaining = {h: a for h, a in lab.db.items() if leftovers(h)["volume"]}
    dropped = sorted(set(lab.db) - set(remaining))
    assert len(remaining) == 2 and leader in remaining, (remaining, leader)
    assert len(dropped) == 1
    assert leftovers(dropped[0]) == dict.fromkeys(leftovers(dropped[0]), ""), leftovers(dropped[0])

    cluster = hakit.Cluster(TENANT, remaining, lab.proxy[1])
    try:
        assert hakit.wait_for("a healthy cluster of 2", cluster.healthy, timeout=120) == leader
        # Rows written before are there; writes and reads go on through the same address.
        assert cluster.query("SELECT count(*) FROM ha_writes WHERE run = 1") == [(100,)]
        execute(cluster, "INSERT INTO ha_writes (run, n) VALUES (2, 1)")
        hakit.wait_for(
            "the row on the replica",
            lambda: cluster.query("SELECT count(*) FROM ha_writes WHERE run = 2", readonly=True) == [(1,)],
            timeout=30,
        )
    finally:
        cluster.close()

    # HAProxy routes to the two remaining members only.
    proxy = lab.proxy[0]
    fragment = hakit.sh(proxy, f"cat /etc/haproxy/conf.d/{TENANT}.cfg")
    for host, address in lab.db.items():
        assert (address in fragment) == (host in remaining), (host, fragment)
    record = json.loads(hakit.sh(proxy, f"{ETCDCTL} get --print-value-only /shadowdb/tenants/{TENANT}"))
    assert sorted(m["host"] for m in record["members"]) == sorted(remaining)

    # A second run with the same spec changes nothing.
    again = tenant_ha(lab, {"name": TENANT, "replicas": 1})
    recap = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", again, re.M))
    assert recap and set(recap.values()) == {"0"}, recap

    # The whole tenant: refused without the confirmation, then removed everywhere.
    refused = tenant_ha(lab, {"name": TENANT, "state": "absent"}, check=False)
    assert f"pass -e confirm={TENANT}" in refused
    assert leftovers(leader)["volume"], "nothing may be removed before the confirmation"

    tenant_ha(lab, {"name": TENANT, "state": "absent"}, "-e", f"confirm={TENANT}")
    for host in lab.db:
        assert leftovers(host) == dict.fromkeys(leftovers(host), ""), (host, leftovers(host))
    assert hakit.sh(proxy, f"{ETCDCTL} get --prefix --keys-only /shadowdb/patroni/{TENANT}/").strip() == ""
    assert hakit.sh(proxy, f"{ETCDCTL} get --keys-only /shadowdb/tenants/{TENANT}").strip() == ""
    # Its etcd identity went with it; the other tenant's stays.
    users = hakit.sh(proxy, f"{ETCDCTL} user list").split()
    assert f"patroni-{TENANT}" not in users and f"patroni-{OTHER}" in users, users
    assert f"patroni-{TENANT}" not in hakit.sh(proxy, f"{ETCDCTL} role list").split()
    assert hakit.sh(proxy, f"ls /etc/haproxy/conf.d/{TENANT}.cfg 2>/dev/null; true").strip() == ""
    assert f"{TENANT}." not in hakit.sh(proxy, "cat /etc/haproxy/maps/sni.map")


def test_a_config_that_does_not_start_is_rolled_back_on_every_member(lab, other):
    """Issue 12 item 7 on the HA path: huge_pages=on (valid, but the lab reserves no huge pages)
    waits for a restart; the replica is restarted first, does not come up, and every member gets
    the last good configuration back while the leader keeps serving. The run fails naming
    PostgreSQL's error; the old spec then converges with no change."""
    leader = other.leader()
    assert leader, other.roles()
    if hakit.sh(leader, "cat /proc/sys/vm/nr_hugepages").strip() != "0":
        pytest.skip("the host reserves huge pages: huge_pages=on would start")
    execute(other, "CREATE TABLE IF NOT EXISTS rollback_rows (n int)")
    execute(other, "INSERT INTO rollback_rows VALUES (1)")

    bad = tenant_ha(lab, {"name": OTHER, "replicas": 1, "settings": {"huge_pages": "on"}}, check=False)
    assert f"tenant {OTHER}: the new configuration did not come up on" in bad, bad[-3000:]
    assert "could not map anonymous shared memory" in bad, bad[-3000:]
    assert "The last good configuration was put back and every member serves it again" in bad, bad[-3000:]

    # Both members run on the old settings, with the same leader and the rows written before.
    assert hakit.wait_for("a healthy cluster of 2", other.healthy, timeout=120) == leader
    assert other.query("SHOW huge_pages") == [("try",)]
    assert other.query("SELECT count(*) FROM rollback_rows") == [(1,)]
    execute(other, "INSERT INTO rollback_rows VALUES (2)")

    again = tenant_ha(lab, {"name": OTHER, "replicas": 1})
    recap = dict(re.findall(r"^(\S+)\s*:\s*ok=\d+\s+changed=(\d+)", again, re.M))
    assert recap and set(recap.values()) == {"0"}, recap


def probe(host: str, mode: str, tenant: str, address: str, port: int) -> str:
    """tests/routing/client.py's PROBE run on a lab host: admitted, refused, nohba or error: ..."""
    script = f"python3 - {mode} {tenant} {address} {port} {DOMAIN} <<'EOF'\n{PROBE}\nEOF"
    return hakit.sh(host, script).strip()


def test_client_networks_of_an_ha_tenant_hold_on_every_path(lab):
    """Issue 12 items 3 and 8 on the HA path: a tenant's client networks (hba) are in its registry
    record, HAProxy enforces them on the SNI route and on the tenant's own port, the members'
    pg_hba admits the proxy host, and a client outside the networks is refused on all three paths
    (direct to the leader too). The Patroni unit's sandbox is rated OK by systemd-analyze."""
    inside, outside = sorted(lab.db)[:2]
    hba = [f"{lab.db[inside]}/32"]
    tenant_ha(lab, {"name": NET_TENANT, "replicas": 1, "hba": hba})
    cluster = hakit.Cluster(NET_TENANT, members_of(lab, NET_TENANT), lab.proxy[1])
    try:
        leader = hakit.wait_for("a healthy cluster of 2", cluster.healthy, timeout=120)
        record = json.loads(
            hakit.sh(lab.proxy[0], f"{ETCDCTL} get --print-value-only /shadowdb/tenants/{NET_TENANT}")
        )
        assert record["hba"] == hba, record
        paths = {
            "sni": ("sni", lab.proxy[1], SNI_PORT),
            "own port": ("port", lab.proxy[1], record["proxy_port"]),
            "direct": ("port", lab.db[leader], cluster._lease(leader, "ha_postgres")),
        }
        seen = {
            (client, path): probe(host, mode, NET_TENANT, address, port)
            for client, host in (("inside", inside), ("outside", outside))
            for path, (mode, address, port) in paths.items()
        }
        unit = f"shadowdb-patroni@{NET_TENANT}.service"
        security = hakit.sh(leader, f"systemd-analyze security --no-pager {unit}")
        # What the member's sandbox shows (its mount and IPC namespaces, as its OS user).
        user = f"pg-{NET_TENANT}"
        pid = f"$(systemctl show -p MainPID --value {unit})"
        in_sandbox = f"nsenter -t {pid} -m -i -S $(id -u {user}) -G $(id -g {user}) --"
        sandbox = {
            "mount root": hakit.sh(leader, f"{in_sandbox} ls /mnt/db").split(),
            "tenant users": hakit.sh(
                leader, f"{in_sandbox} getent passwd | grep 'ShadowDB tenant' | cut -d: -f1"
            ).split(),
            "/dev/shm KiB": hakit.sh(leader, f"{in_sandbox} df -k --output=size /dev/shm | tail -1").strip(),
        }
        on_host = hakit.sh(leader, "ls /mnt/db").split()
    finally:
        cluster.close()
    print(f"\nclients of HA tenant {NET_TENANT} (hba {hba}): {seen}")
    assert seen == {
        ("inside", "sni"): "admitted",
        ("inside", "own port"): "admitted",
        ("inside", "direct"): "admitted",
        ("outside", "sni"): "refused",
        ("outside", "own port"): "refused",
        ("outside", "direct"): "nohba",
    }, seen
    # No other tenant of the host in the member's sandbox (the host has them: {on_host}).
    print(f"tenants on the leader's host: {on_host}; in the member's sandbox: {sandbox}")
    assert sandbox == {"mount root": [NET_TENANT], "tenant users": [user], "/dev/shm KiB": str(128 * 1024)}
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+) (\S+)", security)
    assert match, security[-3000:]
    print(f"systemd-analyze security {unit}: {match.group(1)} {match.group(2)}")
    assert float(match.group(1)) < SECURITY_THRESHOLD, security[-3000:]

    tenant_ha(lab, {"name": NET_TENANT, "state": "absent"}, "-e", f"confirm={NET_TENANT}")
