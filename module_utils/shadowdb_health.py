# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Health check of a tenant's cluster as its clients see it: TCP, TLS verified, its own credentials.

Shared by shadowdb_pg_health and shadowdb_cluster_apply (``ansible.module_utils.shadowdb_health``).
"""

import ipaddress
import math
import socket
import time
import traceback

PSYCOPG_IMPORT_ERROR = None
try:
    import psycopg
except ImportError:
    psycopg = None
    PSYCOPG_IMPORT_ERROR = traceback.format_exc()

HEALTH_QUERY = """
SELECT version(),
       current_setting('server_version'),
       current_setting('server_version_num')::int,
       current_setting('data_checksums')::bool,
       s.ssl,
       s.version,
       s.cipher
  FROM (SELECT 1) AS one
  LEFT JOIN pg_stat_ssl AS s ON s.pid = pg_backend_pid()
"""
CONNECT_TIMEOUT = 5
MIN_CONNECT_TIMEOUT = 2  # libpq treats anything lower as 2 seconds
APPLICATION_NAME = "shadowdb_pg_health"
WEAK_SSLMODES = ("disable", "allow", "prefer")
MASK = "********"
MAX_ERROR_LEN = 500


class RetryableError(Exception):
    """The attempt failed in a way that may go away (server starting, DNS, ...): try again."""


class FatalError(Exception):
    """The attempt failed in a way that retrying cannot fix."""


def is_ip_address(address):
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return False
    return True


def resolve_address(address, port, getaddrinfo=socket.getaddrinfo):
    """Return a numeric address for address (returned unchanged if it already is one)."""
    if is_ip_address(address):
        return address
    try:
        infos = getaddrinfo(address, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as e:
        raise RetryableError(f"could not resolve address {address!r}: {e}") from e
    if not infos:
        raise RetryableError(f"could not resolve address {address!r}: no addresses")
    return infos[0][4][0]


def format_endpoint(address, port):
    """host:port, with IPv6 addresses in brackets."""
    if ":" in address:
        return f"[{address}]:{port}"
    return f"{address}:{port}"


def connect_timeout_for(remaining):
    """libpq connect_timeout for an attempt with `remaining` seconds left before the deadline."""
    return max(MIN_CONNECT_TIMEOUT, min(CONNECT_TIMEOUT, math.ceil(remaining)))


def build_connect_kwargs(params, hostaddr, connect_timeout=CONNECT_TIMEOUT):
    """Keyword arguments for psycopg.connect().

    host is server_name (the name TLS verification and SNI use), falling back to address; hostaddr is the
    numeric address actually connected to, so libpq does no name resolution of its own.
    """
    kwargs = dict(
        host=params.get("server_name") or params["address"],
        hostaddr=hostaddr,
        port=params["port"],
        dbname=params["dbname"],
        user=params["user"],
        password=params["password"],
        sslmode=params["sslmode"],
        connect_timeout=connect_timeout,
        application_name=APPLICATION_NAME,
    )
    if params.get("sslrootcert"):
        kwargs["sslrootcert"] = params["sslrootcert"]
    # Only pass it when it differs from libpq's default: libpq < 17 rejects the option altogether.
    if params.get("sslnegotiation", "postgres") != "postgres":
        kwargs["sslnegotiation"] = params["sslnegotiation"]
    return kwargs


def scrub(text, secrets):
    """Replace every occurrence of each non-empty secret (also in conninfo-escaped form) with a mask."""
    for secret in secrets:
        if not secret:
            continue
        escaped = secret.replace("\\", "\\\\").replace("'", "\\'")
        for form in {escaped, secret}:
            text = text.replace(form, MASK)
    return text


def summarize_error(error, secrets=()):
    """First non-empty line of an exception or message, secrets scrubbed, bounded in length."""
    text = scrub(str(error), secrets)
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    if not line:
        line = type(error).__name__ if isinstance(error, BaseException) else "unknown error"
    if len(line) > MAX_ERROR_LEN:
        line = line[: MAX_ERROR_LEN - 3] + "..."
    return line


def not_serving_message(params, timeout, error):
    endpoint = format_endpoint(params["address"], params["port"])
    return (
        f"tenant cluster at {endpoint} (db {params['dbname']}, user {params['user']}) "
        f"is not serving after {timeout}s: {error}"
    )


def poll(probe, timeout, interval, clock=time.monotonic, sleep=time.sleep):
    """Call probe(remaining_seconds) until it returns, raises FatalError, or timeout elapses.

    RetryableError is retried; the last attempt happens at the deadline at the latest.
    Returns a dict: facts (None on failure), attempts, elapsed (seconds), error (last error or None),
    fatal (True if the last error was a FatalError).
    """
    start = clock()
    deadline = start + timeout
    attempts = 0
    while True:
        attempts += 1
        try:
            facts = probe(max(0.0, deadline - clock()))
        except FatalError as e:
            return dict(facts=None, attempts=attempts, elapsed=clock() - start, error=str(e), fatal=True)
        except RetryableError as e:
            error = str(e)
        else:
            return dict(facts=facts, attempts=attempts, elapsed=clock() - start, error=None, fatal=False)
        remaining = deadline - clock()
        if remaining <= 0:
            return dict(facts=None, attempts=attempts, elapsed=clock() - start, error=error, fatal=False)
        sleep(min(interval, remaining))


def query_health(connect_kwargs):
    """Connect, run HEALTH_QUERY and return the facts. Raises psycopg errors."""
    with psycopg.connect(autocommit=True, **connect_kwargs) as conn:
        row = conn.execute(HEALTH_QUERY).fetchone()
        ssl_in_use = bool(getattr(conn.pgconn, "ssl_in_use", False))
    version, server_version, version_num, checksums, ssl, ssl_version, cipher = row
    return dict(
        version=version,
        server_version=server_version,
        server_version_num=version_num,
        data_checksums=bool(checksums),
        ssl=bool(ssl) or ssl_in_use,
        ssl_version=ssl_version,
        ssl_cipher=cipher,
    )


def make_probe(params):
    secrets = (params["password"],)

    def probe(remaining):
        hostaddr = resolve_address(params["address"], params["port"])
        kwargs = build_connect_kwargs(params, hostaddr, connect_timeout_for(remaining))
        try:
            facts = query_health(kwargs)
        except psycopg.ProgrammingError as e:  # e.g. a connection option this libpq does not know
            raise FatalError(summarize_error(e, secrets)) from None
        except psycopg.Error as e:
            raise RetryableError(summarize_error(e, secrets)) from None
        if params["require_ssl"] and not facts["ssl"]:
            raise FatalError(
                f"the session is not encrypted (sslmode={params['sslmode']}) but require_ssl=true"
            )
        return facts

    return probe
