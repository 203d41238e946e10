"""A small client for the demo and operators: onboard a tenant and follow its job live.

    SHADOWDB_API_TOKEN=... python -m api onboard --url http://127.0.0.1:8080 \\
        '{"name": "initech", "tier": "small"}' --passfile inventories/lab/initech.pgpass

Prints the job's tasks as they run, then the connection string. The password is never printed:
it is written to the passfile (0600) that the connection string names.
"""

import json
import os
import sys
import time
from pathlib import Path

import httpx


def follow(url: str, token: str, job_id: str, out=sys.stdout, timeout: float = 1800) -> dict:
    """Print a job's events until it ends; return the 'end' event's data."""
    headers = {"Authorization": f"Bearer {token}"}
    deadline = time.monotonic() + timeout
    kind = None
    with httpx.stream(
        "GET", f"{url}/v1/jobs/{job_id}/events", headers=headers, timeout=httpx.Timeout(30, read=120)
    ) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} did not end in {timeout} s")
            if line.startswith("event: "):
                kind = line[7:]
                continue
            if not line.startswith("data: "):
                continue
            data = json.loads(line[6:])
            if kind == "task":
                role = f"{data['role']} : " if data.get("role") else ""
                print(f"  - {role}{data['task']}", file=out, flush=True)
            elif kind == "result" and data["status"] in ("changed", "failed", "unreachable"):
                print(f"      {data['status']} ({data['duration']} s)", file=out, flush=True)
                if data.get("msg"):
                    print(f"      {data['msg']}", file=out, flush=True)
            elif kind == "job":
                print(
                    f"  [job {data['status']}]{' ' + data['message'] if data.get('message') else ''}",
                    file=out,
                )
            elif kind == "end":
                return data
    raise RuntimeError(f"the event stream of job {job_id} ended early")


def onboard(
    url: str,
    token: str,
    spec: dict,
    passfile: Path | None = None,
    hostaddr: str | None = None,
    sslrootcert: Path | None = None,
    out=sys.stdout,
) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    t0 = time.monotonic()
    r = httpx.post(f"{url}/v1/tenants", json=spec, headers=headers, timeout=30)
    if r.status_code != 202:
        print(f"POST /v1/tenants: {r.status_code} {r.text}", file=sys.stderr)
        return 1
    job = r.json()
    print(f"tenant {spec['name']}: job {job['id']} on {job['host']}", file=out, flush=True)
    end = follow(url, token, job["id"], out)
    elapsed = time.monotonic() - t0
    if end["status"] != "succeeded":
        print(f"tenant {spec['name']}: {end['status']}: {end.get('error')}", file=sys.stderr)
        return 1
    done = httpx.get(f"{url}/v1/jobs/{job['id']}", headers=headers, timeout=30).json()
    tenant = httpx.get(f"{url}/v1/tenants/{spec['name']}", headers=headers, timeout=30).json()
    ep = tenant["endpoints"]["direct"]
    conninfo = ep["conninfo"]
    if hostaddr and "hostaddr=" not in conninfo:
        conninfo += f" hostaddr={hostaddr}"
    if sslrootcert:
        conninfo += f" sslrootcert={sslrootcert}"
    creds = done.get("credentials")
    if creds and passfile:
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"*:{ep['port']}:{ep['dbname']}:{creds['user']}:{creds['password']}\n")
        conninfo += f" passfile={passfile}"
    print(f"tenant {spec['name']}: ready in {elapsed:.1f} s (request -> healthy)", file=out)
    print(f"  {conninfo}", file=out)
    return 0
