"""Tests of library/shadowdb_port.py: pure helpers, and the module run for real as a subprocess."""

import json
import random
import socket
import stat
import subprocess

import pytest
import shadowdb_port as sp
from conftest import module_command, parse_result

MODULE = "shadowdb_port"


@pytest.fixture
def lease_dir(tmp_path):
    return tmp_path / "ports"


@pytest.fixture
def lease(run_module, lease_dir):
    """lease(name, start, end, **extra) runs the module against the test lease_dir."""

    def run(name, range_start=None, range_end=None, check_mode=False, **extra):
        args = dict(name=name, lease_dir=str(lease_dir), **extra)
        if range_start is not None:
            args.update(range_start=range_start, range_end=range_end)
        result, _proc = run_module(MODULE, args, check_mode=check_mode)
        return result

    return run


def read_leases(lease_dir, pool="postgres"):
    return json.loads((lease_dir / f"{pool}.json").read_text())["leases"]


def listening_ports():
    return sp.read_listening_ports()[0]


# --- pure helpers ---

PROC_NET_TCP_SAMPLE = """\
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 0100007F:1F91 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 2 1 0 20 4 30 10 -1
"""
PROC_NET_TCP6_SAMPLE = """\
  sl  local_address                         remote_address                        st tx_queue rx_queue
   0: 00000000000000000000000000000000:1770 00000000000000000000000000000000:0000 0A 00000000:00000000
   1: 00000000000000000000000001000000:1771 00000000000000000000000001000000:9C40 06 00000000:00000000
"""


def test_parse_listening_ports_only_listen_state():
    assert sp.parse_listening_ports(PROC_NET_TCP_SAMPLE) == {8080}
    assert sp.parse_listening_ports(PROC_NET_TCP6_SAMPLE) == {6000}
    assert sp.parse_listening_ports("") == set()


def test_read_listening_ports_merges_files_and_skips_missing(tmp_path):
    tcp, tcp6 = tmp_path / "tcp", tmp_path / "tcp6"
    tcp.write_text(PROC_NET_TCP_SAMPLE)
    tcp6.write_text(PROC_NET_TCP6_SAMPLE)
    assert sp.read_listening_ports([str(tcp), str(tcp6), str(tmp_path / "missing")]) == ({8080, 6000}, 2)
    assert sp.read_listening_ports([str(tmp_path / "missing")]) == (set(), 0)


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        (dict(name="Acme"), "name="),
        (dict(name="-acme"), "name="),
        (dict(pool="pg pool"), "pool="),
        (dict(range_start=1023), "range_start="),
        (dict(range_start=70000, range_end=70001), "range_start="),
        (dict(range_end=65536), "range_end="),
        (dict(range_start=6001, range_end=6000), "range_end="),
    ],
)
def test_validate_params_names_argument(overrides, argument):
    params = dict(name="acme", pool="postgres", range_start=6000, range_end=6010) | overrides
    assert sp.validate_params(params).startswith(argument)


def test_validate_params_accepts_valid_and_missing_range():
    valid = dict(name="acme-1", pool="patroni_api", range_start=1024, range_end=65535)
    assert sp.validate_params(valid) is None
    assert sp.validate_params(dict(name="acme", pool="postgres", range_start=None, range_end=None)) is None


def test_choose_port_skips_leased_and_listening():
    rng = random.Random(1)
    picks = {sp.choose_port(6000, 6004, {6000, 6001}, {6003}, rng) for _ in range(200)}
    assert picks == {6002, 6004}
    assert sp.choose_port(6000, 6001, {6000}, {6001}, rng) is None


def test_exhausted_message():
    msg = sp.exhausted_message(6000, 6001, "postgres", {6000, 6001, 7000}, set())
    assert msg.startswith("port range 6000-6001 of pool 'postgres' is exhausted: 2 ports leased, 0 free")
    assert "range_start/range_end" in msg
    msg = sp.exhausted_message(6000, 6001, "proxy", {6000}, {6001})
    assert "1 port leased, 1 listening without a lease, 0 free" in msg


@pytest.mark.parametrize(
    "text",
    [
        "",
        "[]",
        '{"leases": []}',
        '{"leases": {"a": "6000"}}',
        '{"leases": {"a": true}}',
        '{"leases": {"a": 0}}',
    ],
)
def test_parse_lease_data_rejects_corrupt(text):
    with pytest.raises(sp.LeaseFileError):
        sp.parse_lease_data(text)


def test_parse_lease_data_defaults_and_keeps_extra_keys():
    assert sp.parse_lease_data("{}") == {"leases": {}}
    data = sp.parse_lease_data('{"leases": {"a": 6000}, "comment": "x"}')
    assert data == {"leases": {"a": 6000}, "comment": "x"}


# --- the module, run as a subprocess ---


def test_allocates_port_in_range_and_writes_lease_file(lease, lease_dir):
    result = lease("acme", 20000, 20999, check_free=False)
    assert not result.get("failed"), result
    assert result["changed"] is True
    assert 20000 <= result["port"] <= 20999
    assert (result["name"], result["pool"], result["leases_count"]) == ("acme", "postgres", 1)
    assert result["diff"] == {"before": "acme: absent\n", "after": f"acme: {result['port']}\n"}
    assert read_leases(lease_dir) == {"acme": result["port"]}
    assert stat.S_IMODE(lease_dir.stat().st_mode) == 0o755
    assert stat.S_IMODE((lease_dir / "postgres.json").stat().st_mode) == 0o644
    assert sorted(p.name for p in lease_dir.iterdir()) == ["postgres.json", "postgres.lock"]  # no temp files


def test_lease_is_stable_across_runs_and_range_changes(lease):
    first = lease("acme", 20000, 20999, check_free=False)
    again = lease("acme", 20000, 20999, check_free=False)
    assert again["port"] == first["port"]
    assert again["changed"] is False
    assert again["diff"]["before"] == again["diff"]["after"]
    moved = lease("acme", 30000, 30010, check_free=False)
    assert moved["port"] == first["port"]
    assert moved["changed"] is False
    # ansible-core >= 2.19 returns warnings as structured objects; only their text matters here
    warnings = json.dumps(moved.get("warnings", []))
    assert f"keeps its lease of port {first['port']}" in warnings and "outside" in warnings, moved


def test_two_names_get_different_ports(lease, lease_dir):
    a = lease("acme", 20000, 20001, check_free=False)
    b = lease("globex", 20000, 20001, check_free=False)
    assert {a["port"], b["port"]} == {20000, 20001}
    assert b["leases_count"] == 2
    assert read_leases(lease_dir) == {"acme": a["port"], "globex": b["port"]}


def test_pools_are_independent(lease, lease_dir):
    pg = lease("acme", 20000, 20000, check_free=False)
    proxy = lease("acme", 20000, 20000, check_free=False, pool="proxy")
    assert pg["port"] == proxy["port"] == 20000
    assert proxy["pool"] == "proxy"
    assert read_leases(lease_dir, "proxy") == {"acme": 20000}


def test_exhausted_range_fails_naming_the_range(lease, lease_dir):
    lease("acme", 6000, 6001, check_free=False)
    lease("globex", 6000, 6001, check_free=False)
    result = lease("initech", 6000, 6001, check_free=False)
    assert result["failed"] is True
    expected = "port range 6000-6001 of pool 'postgres' is exhausted: 2 ports leased, 0 free"
    assert result["msg"].startswith(expected)
    assert "range_start/range_end" in result["msg"]
    assert "initech" not in read_leases(lease_dir)


def test_absent_releases_lease(lease, lease_dir):
    acme = lease("acme", 6000, 6000, check_free=False)
    released = lease("acme", state="absent")
    assert released["changed"] is True
    assert released["port"] == acme["port"] == 6000
    assert released["leases_count"] == 0
    assert released["diff"] == {"before": "acme: 6000\n", "after": "acme: absent\n"}
    assert read_leases(lease_dir) == {}
    again = lease("acme", state="absent")
    assert (again["changed"], again["port"]) == (False, None)
    # the released port can be leased again
    assert lease("globex", 6000, 6000, check_free=False)["port"] == 6000


def test_check_mode_writes_nothing(lease, lease_dir):
    would = lease("acme", 20000, 20999, check_mode=True, check_free=False)
    assert would["changed"] is True
    assert 20000 <= would["port"] <= 20999
    assert would["diff"]["after"] == f"acme: {would['port']}\n"
    assert not lease_dir.exists()

    real = lease("acme", 20000, 20999, check_free=False)
    before = (lease_dir / "postgres.json").read_bytes()
    existing = lease("acme", 20000, 20999, check_mode=True, check_free=False)
    assert (existing["changed"], existing["port"]) == (False, real["port"])
    would_release = lease("acme", state="absent", check_mode=True)
    assert (would_release["changed"], would_release["port"]) == (True, real["port"])
    would_add = lease("globex", 20000, 20999, check_mode=True, check_free=False)
    assert would_add["changed"] is True and would_add["port"] != real["port"]
    assert (lease_dir / "postgres.json").read_bytes() == before


@pytest.mark.parametrize(
    ("start", "end", "argument"),
    [(6001, 6000, "range_end=6000"), (80, 90, "range_start=80"), (6000, 70000, "range_end=70000")],
)
def test_invalid_range_fails_naming_argument(lease, lease_dir, start, end, argument):
    result = lease("acme", start, end)
    assert result["failed"] is True
    assert result["msg"].startswith(argument), result["msg"]
    assert not lease_dir.exists()


def test_invalid_name_fails_naming_argument(lease):
    result = lease("Acme Corp", 6000, 6001)
    assert result["failed"] is True
    assert result["msg"].startswith("name='Acme Corp' is invalid")


def test_present_requires_range(lease):
    result = lease("acme")
    assert result["failed"] is True
    assert "range_start" in result["msg"] and "range_end" in result["msg"]


def test_corrupt_lease_file_fails_naming_file(lease, lease_dir):
    lease_dir.mkdir()
    (lease_dir / "postgres.json").write_text("{not json")
    result = lease("acme", 6000, 6001)
    assert result["failed"] is True
    assert str(lease_dir / "postgres.json") in result["msg"]
    assert (lease_dir / "postgres.json").read_text() == "{not json"


@pytest.fixture
def listener():
    """A real listening TCP socket on 127.0.0.1; yields its port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


def test_check_free_skips_listening_port(lease, listener):
    if listener < 1024:
        pytest.skip("ephemeral port below 1024")
    result = lease("acme", listener, listener)
    assert result["failed"] is True
    assert f"port range {listener}-{listener} of pool 'postgres' is exhausted" in result["msg"]
    assert "0 ports leased, 1 listening without a lease, 0 free" in result["msg"]
    # without check_free the listening port is handed out
    assert lease("acme", listener, listener, check_free=False)["port"] == listener


def test_check_free_chooses_the_other_port_of_two(lease, listener):
    other = listener + 1 if listener < 65535 else listener - 1
    if other in listening_ports() or min(listener, other) < 1024:
        pytest.skip(f"neighbour port {other} is in use")
    start, end = sorted((listener, other))
    result = lease("acme", start, end)
    assert result["port"] == other
    full = lease("globex", start, end)
    assert full["failed"] is True
    assert "1 port leased, 1 listening without a lease, 0 free" in full["msg"]


def test_concurrent_runs_get_distinct_ports(tmp_path, lease_dir):
    names = [f"tenant{i:02d}" for i in range(20)]
    procs = [
        subprocess.Popen(
            module_command(
                MODULE,
                dict(name=n, range_start=40000, range_end=40019, lease_dir=str(lease_dir), check_free=False),
                tmp_path,
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in names
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=120)
        results.append(parse_result(subprocess.CompletedProcess(proc.args, proc.returncode, stdout, stderr)))
    assert all(r["changed"] and not r.get("failed") for r in results), results
    ports = [r["port"] for r in results]
    assert sorted(ports) == list(range(40000, 40020))
    assert read_leases(lease_dir) == dict(zip(names, ports, strict=True))


# --- the list form: the ports of a batch of tenants in one call ---


@pytest.fixture
def lease_many(run_module, lease_dir):
    """lease_many(names, start, end, **extra) runs the module's list form against the test lease_dir."""

    def run(names, range_start=None, range_end=None, check_mode=False, **extra):
        args = dict(names=names, lease_dir=str(lease_dir), **extra)
        if range_start is not None:
            args.update(range_start=range_start, range_end=range_end)
        result, _proc = run_module(MODULE, args, check_mode=check_mode)
        return result

    return run


def test_names_get_distinct_stable_ports_in_one_call(lease, lease_many, lease_dir):
    acme = lease("acme", 20000, 20009, check_free=False)
    names = ["globex", "acme", "initech", "umbrella"]
    result = lease_many(names, 20000, 20009, check_free=False)
    assert not result.get("failed"), result
    assert result["changed"] is True and result["failed_tenants"] == {}
    ports = result["ports"]
    assert list(ports) == names and ports["acme"] == acme["port"]  # an existing lease is kept
    assert len(set(ports.values())) == 4 and all(20000 <= p <= 20009 for p in ports.values())
    assert read_leases(lease_dir) == ports
    assert (result["pool"], result["leases_count"]) == ("postgres", 4)
    assert (
        result["diff"]["before"]
        == f"globex: absent\nacme: {acme['port']}\ninitech: absent\numbrella: absent\n"
    )
    assert result["diff"]["after"] == "".join(f"{n}: {ports[n]}\n" for n in names)
    assert "port" not in result and "name" not in result

    again = lease_many(names, 20000, 20009, check_free=False)
    assert (again["changed"], again["ports"]) == (False, ports)
    # the single form sees the leases of the list form
    assert lease("initech", 20000, 20009, check_free=False)["port"] == ports["initech"]
    empty = lease_many([], 20000, 20009)
    assert (empty["changed"], empty["ports"], empty["failed_tenants"]) == (False, {}, {})


def test_names_in_check_mode_tell_the_would_be_ports(lease, lease_many, lease_dir):
    would = lease_many(["acme", "globex"], 20000, 20001, check_mode=True, check_free=False)
    assert would["changed"] is True and would["failed_tenants"] == {}
    assert sorted(would["ports"].values()) == [20000, 20001]
    assert not lease_dir.exists()

    acme = lease("acme", 20000, 20002, check_free=False)["port"]
    before = (lease_dir / "postgres.json").read_bytes()
    full = lease_many(
        ["acme", "globex", "initech", "umbrella"], 20000, 20002, check_mode=True, check_free=False
    )
    assert full.get("failed") is not True, full
    assert full["ports"]["acme"] == acme and len(full["ports"]) == 3
    assert len(set(full["ports"].values())) == 3
    assert list(full["failed_tenants"]) == ["umbrella"]  # new leases go in the order given
    assert full["failed_tenants"]["umbrella"].startswith(
        "port range 20000-20002 of pool 'postgres' is exhausted: 3 ports leased, 0 free"
    )
    assert (lease_dir / "postgres.json").read_bytes() == before


def test_names_the_range_cannot_hold_are_failed_tenants(lease_many, lease_dir):
    result = lease_many(["acme", "globex", "initech"], 6000, 6001, check_free=False)
    assert result.get("failed") is not True, result
    assert result["changed"] is True
    assert set(result["ports"]) == {"acme", "globex"}
    assert sorted(result["ports"].values()) == [6000, 6001]
    expected = "port range 6000-6001 of pool 'postgres' is exhausted: 2 ports leased, 0 free"
    assert list(result["failed_tenants"]) == ["initech"]
    assert result["failed_tenants"]["initech"].startswith(expected)
    assert "range_start/range_end" in result["failed_tenants"]["initech"]
    assert read_leases(lease_dir) == result["ports"]
    nothing_free = lease_many(["initech", "umbrella"], 6000, 6001, check_free=False)
    assert (nothing_free["changed"], nothing_free["ports"]) == (False, {})
    assert sorted(nothing_free["failed_tenants"]) == ["initech", "umbrella"]


def test_names_absent_releases_them_all(lease_many, lease_dir):
    leased = lease_many(["acme", "globex", "initech"], 6000, 6009, check_free=False)["ports"]
    would = lease_many(["acme", "globex", "umbrella"], state="absent", check_mode=True)
    assert would["changed"] is True and read_leases(lease_dir) == leased
    released = lease_many(["acme", "globex", "umbrella"], state="absent")
    assert released["changed"] is True and released["failed_tenants"] == {}
    assert released["ports"] == {"acme": leased["acme"], "globex": leased["globex"], "umbrella": None}
    assert released["leases_count"] == 1
    assert read_leases(lease_dir) == {"initech": leased["initech"]}
    again = lease_many(["acme", "globex"], state="absent")
    assert (again["changed"], again["ports"]) == (False, {"acme": None, "globex": None})


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (dict(names=["acme", "Globex"]), "names[1]='Globex' is invalid"),
        (dict(names=["acme", "globex", "acme"]), "names: acme listed more than once"),
        (dict(names=["acme"], name="acme"), "mutually exclusive"),
        (dict(names=["acme"], range_start=6001, range_end=6000), "range_end=6000 is invalid"),
        (dict(names=["acme"], range_start=None, range_end=None), "range_start"),
        (dict(), "one of the following is required: name, names"),
    ],
)
def test_names_wrong_calls_fail(run_module, lease_dir, args, fragment):
    args = dict(dict(range_start=6000, range_end=6001), lease_dir=str(lease_dir), **args)
    args = {k: v for k, v in args.items() if v is not None}
    result, _proc = run_module(MODULE, args)
    assert result["failed"] is True and fragment in result["msg"], result
    assert not lease_dir.exists()


def test_names_with_a_corrupt_lease_file_fail(lease_many, lease_dir):
    lease_dir.mkdir()
    (lease_dir / "postgres.json").write_text("{not json")
    result = lease_many(["acme", "globex"], 6000, 6001)
    assert result["failed"] is True and str(lease_dir / "postgres.json") in result["msg"]
