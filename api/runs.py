"""One step of a job as one ansible-runner run (api/jobs.py decides when steps run): which
playbook and extra vars, the run itself, its events reduced to a fixed set of safe fields, and
what its outcome means for the job (status, error, result, sealed credentials).
"""

import base64
import logging

import ansible_runner

from .catalog import add_events, plan
from .settings import ansible_env

log = logging.getLogger("shadowdb.api.jobs")

_MAX_MSG = 300
# The last task of api/playbooks/create_guard.yml (and of create_guards.yml, for a batch): when
# an attempt of a create job passed it, later attempts (after a crash) skip the guard, since
# what is on the host is their own work.
GUARD_TASK = "No tenant of that name on any db host or in the registry"

# Ansible runner events kept, and what they become in the catalog (and on the SSE stream).
_RESULT_EVENTS = {
    "runner_on_ok": "ok",
    "runner_on_failed": "failed",
    "runner_on_skipped": "skipped",
    "runner_on_unreachable": "unreachable",
}


def sanitize_event(event: dict) -> tuple[str, dict] | None:
    """Reduce an ansible-runner event to (type, data) with a fixed set of safe fields, or None.

    Results keep the task, host, status, duration and, for failures only, the message (no_log
    results arrive already censored by Ansible). Task arguments, registered results, items,
    stdout and custom stats are never kept.
    """
    kind = event.get("event")
    data = event.get("event_data") or {}
    if kind == "playbook_on_play_start":
        return "play", {"play": data.get("name") or data.get("play")}
    if kind == "playbook_on_task_start":
        return "task", {"task": data.get("task"), "role": data.get("role"), "play": data.get("play")}
    if kind in _RESULT_EVENTS:
        res = data.get("res") or {}
        status = _RESULT_EVENTS[kind]
        if status == "ok" and res.get("changed"):
            status = "changed"
        out = {
            "task": data.get("task"),
            "role": data.get("role"),
            "host": data.get("host"),
            "status": status,
            "duration": round(float(data.get("duration") or 0), 3),
        }
        if status in ("failed", "unreachable"):
            if data.get("ignore_errors"):
                out["ignored"] = True
            out["msg"] = failure_message(res)
        return "result", out
    if kind == "playbook_on_stats":
        recap = {}
        for key in ("ok", "changed", "failures", "skipped", "unreachable", "rescued", "ignored"):
            for host, n in (data.get(key) or {}).items():
                recap.setdefault(host, {})[key] = n
        return "recap", {"hosts": recap}
    return None


def failure_message(res: dict) -> str:
    """A failed result's message for clients: its first line, short, never tool output.

    The task's own message (a failed assert's, a module's ``msg``) says what went wrong; stdout,
    stderr, module output and tracebacks stay in the server log (:func:`log_failure`).
    """
    msg = res.get("msg") or res.get("reason") or "failed"
    items = res.get("results")
    if msg == "All items completed" and isinstance(items, list):  # a loop: its first bad item
        bad = [i for i in items if isinstance(i, dict) and (i.get("failed") or i.get("unreachable"))]
        if bad:
            item = bad[0].get("item")
            prefix = f"{item}: " if isinstance(item, str | int) else ""
            msg = prefix + (
                str(bad[0].get("msg") or "failed") if not bad[0].get("_ansible_no_log") else "failed"
            )
    if not isinstance(msg, str):
        msg = "failed"
    if "Traceback (most recent call last)" in msg or msg.startswith("MODULE FAILURE"):
        return "the module failed (details in the API's log)"
    line = next((part.strip() for part in msg.splitlines() if part.strip()), "failed")
    return line if len(line) <= _MAX_MSG else line[: _MAX_MSG - 3] + "..."


def _conflict_of(job: dict, found: dict) -> dict:
    """{error, hosts} of a create whose name the guard found ({hosts, found, registry})."""
    hosts = [str(h) for h in found.get("hosts") or []] or ["(unknown)"]
    log.warning("job %s: tenant %s already exists: %s", job["id"], job["tenant"], found)
    return {"error": f"tenant {job['tenant']} already exists on host {', '.join(hosts)}", "hosts": hosts}


def log_failure(job_id: str, data: dict, res: dict) -> None:
    """The whole failure of a task, for the operator: in the server log only."""
    detail = {k: res[k] for k in ("msg", "rc", "stderr", "module_stderr", "module_stdout") if res.get(k)}
    log.warning("job %s: %s on %s failed: %s", job_id, data.get("task"), data.get("host"), detail)


class Runs:
    """The runs of an engine (a mixin of api.jobs.Engine: ``settings``, ``routed``)."""

    def _steps(self, job: dict, guard_passed: bool = False) -> list[tuple[str, str, dict]]:
        """(step, playbook, extra vars) of a job, in order (catalog.plan).

        With routing, the host step of a create or update registers and routes its tenant; a
        job queued with a route step of its own (before that) runs its host step with tag
        register skipped and its route step (api/playbooks/tenant_route.yml) registers it.
        """
        playbooks = self.settings.repo / "api" / "playbooks"
        name = job["tenant"]
        public_key = base64.b64encode(bytes(job["public_key"])).decode() if job["public_key"] else ""
        # A create's run begins with the create guard (api/playbooks/create_guard.yml): never adopt.
        guard = {"api_job_kind": job["kind"], "api_job_guard_passed": guard_passed}
        steps = job.get("steps") or plan(job, self.routed())
        planned = []
        for step in steps:
            if step in ("host", "ha") and job["kind"] == "restore":
                # tenant_restore.yml: an HA tenant's from any member (its leader found there).
                target = (job.get("request") or {})["target"]
                extravars = {"tenant_host": job["host"], "tenant": name, "confirm": name, "target": target}
                restore = str(self.settings.repo / "playbooks" / "tenant_restore.yml")
                planned.append((step, restore, extravars))
            elif step == "ha":
                extravars = {"tenant": job["spec"], "api_job_public_key": public_key} | guard
                if job["kind"] == "delete":
                    extravars = {"tenant": {"name": name, "state": "absent"}, "confirm": name}
                elif job.get("hosts"):  # placed and locked by the API: the members go there only
                    extravars["shadowdb_ha_candidates"] = list(job["hosts"])
                planned.append(("ha", str(playbooks / "tenant_ha_job.yml"), extravars))
            elif step == "backup":
                request = job.get("request") or {}
                extravars = {"tenant": name, "type": request.get("type", "full")}
                planned.append(
                    ("backup", str(self.settings.repo / "playbooks" / "tenant_backup.yml"), extravars)
                )
            elif step == "host" and job["kind"] == "delete":
                planned.append(
                    (
                        "host",
                        str(self.settings.repo / "playbooks" / "tenant_remove.yml"),
                        {"tenant_host": job["host"], "tenant_name": name, "confirm": name},
                    )
                )
            elif step == "host":
                extravars = {
                    "tenant_host": job["host"],
                    "tenant": job["spec"],
                    "api_job_public_key": public_key,
                }
                planned.append(("host", str(playbooks / "tenant_job.yml"), extravars | guard))
            else:
                state = "absent" if job["kind"] == "delete" else "present"
                extravars = {"tenant_host": job["host"], "tenant": job["spec"], "api_route_state": state}
                planned.append(("route", str(playbooks / "tenant_route.yml"), extravars))
        return planned

    def _guard_passed(self, conn, job: dict) -> bool:
        """Whether an earlier attempt of this create job passed the create guard (its events say)."""
        if job["kind"] != "create" or job["attempts"] <= 1:
            return False
        row = conn.execute(
            "SELECT 1 FROM job_events WHERE job_id = %s AND type = 'result'"
            " AND data->>'task' = %s AND data->>'status' = 'ok' LIMIT 1",
            (job["id"], GUARD_TASK),
        ).fetchone()
        return row is not None

    @staticmethod
    def _conflict(job: dict, stats: dict) -> dict | None:
        """A create refused by the create guard (create_guard.yml): {error, hosts}, or None."""
        found = (stats or {}).get("shadowdb_api_conflict")
        if job["kind"] != "create" or not isinstance(found, dict):
            return None
        return _conflict_of(job, found)

    @staticmethod
    def _guard_outcome(job: dict, stats: dict) -> tuple[str | None, str | None, dict | None]:
        """(status, error, conflict) of one job of a batch after the batch's create guard:
        (None, None, None) unless the guard refused it (a bad name or version, or a tenant of
        that name already on a host or in the registry)."""
        guard = stats.get("shadowdb_api_guard")
        if job["kind"] != "create" or not isinstance(guard, dict):
            return None, None, None
        name = job["tenant"]
        refused = guard.get("refused") or {}
        if name in refused:
            return "failed", str(refused[name])[: 2 * _MAX_MSG], None
        found = (guard.get("conflicts") or {}).get(name)
        if isinstance(found, dict):
            conflict = _conflict_of(job, found)
            return "failed", conflict["error"], conflict
        return None, None, None

    def _batch(self, job: dict, members: list[dict], passed: set[str]) -> tuple[str, dict, str]:
        """(playbook, extra vars, skipped tags) of one run of the host step of several jobs; the
        creates among them not ``passed`` (ids of jobs an earlier attempt of which passed the
        create guard) go through the guard first."""
        return (
            str(self.settings.repo / "api" / "playbooks" / "tenants_job.yml"),
            {
                "tenant_host": job["host"],
                "api_tenants": [m["spec"] for m in members],
                "api_guards": [
                    {
                        "name": m["tenant"],
                        "pg_version": (m["spec"] or {}).get("pg_version", 17),
                        "host": m["host"],
                    }
                    for m in members
                    if m["kind"] == "create" and str(m["id"]) not in passed
                ],
                "api_jobs": [
                    {
                        "name": m["tenant"],
                        "public_key": base64.b64encode(bytes(m["public_key"])).decode()
                        if m["public_key"]
                        else "",
                    }
                    for m in members
                ],
            },
            "report,register" if "route" in (job["steps"] or []) else "report",
        )

    @staticmethod
    def _batch_outcome(job: dict, stats: dict) -> tuple[str | None, str | None, dict]:
        """(status, error, host step stats) of one job of a batch whose run succeeded."""
        name = job["tenant"]
        failed = stats.get("shadowdb_api_failed") or {}
        done = (stats.get("shadowdb_api_batch") or {}).get(name)
        if name in failed:
            return "failed", f"{name}: {failed[name]}"[: 2 * _MAX_MSG], {}
        if not done:
            return "failed", f"the run returned no result for tenant {name}", {}
        return (
            None,
            None,
            {
                "shadowdb_api_endpoint": done["endpoint"],
                "shadowdb_api_sealed": done["sealed"],
                "shadowdb_api_route": {"proxy_port": done.get("proxy_port")},
            },
        )

    def _ansible(
        self, conn, job, step, playbook, extravars, skip_tags, data_dir, cancelled, streams=None, guarded=None
    ):
        """One ansible-runner run of a job's step; its events go to the job's stream (and to the
        streams of the other jobs of its batch). ``guarded`` ({tenant: job id}, a batch): the
        result of the batch's create guard goes to the streams of the creates it passed only
        (the facts of its task name them), so that a later attempt knows it passed."""
        job_id = str(job["id"])
        streams = streams or [job_id]
        state: dict = {"stats": {}, "failure": None}

        def on_event(event: dict) -> bool:
            if event.get("event") == "playbook_on_stats":
                state["stats"] = (event.get("event_data") or {}).get("artifact_data") or {}
            item = sanitize_event(event)
            if item is not None:
                kind, data = item
                if (
                    kind == "result"
                    and data["status"] in ("failed", "unreachable")
                    and not data.get("ignored")
                ):
                    state["failure"] = data
                    log_failure(job_id, data, (event.get("event_data") or {}).get("res") or {})
                targets = streams
                if guarded is not None and kind == "result" and data["task"] == GUARD_TASK:
                    facts = ((event.get("event_data") or {}).get("res") or {}).get("ansible_facts") or {}
                    passed = facts.get("api_guard_passed") if data["status"] == "ok" else []
                    targets = [guarded[n] for n in passed or [] if n in guarded]
                if targets:
                    add_events(conn, targets, kind, data)
            return self.settings.keep_artifacts

        runner = ansible_runner.run(
            private_data_dir=data_dir,
            project_dir=str(self.settings.repo),
            playbook=playbook,
            inventory=str(self.settings.inventory),
            extravars=extravars,
            envvars=self._envvars(),
            ident=f"{job_id}-{job['attempts']}-{step}",
            skip_tags=skip_tags,
            suppress_env_files=True,
            quiet=True,
            event_handler=on_event,
            cancel_callback=cancelled,
            timeout=self.settings.job_timeout,
            settings={"pexpect_timeout": 1, "suppress_ansible_output": True},
        )
        return runner, state

    def _envvars(self) -> dict:
        return ansible_env(self.settings.repo) | {"ANSIBLE_FORCE_COLOR": "0", "ANSIBLE_NOCOLOR": "1"}

    def _failure(self, runner, state: dict) -> tuple[str | None, str | None]:
        """(status, error) of a run that did not succeed, (None, None) for a successful one."""
        if runner.status == "successful":
            return None, None
        if runner.status == "canceled":
            return "cancelled", "cancelled while running"
        if runner.status == "timeout":
            return "failed", f"timed out after {self.settings.job_timeout} s"
        failure = state["failure"]
        if failure:
            error = f"{failure['task']} on {failure['host']}: {failure['msg']}"
        else:
            error = f"ansible-playbook exited with {runner.rc} (details in the API's log)"
            try:
                output = runner.stdout.read()[-3000:]
            except Exception:  # noqa: BLE001 - the log line is best effort
                output = "(no output)"
            log.warning("%s: ansible-playbook exited with %s: %s", runner.config.ident, runner.rc, output)
        return "failed", error[: 2 * _MAX_MSG]

    def _result(self, job: dict, stats: dict[str, dict]):
        """(status, error, result, sealed) of a job whose steps all succeeded."""
        if job["kind"] == "delete":
            return "succeeded", None, {}, None
        if job["kind"] == "backup":  # the tenant's backups after it (tenant_backup.yml)
            return "succeeded", None, {"backups": (stats.get("backup") or {}).get("shadowdb_backups")}, None
        if job["kind"] == "restore":  # where it went back to (tenant_restore.yml; an HA tenant: step ha)
            restored = (stats.get("host") or stats.get("ha") or {}).get("shadowdb_restored")
            return "succeeded", None, {"restored": restored}, None
        if job.get("exclusive"):
            return self._ha_result(job, stats.get("ha") or {})
        host = stats.get("host") or {}
        endpoint = host.get("shadowdb_api_endpoint")
        # Registered by the host step (or, for a job queued before that, by its route step).
        route = (stats.get("route") or host).get("shadowdb_api_route") or {}
        proxy_port = route.get("proxy_port")
        if endpoint and proxy_port not in (None, "", "None"):
            endpoint = dict(endpoint) | {"proxy_port": int(proxy_port)}
        sealed = host.get("shadowdb_api_sealed") or None
        if job["kind"] == "create" and job["public_key"] and not sealed:
            return "failed", "the run succeeded but returned no credentials", {"endpoint": endpoint}, None
        return "succeeded", None, {"endpoint": endpoint}, sealed

    def _ha_result(self, job: dict, stats: dict):
        """(status, error, result, sealed) of a successful tenant_ha_job.yml run: the registry's
        record as the playbook left it (members with their roles at registration, proxy port)."""
        ha = stats.get("shadowdb_api_ha") or {}
        endpoint = ha.get("endpoint") or None
        if endpoint:  # unset values (no proxy, no replica) may come as null, "" or "None"
            endpoint = {k: (None if v in ("", "None") else v) for k, v in endpoint.items()}
            if endpoint.get("proxy_port") is None:
                endpoint.pop("proxy_port", None)
        result = {"endpoint": endpoint, "host": ha.get("host") or None, "members": ha.get("members") or []}
        sealed = stats.get("shadowdb_api_sealed") or None
        if not endpoint:
            return "failed", "the run succeeded but the tenant has no registry record", result, None
        if job["kind"] == "create" and job["public_key"] and not sealed:
            return "failed", "the run succeeded but returned no credentials", result, None
        return "succeeded", None, result, sealed
