"""Tests of library/shadowdb_pg_health.py: pure helpers, and the module run against closed ports.

Checks against a real PostgreSQL server live in the integration tests.
"""

import os
import socket

import pytest
import shadowdb_pg_health as hm

MODULE = "shadowdb_pg_health"
PASSWORD = "S3cr3t-pw'with\\odd-chars-7f1c"  # noqa: S105 -- must never show up in any output


def params(**overrides):
    base = dict(
        address="127.0.0.1",
        port=6123,
        server_name=None,
        dbname="acme",
        user="acme",
        password=PASSWORD,
        sslmode="verify-full",
        sslrootcert=None,
        sslnegotiation="postgres",
        timeout=30,
        interval=1.0,
        require_ssl=True,
    )
    return base | overrides


# --- connection arguments ---


def test_kwargs_verify_server_name_while_connecting_to_address():
    kwargs = hm.build_connect_kwargs(params(server_name="acme.db.example"), "127.0.0.1")
    assert kwargs == dict(
        host="acme.db.example",
        hostaddr="127.0.0.1",
        port=6123,
        dbname="acme",
        user="acme",
        password=PASSWORD,
        sslmode="verify-full",
        connect_timeout=5,
        application_name="shadowdb_pg_health",
    )


def test_kwargs_host_defaults_to_address():
    kwargs = hm.build_connect_kwargs(params(address="db1.internal"), "10.0.0.7", connect_timeout=3)
    assert (kwargs["host"], kwargs["hostaddr"], kwargs["connect_timeout"]) == ("db1.internal", "10.0.0.7", 3)


def test_kwargs_optional_tls_settings():
    kwargs = hm.build_connect_kwargs(
        params(sslrootcert="/etc/shadowdb/ca.crt", sslnegotiation="direct", sslmode="require"), "::1"
    )
    assert kwargs["sslrootcert"] == "/etc/shadowdb/ca.crt"
    assert kwargs["sslnegotiation"] == "direct"
    assert kwargs["sslmode"] == "require"
    assert kwargs["hostaddr"] == "::1"
    # the libpq default is not passed, so libpq < 17 (which does not know the option) still works
    assert "sslnegotiation" not in hm.build_connect_kwargs(params(), "127.0.0.1")
    assert "sslrootcert" not in hm.build_connect_kwargs(params(), "127.0.0.1")


def test_resolve_address_keeps_numeric_addresses():
    def no_dns(*_args, **_kwargs):
        raise AssertionError("numeric addresses must not be resolved")

    assert hm.resolve_address("192.0.2.10", 5432, getaddrinfo=no_dns) == "192.0.2.10"
    assert hm.resolve_address("2001:db8::1", 5432, getaddrinfo=no_dns) == "2001:db8::1"


def test_resolve_address_uses_first_getaddrinfo_result():
    calls = []

    def fake(host, port, **kwargs):
        calls.append((host, port, kwargs["type"]))
        return [
            (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2001:db8::5", port, 0, 0)),
            (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.5", port)),
        ]

    assert hm.resolve_address("acme.db.example", 6123, getaddrinfo=fake) == "2001:db8::5"
    assert calls == [("acme.db.example", 6123, socket.SOCK_STREAM)]


def test_resolve_address_failure_is_retryable_and_names_address():
    def fail(*_args, **_kwargs):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(hm.RetryableError, match="could not resolve address 'nowhere.invalid'"):
        hm.resolve_address("nowhere.invalid", 5432, getaddrinfo=fail)


def test_resolve_localhost_for_real():
    assert hm.resolve_address("localhost", 5432) in {"127.0.0.1", "::1"}


@pytest.mark.parametrize(
    ("address", "expected"),
    [("127.0.0.1", "127.0.0.1:6123"), ("::1", "[::1]:6123"), ("acme.db.example", "acme.db.example:6123")],
)
def test_format_endpoint(address, expected):
    assert hm.format_endpoint(address, 6123) == expected


@pytest.mark.parametrize(("remaining", "expected"), [(30, 5), (5, 5), (3.2, 4), (1, 2), (0, 2)])
def test_connect_timeout_for(remaining, expected):
    assert hm.connect_timeout_for(remaining) == expected


# --- validation ---


@pytest.mark.parametrize(
    ("overrides", "argument"),
    [
        (dict(port=0), "port=0"),
        (dict(port=70000), "port=70000"),
        (dict(timeout=-1), "timeout=-1"),
        (dict(interval=0.0), "interval=0.0"),
        (dict(address=""), "address"),
        (dict(sslnegotiation="direct", sslmode="prefer"), "sslnegotiation=direct"),
        (dict(sslmode="disable"), "sslmode=disable"),
        (dict(sslrootcert="/nonexistent/ca.crt"), "sslrootcert="),
    ],
)
def test_validate_params_names_argument(overrides, argument):
    error = hm.validate_params(params(**overrides))
    assert error is not None and error.startswith(argument), error


def test_validate_params_accepts_valid(tmp_path):
    ca = tmp_path / "ca.crt"
    ca.write_text("dummy")
    assert hm.validate_params(params()) is None
    assert hm.validate_params(params(sslrootcert=str(ca), sslnegotiation="direct")) is None
    assert hm.validate_params(params(sslrootcert="system")) is None
    assert hm.validate_params(params(sslmode="disable", require_ssl=False, timeout=0)) is None


# --- error summarising and scrubbing ---

LIBPQ_REFUSED = (
    'connection failed: connection to server at "127.0.0.1", port 6123 failed: Connection refused\n'
    "\tIs the server running on that host and accepting TCP/IP connections?"
)


def test_summarize_error_keeps_first_line():
    assert hm.summarize_error(Exception(LIBPQ_REFUSED)) == (
        'connection failed: connection to server at "127.0.0.1", port 6123 failed: Connection refused'
    )
    assert hm.summarize_error(Exception("\n\n  second line\nthird")) == "second line"


def test_summarize_error_scrubs_password_plain_and_conninfo_escaped():
    escaped = PASSWORD.replace("\\", "\\\\").replace("'", "\\'")
    error = Exception(f"bad conninfo: password={escaped} or {PASSWORD} user=acme")
    summary = hm.summarize_error(error, (PASSWORD,))
    assert PASSWORD not in summary and escaped not in summary
    assert summary == "bad conninfo: password=******** or ******** user=acme"


def test_scrub_ignores_empty_secret():
    assert hm.scrub("text", ("", None)) == "text"


def test_summarize_error_empty_and_long():
    assert hm.summarize_error(TimeoutError()) == "TimeoutError"
    long = hm.summarize_error(Exception("x" * 2000))
    assert len(long) == hm.MAX_ERROR_LEN and long.endswith("...")


def test_not_serving_message():
    assert hm.not_serving_message(params(), 30, "boom") == (
        "tenant cluster at 127.0.0.1:6123 (db acme, user acme) is not serving after 30s: boom"
    )


# --- retry loop ---


class FakeClock:
    def __init__(self):
        self.now = 100.0
        self.sleeps = []

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.sleeps.append(seconds)
        self.now += seconds


def scripted_probe(clock, outcomes, cost=0.1):
    """A probe returning/raising the given outcomes in order; each attempt takes `cost` seconds."""
    remaining_seen = []

    def probe(remaining):
        remaining_seen.append(remaining)
        clock.now += cost
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    probe.remaining_seen = remaining_seen
    return probe


def test_poll_retries_until_success():
    clock = FakeClock()
    probe = scripted_probe(clock, [hm.RetryableError("refused"), hm.RetryableError("starting up"), {"ok": 1}])
    outcome = hm.poll(probe, timeout=30, interval=1.0, clock=clock, sleep=clock.sleep)
    assert outcome["facts"] == {"ok": 1}
    assert outcome["attempts"] == 3
    assert outcome["error"] is None and outcome["fatal"] is False
    assert clock.sleeps == [1.0, 1.0]
    assert outcome["elapsed"] == pytest.approx(2.3)
    assert probe.remaining_seen[0] == 30


def test_poll_gives_up_at_deadline_with_last_error():
    clock = FakeClock()
    errors = [hm.RetryableError(f"refused #{i}") for i in range(100)]
    outcome = hm.poll(scripted_probe(clock, errors), timeout=2, interval=1.0, clock=clock, sleep=clock.sleep)
    assert outcome["facts"] is None and outcome["fatal"] is False
    assert outcome["attempts"] == 3  # at 0, 1.1 and at the deadline
    assert outcome["error"] == "refused #2"
    assert clock.sleeps == pytest.approx([1.0, 0.8])
    assert outcome["elapsed"] == pytest.approx(2.1)


def test_poll_timeout_zero_makes_one_attempt():
    clock = FakeClock()
    probe = scripted_probe(clock, [hm.RetryableError("refused")])
    outcome = hm.poll(probe, timeout=0, interval=1.0, clock=clock, sleep=clock.sleep)
    assert (outcome["attempts"], outcome["error"], clock.sleeps) == (1, "refused", [])


def test_poll_stops_on_fatal_error():
    clock = FakeClock()
    probe = scripted_probe(clock, [hm.RetryableError("refused"), hm.FatalError("not encrypted"), {"ok": 1}])
    outcome = hm.poll(probe, timeout=30, interval=1.0, clock=clock, sleep=clock.sleep)
    assert (outcome["facts"], outcome["attempts"], outcome["error"], outcome["fatal"]) == (
        None,
        2,
        "not encrypted",
        True,
    )


# --- the module, run as a subprocess ---


@pytest.fixture
def closed_port():
    """A local TCP port that refuses connections: bound (so nobody else takes it) but not listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s.getsockname()[1]


def module_args(port, **overrides):
    return dict(port=port, dbname="acme", user="acme", password=PASSWORD, timeout=2, interval=0.5) | overrides


def assert_password_absent(proc):
    for secret in (PASSWORD, PASSWORD.replace("\\", "\\\\")):
        assert secret not in proc.stdout
        assert secret not in proc.stderr


def test_closed_port_is_not_serving(run_module, closed_port):
    result, proc = run_module(MODULE, module_args(closed_port, server_name="acme.db.example"))
    assert proc.returncode != 0
    assert result["failed"] is True
    assert result["changed"] is False
    assert result["msg"].startswith(
        f"tenant cluster at 127.0.0.1:{closed_port} (db acme, user acme) is not serving after 2s: "
    )
    assert "Connection refused" in result["msg"]
    assert "\n" not in result["msg"]
    assert result["error"] in result["msg"]
    assert result["attempts"] >= 2
    assert 2.0 <= result["elapsed"] < 10
    assert_password_absent(proc)


def test_check_mode_runs_the_check_too(run_module, closed_port):
    result, proc = run_module(MODULE, module_args(closed_port, timeout=0), check_mode=True)
    assert result["failed"] is True
    assert result["attempts"] == 1
    assert f"127.0.0.1:{closed_port}" in result["msg"] and "is not serving after 0s" in result["msg"]
    assert_password_absent(proc)


def test_host_name_address_is_resolved(run_module, closed_port):
    result, proc = run_module(MODULE, module_args(closed_port, address="localhost", timeout=0))
    assert result["failed"] is True
    assert result["msg"].startswith(f"tenant cluster at localhost:{closed_port} (db acme, user acme)")
    assert_password_absent(proc)


def test_invalid_arguments_fail_naming_argument(run_module, closed_port):
    result, proc = run_module(MODULE, module_args(closed_port, sslnegotiation="direct", sslmode="prefer"))
    assert result["failed"] is True
    assert result["msg"].startswith("sslnegotiation=direct cannot be used with sslmode=prefer")
    assert "attempts" not in result
    assert_password_absent(proc)


def test_missing_psycopg_is_reported(run_module, closed_port, tmp_path):
    blocker = tmp_path / "blocker" / "psycopg"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('psycopg blocked by test')\n")
    env = dict(os.environ, PYTHONPATH=str(blocker.parent))
    result, proc = run_module(MODULE, module_args(closed_port), env=env)
    assert result["failed"] is True
    assert "Failed to import the required Python library (psycopg" in result["msg"]
    assert_password_absent(proc)
