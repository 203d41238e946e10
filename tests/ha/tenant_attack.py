"""Run ON a db host AS a tenant's OS user (from its own PostgreSQL: COPY ... FROM PROGRAM, what a
superuser tenant can do): try etcd and another tenant's Patroni REST API with everything this
tenant holds (its etcd client certificate and key, its etcd and REST passwords from its Patroni
configuration). Prints one line `<attempt> <outcome>` per attempt; tests/ha/test_lifecycle.py
checks them. Standard library and PyYAML (a Patroni dependency) only.

    python3 tenant_attack.py <tenant> <other tenant> <etcd URL> <other tenant's REST API URL> \
        <this tenant's REST API URL on another member>

Run as root instead (not sandboxed, not under the egress firewall), it is a network client
holding everything the tenant holds.
"""

import base64
import json
import os
import ssl
import sys
import urllib.error
import urllib.request

import yaml

tenant, other, etcd, rest, own_rest = sys.argv[1:6]
tls = f"/mnt/db/{tenant}/tls"
with open(f"/etc/patroni/{tenant}.yml") as f:
    config = yaml.safe_load(f)
etcd_password = config["etcd3"]["password"]
rest_password = config["restapi"]["authentication"]["password"]


def context(client_cert=True):
    ctx = ssl.create_default_context(cafile=f"{tls}/ca.crt")
    if client_cert:
        ctx.load_cert_chain(f"{tls}/etcd.crt", f"{tls}/etcd.key")
    return ctx


def request(url, body, method="POST", headers=None, client_cert=True):
    """(HTTP status, decoded answer) of one request; status 0 when it failed before an answer."""
    req = urllib.request.Request(  # noqa: S310 - https URLs given by the test
        url,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Content-Type": "application/json"},
    )
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=5, context=context(client_cert)) as answer:  # noqa: S310
            text = answer.read().decode(errors="replace")
            status = answer.status
    except urllib.error.HTTPError as e:
        text, status = e.read().decode(errors="replace"), e.code
    except Exception as e:  # noqa: BLE001 - reported, not raised
        return 0, {"message": repr(e)}
    try:
        data = json.loads(text) if text else {}
    except ValueError:
        data = {"message": text}
    return status, data if isinstance(data, dict) else {"message": text}


def outcome(status, answer):
    if status == 200:
        return "ok"
    message = str(answer.get("message") or answer.get("error") or answer)
    for fragment, word in (
        ("permission denied", "denied"),
        ("user name is empty", "anonymous"),
        ("authentication failed", "badpassword"),
    ):
        if fragment in message:
            return word
    return f"error:{status}:{message[:80]!r}"


def b64(text):
    return base64.b64encode(text.encode()).decode()


def prefix(key):
    return {"key": b64(key), "range_end": b64(key[:-1] + chr(ord(key[-1]) + 1))}


status, answer = request(
    etcd + "/v3/auth/authenticate", {"name": f"patroni-{tenant}", "password": etcd_password}
)
token = answer.get("token")
print("login", "ok" if token else outcome(status, answer))
auth = {"Authorization": token} if token else {}
own, others = f"/shadowdb/patroni/{tenant}/", f"/shadowdb/patroni/{other}/"
attempts = {
    "own_read": ("/v3/kv/range", prefix(own)),
    "own_write": ("/v3/kv/put", {"key": b64(own + "attack-probe"), "value": b64("x")}),
    "own_delete": ("/v3/kv/deleterange", {"key": b64(own + "attack-probe")}),
    "other_read": ("/v3/kv/range", prefix(others)),
    "other_write": ("/v3/kv/put", {"key": b64(others + "config"), "value": b64("{}")}),
    "other_delete": ("/v3/kv/deleterange", prefix(others)),
    "all_read": ("/v3/kv/range", prefix("/shadowdb/")),
    "registry_read": ("/v3/kv/range", prefix("/shadowdb/tenants/")),
    "registry_write": ("/v3/kv/put", {"key": b64("/shadowdb/tenants/" + tenant), "value": b64("{}")}),
    "user_list": ("/v3/auth/user/list", {}),
    "grant_root": ("/v3/auth/user/grant", {"user": f"patroni-{tenant}", "role": "root"}),
}
for name, (path, body) in attempts.items():
    print(name, outcome(*request(etcd + path, body, headers=auth)))
# The certificate alone is no identity; the other tenant's user with this tenant's password fails.
print("cert_only", outcome(*request(etcd + "/v3/kv/range", prefix(others))))
login_other = {"name": f"patroni-{other}", "password": etcd_password}
print("other_login", outcome(*request(etcd + "/v3/auth/authenticate", login_other)))


def rest_outcome(status, answer):
    """The HTTP status, or "refused" when the connection was (the egress firewall's reset)."""
    if status == 0 and "Connection refused" in answer.get("message", ""):
        return "refused"
    return str(status) if status else f"error:{answer.get('message', '')[:80]!r}"


# This tenant's own member on another host: reachable (its allowance), so a refusal below is
# the firewall's answer to the other tenant's port, not a broken network.
print("rest_own", rest_outcome(*request(own_rest + "/patroni", None, method="GET")))
# The other tenant's Patroni REST API: unsafe endpoints with this tenant's certificate and password.
basic = {"Authorization": "Basic " + b64(f"patroni:{rest_password}")}
for name, method, path, client_cert in (
    ("rest_restart", "POST", "/restart", True),
    ("rest_config", "PATCH", "/config", True),
    ("rest_switchover", "POST", "/switchover", True),
    ("rest_reinitialize", "POST", "/reinitialize", True),
    ("rest_restart_nocert", "POST", "/restart", False),
):
    print(
        name, rest_outcome(*request(rest + path, {}, method=method, headers=basic, client_cert=client_cert))
    )

# Patroni's configuration directory: the other tenants' names and files.
try:
    os.listdir("/etc/patroni")
    print("list_configs", "ok")
except PermissionError:
    print("list_configs", "denied")
try:
    with open(f"/etc/patroni/{other}.yml") as f:
        f.read(1)
    print("other_config", "ok")
except PermissionError:
    print("other_config", "denied")
except FileNotFoundError:
    print("other_config", "absent")  # the other tenant has no member on this host
