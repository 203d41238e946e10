# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""Action plugin (roles/tenant_cluster/tasks/batch.yml): the clusters of a batch of tenants of
one db host, each step ONE remote module call for the whole batch, its requests built here from
the tenants' specs and the domain package (shadowdb/) instead of one templated task per tenant.

step=prepare: shadowdb_cluster_prepare on the host (OS user, directories, port, passwords, key
and signing request), then the certificates signed with the deployment CA in this process (the
code of library/shadowdb_certificate.py; the CA's key never leaves the controller). Returns
results ({tenant: the prepare module's result}), certificates ({tenant: PEM}), credentials
({tenant: what the caller hands out}) and failed_tenants ({tenant: "prepare: why" or "sign:
why"}). It holds passwords: the task is no_log (and registered, never a fact: facts may be cached).

step=apply: shadowdb_cluster_apply on the host (initdb, files, start/restart/reload with
rollback, SQL objects, health check), its files rendered from the role's templates with each
tenant's own variables only; with records, each of those tenants' converged record written by the
same call once it is healthy. Returns the module's result (no secret: the module hides them).

A tenant's failure is its own; a wrong call (bad arguments, no CA) fails the task.
"""

from __future__ import annotations

import importlib.util

import ansible.module_utils
from ansible import constants as C
from ansible.errors import AnsibleActionFail
from ansible.plugins.action import ActionBase
from ansible.plugins.loader import lookup_loader, module_loader

from shadowdb.backup import shadowdb_archive_settings
from shadowdb.layout import HOST_CA, shadowdb_converged_record, tenant_layout
from shadowdb.tiers import shadowdb_pg_settings, shadowdb_tier

ARGUMENT_SPEC = dict(
    step=dict(type="str", required=True, choices=["prepare", "apply"]),
    # Validated tenant specs ({name, tier, pg_version, extensions, settings, hba, readonly_role,
    # superuser}; source for a clone).
    specs=dict(type="list", elements="dict", required=True),
    tiers=dict(type="dict", default={}),
    domain=dict(type="str", required=True),
    mount_root=dict(type="str", required=True),
    secrets_dir=dict(type="str", required=True),
    # prepare
    port_range_start=dict(type="int"),
    port_range_end=dict(type="int"),
    backups=dict(type="list", elements="str", default=[]),
    egress=dict(type="list", elements="dict", default=[]),
    ca_dir=dict(type="path"),
    cert_valid_days=dict(type="int", default=825),
    address=dict(type="str"),
    # apply
    prepared=dict(type="dict", no_log=True),
    proxy_cidrs=dict(type="dict", default={}),
    health_timeout=dict(type="int", default=60),
    unit_template_changed=dict(type="bool", default=False),
    # {tenant: {fingerprint, previous}}: the tenants whose converged record the apply call writes.
    records=dict(type="dict", default={}),
)

# The files shadowdb_cluster_apply writes from the role's templates (templates/).
TEMPLATES = (
    "postgresql.conf.j2",
    "pg_hba.conf.j2",
    "pg_ident.conf.j2",
    "tenant.conf.j2",
    "credentials.env.j2",
)

# The settings ShadowDB manages itself, over the tier's and the tenant's (postgresql.conf).
MANAGED_SETTINGS = {
    "listen_addresses": "*",
    "ssl": "on",
    "ssl_min_protocol_version": "TLSv1.2",
    "password_encryption": "scram-sha-256",
    "log_destination": "stderr",
    "logging_collector": "off",
    "log_line_prefix": "%m [%p] %q%u@%d ",
    "dynamic_shared_memory_type": "posix",
}

_certificate_code = None


def converged_record(name, fingerprint, port):
    """The record option of shadowdb_cluster_apply: what shadowdb_tenant_check records (the
    same function the shadowdb role's record task uses), without the name (the tenant's own)."""
    record = shadowdb_converged_record(name, fingerprint, port)
    return {key: record[key] for key in ("fingerprint", "files", "units", "mountpoint")}


def certificate_code():
    """The code of library/shadowdb_certificate.py, run in this process (its module_utils made
    importable the way Ansible resolves them for modules)."""
    global _certificate_code
    if _certificate_code is None:
        for path in C.DEFAULT_MODULE_UTILS_PATH:
            if path not in ansible.module_utils.__path__:
                ansible.module_utils.__path__.append(path)
        found = module_loader.find_plugin_with_context("shadowdb_certificate")
        if not found.resolved:
            raise AnsibleActionFail("module shadowdb_certificate not found in the library path")
        spec = importlib.util.spec_from_file_location(
            "_shadowdb_inprocess_certificate", found.plugin_resolved_path
        )
        code = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(code)
        _certificate_code = code
    return _certificate_code


def pg_conf(spec, port, layout, backups, tiers):
    """postgresql.conf of a tenant: its tier, its settings and extensions, then what ShadowDB
    manages (and the archive settings of a tenant with backups)."""
    settings = shadowdb_pg_settings(
        spec["tier"], spec.get("settings") or {}, tiers, spec.get("extensions") or []
    )
    settings.update(MANAGED_SETTINGS)
    settings.update(
        cluster_name=spec["name"],
        port=str(port),
        unix_socket_directories=layout.socket_dir,
        ssl_cert_file=f"{layout.tls_dir}/server.crt",
        ssl_key_file=f"{layout.tls_dir}/server.key",
    )
    if spec["name"] in backups:
        settings.update(shadowdb_archive_settings(spec["name"], spec["tier"], tiers))
    return settings


class ActionModule(ActionBase):
    TRANSFERS_FILES = False
    _supports_check_mode = True

    def run(self, tmp=None, task_vars=None):
        result = super().run(tmp, task_vars)
        _validation, args = self.validate_argument_spec(argument_spec=ARGUMENT_SPEC)
        self._args = args
        self._vars = task_vars
        layouts = {
            spec["name"]: tenant_layout(spec["name"], args["mount_root"], args["secrets_dir"])
            for spec in args["specs"]
        }
        if args["step"] == "prepare":
            result.update(self._prepare(layouts))
        else:
            result.update(self._apply(layouts))
        return result

    def _server_name(self, tenant):
        """The name the tenant is served as (its certificate's name): <tenant>.<domain>."""
        return f"{tenant}.{self._args['domain']}"

    def _module(self, name, module_args):
        out = self._execute_module(module_name=name, module_args=module_args, task_vars=self._vars)
        if out.get("results") is None:
            raise AnsibleActionFail(f"{name}: {out.get('msg', 'the call failed')}")
        return out

    # --- prepare, then sign on the controller ---
    def _prepare(self, layouts):
        args = self._args
        specs = args["specs"]
        if not specs:
            return dict(changed=False, results={}, certificates={}, credentials={}, failed_tenants={})
        requests = []
        for spec in specs:
            tenant = layouts[spec["name"]]
            mine = dict(owner=tenant.os_user, group=tenant.os_user, mode="0700")
            root = dict(owner="root", group="root", mode="0700")
            dropin_dir = f"/etc/systemd/system/{tenant.postgres_unit}.d"
            requests.append(dict(
                name=spec["name"],
                os_user=tenant.os_user,
                home=tenant.home,
                directories=[
                    dict(path=tenant.home, **mine),
                    dict(path=tenant.data_dir, **mine),
                    dict(path=tenant.socket_dir, **mine),
                    dict(path=tenant.tls_dir, **mine),
                    dict(path=tenant.secrets_dir, **root),
                    dict(path=f"{tenant.secrets_dir}/last-good", **root),
                    dict(path=dropin_dir, owner="root", group="root", mode="0755"),
                ],
                data_dir=tenant.data_dir,
                tls_dir=tenant.tls_dir,
                secrets_dir=tenant.secrets_dir,
                pg_version=int(spec["pg_version"]),
                extensions=spec.get("extensions") or [],
                server_name=self._server_name(spec["name"]),
                egress=args["egress"] if spec["name"] in args["backups"] or "source" in spec else [],
            ))  # fmt: skip
        out = self._module("shadowdb_cluster_prepare", dict(
            port_range_start=args["port_range_start"],
            port_range_end=args["port_range_end"],
            host=self._vars.get("inventory_hostname", "this host"),
            tenants=requests,
        ))  # fmt: skip
        failed = {name: f"prepare: {why}" for name, why in out["failed_tenants"].items()}
        certificates, diffs = self._sign(
            [s for s in specs if s["name"] not in failed], out["results"], failed
        )
        credentials = {}
        for spec in specs:
            prepared = out["results"][spec["name"]]
            if spec["name"] in failed:
                continue
            tenant = layouts[spec["name"]]
            readonly = bool(spec.get("readonly_role"))
            credentials[spec["name"]] = dict(
                host=self._server_name(spec["name"]),
                address=args["address"] or self._vars.get("inventory_hostname"),
                port=int(prepared.get("port") or 0),
                dbname=tenant.owner,
                user=tenant.owner,
                password=prepared["passwords"]["owner"],
                readonly_user=tenant.readonly_user if readonly else None,
                readonly_password=prepared["passwords"].get("readonly") if readonly else None,
            )
        outcome = dict(
            changed=out.get("changed", False) or bool(diffs),
            results=out["results"],
            certificates=certificates,
            credentials=credentials,
            failed_tenants=failed,
        )
        if out.get("diff") or diffs:
            outcome["diff"] = list(out.get("diff") or []) + diffs
        return outcome

    def _sign(self, specs, prepared, failed):
        """Sign the new signing requests with the deployment CA (a certificate still valid for its
        key and name is kept): ({tenant: PEM}, diffs); a tenant that cannot be signed goes to failed."""
        code = certificate_code()
        args = self._args
        shared = dict(
            extended_key_usage=["serverAuth"],
            valid_days=args["cert_valid_days"],
            renew_days=30,
            ca_cert_path=f"{args['ca_dir']}/ca.crt",
            ca_key_path=f"{args['ca_dir']}/ca.key",
        )
        certificates, diffs, ca = {}, [], None
        for spec in specs:
            result = prepared[spec["name"]]
            if result.get("csr") is None:
                certificates[spec["name"]] = result.get("existing_certificate") or ""
                continue
            server_name = self._server_name(spec["name"])
            params = dict(
                shared,
                csr=result["csr"],
                common_name=server_name,
                subject_alt_name=[f"DNS:{server_name}"],
                existing=result.get("existing_certificate") or None,
            )
            try:
                if ca is None:
                    code.check_shared(shared)
                    ca = code.load_ca(shared["ca_cert_path"], shared["ca_key_path"])
                signed = code.run(params, self._task.check_mode, ca)
            except code.SignError as e:
                failed[spec["name"]] = f"sign: {e}"
                continue
            certificates[spec["name"]] = signed["certificate"] or result.get("existing_certificate") or ""
            if signed["changed"]:
                diffs.append(
                    dict(
                        signed["diff"],
                        before_header=f"{server_name} (certificate)",
                        after_header=f"{server_name} (certificate)",
                    )
                )
        return certificates, diffs

    # --- apply ---
    def _renderer(self):
        """render(template, variables): a role template rendered with these variables only, as
        the template lookup renders it (the lookup and the search path found once per task)."""
        lookup = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
        search = self._vars.get("ansible_search_path") or self._task.get_search_path()

        def render(template, variables):
            return lookup.run([template], variables=dict(variables, ansible_search_path=search))[0]

        return render

    def _apply(self, layouts):
        args = self._args
        prepared = args["prepared"] or {}
        render = self._renderer()
        requests = []
        for spec in args["specs"]:
            name = spec["name"]
            tenant = layouts[name]
            result = prepared["results"][name]
            passwords = result.get("passwords") or {}
            port = int(result.get("port") or 0)  # 0: a new tenant in check mode
            readonly = bool(spec.get("readonly_role"))
            server_name = self._server_name(name)
            bin_dir = f"/usr/lib/postgresql/{spec['pg_version']}/bin"
            dropin = f"/etc/systemd/system/{tenant.postgres_unit}.d/50-tenant.conf"
            variables = dict(
                tenant_cluster_name=name,
                tenant_cluster_tier=spec["tier"],
                tenant_cluster_pg_version=spec["pg_version"],
                tenant_cluster_pg_conf=pg_conf(spec, port, tenant, args["backups"], args["tiers"]),
                tenant_cluster_hba=spec.get("hba") or [],
                tenant_cluster_proxy_cidrs=args["proxy_cidrs"].get(name) or [],
                tenant_cluster_os_user=tenant.os_user,
                tenant_cluster_bin_dir=bin_dir,
                tenant_cluster_data_dir=tenant.data_dir,
                tenant_cluster_sizing=shadowdb_tier(spec["tier"], args["tiers"]),
                tenant_cluster_server_name=server_name,
                tenant_cluster_port=port,
                tenant_cluster_dbname=tenant.owner,
                tenant_cluster_owner=tenant.owner,
                tenant_cluster_owner_password=passwords.get("owner", ""),
                tenant_cluster_host_ca=HOST_CA,
            )
            rendered = {template: render(template, variables) for template in TEMPLATES}

            def owned(path, content, mode="0600", user=tenant.os_user):
                return dict(path=path, content=content, owner=user, group=user, mode=mode)

            requests.append(dict(
                name=name,
                os_user=tenant.os_user,
                unit=tenant.postgres_unit,
                data_dir=tenant.data_dir,
                socket_dir=tenant.socket_dir,
                port=port,
                bin_dir=bin_dir,
                pg_version=int(spec["pg_version"]),
                superuser_password=passwords.get("postgres", ""),
                files=[
                    owned(f"{tenant.data_dir}/postgresql.conf", rendered["postgresql.conf.j2"]),
                    owned(f"{tenant.data_dir}/pg_hba.conf", rendered["pg_hba.conf.j2"]),
                    owned(f"{tenant.data_dir}/pg_ident.conf", rendered["pg_ident.conf.j2"]),
                    owned(f"{tenant.tls_dir}/server.crt", prepared["certificates"].get(name, ""), "0644"),
                    owned(dropin, rendered["tenant.conf.j2"], "0644", "root"),
                ],
                dropin=dropin,
                last_good_dir=f"{tenant.secrets_dir}/last-good",
                sql=dict(
                    owner=tenant.owner,
                    owner_password=passwords.get("owner", ""),
                    superuser=bool(spec.get("superuser")),
                    dbname=tenant.owner,
                    extensions=spec.get("extensions") or [],
                    readonly=readonly,
                    readonly_user=tenant.readonly_user,
                    readonly_password=passwords.get("readonly") if readonly else None,
                ),
                health=dict(
                    address="127.0.0.1",
                    server_name=server_name,
                    dbname=tenant.owner,
                    user=tenant.owner,
                    password=passwords.get("owner", ""),
                    sslrootcert=HOST_CA,
                    timeout=args["health_timeout"],
                ),
                credentials_file=f"{tenant.secrets_dir}/owner.env",
                credentials=rendered["credentials.env.j2"],
            ))  # fmt: skip
            record = args["records"].get(name)
            if record is not None and port:  # a new tenant in check mode has no port to record
                requests[-1]["record"] = converged_record(name, record["fingerprint"], port) | {
                    "previous": record.get("previous")
                }
        if not requests:
            return dict(changed=False, results={}, failed_tenants={})
        return self._module("shadowdb_cluster_apply", dict(
            unit_template_changed=args["unit_template_changed"], tenants=requests))  # fmt: skip
