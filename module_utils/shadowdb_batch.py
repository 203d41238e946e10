# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""One module call for many tenants of a host: the batch form shared by ShadowDB's modules.

A module that converges one tenant takes its per-tenant options at the top level, as before; the
same module takes O(tenants), a list of those per-tenant option sets, to do the same work for
each tenant of a batch in ONE round trip (issue 13: a batch of 10 tenants costs about the calls
of one). The options that are not per tenant (helper paths, port range...) stay at the top level
and apply to every tenant.

In the batch form a tenant's failure is the tenant's own: the task does not fail, the other
tenants go on, and the result says, per tenant, what happened:

  results: {tenant: {failed: bool, msg: str, changed: bool, ...the single form's return values}}
  failed_tenants: {tenant: msg}      changed: true when any tenant changed
"""

from concurrent.futures import ThreadPoolExecutor


class TenantFailure(Exception):
    """One tenant's failure in a batch: its text names the tenant and the step (never a secret);
    ``partial`` (e.g. ``actions``, what was done before) is reported beside it by run_batch."""

    def __init__(self, msg, **partial):
        super().__init__(msg)
        self.partial = partial


def batch_argument_spec(per_tenant, shared):
    """The module's argument spec: ``shared`` options, the ``per_tenant`` ones at the top level
    (no longer required there: a batch does without them) and ``tenants``, a list of them."""
    spec = dict(shared)
    for key, option in per_tenant.items():
        spec[key] = {k: v for k, v in option.items() if k != "required"}
    spec["tenants"] = dict(type="list", elements="dict", options=per_tenant)
    return spec


def tenant_params(module, per_tenant):
    """The per-tenant parameter sets of this call: one per item of ``tenants``, each merged over
    the shared options; or the top-level options alone (the single form), checked for the
    options the single form requires."""
    params = module.params
    shared = {k: v for k, v in params.items() if k not in per_tenant and k != "tenants"}
    if params.get("tenants") is not None:
        given = sorted(k for k in per_tenant if params.get(k) not in (None, per_tenant[k].get("default")))
        if given:
            module.fail_json(msg=f"{', '.join(given)}: give per-tenant options inside tenants, not beside it")
        names = [t["name"] for t in params["tenants"]]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            module.fail_json(msg=f"tenants: {', '.join(twice)} listed more than once")
        return [dict(shared, **t) for t in params["tenants"]]
    missing = [k for k, option in per_tenant.items() if option.get("required") and params.get(k) is None]
    if missing:
        module.fail_json(msg=f"missing required arguments: {', '.join(sorted(missing))}")
    return [dict(params)]


def run_batch(module, per_tenant, converge_one, errors, workers=1, items=None):
    """Converge each tenant with ``converge_one(params) -> result dict`` and exit.

    ``converge_one`` raises one of ``errors`` when its tenant fails; the error's text names the
    tenant and the step, never a secret. It may set ``actions``/``diff`` on the error object to
    report what was done before the failure. The single form exits as the module always did
    (fail_json on error); the batch form reports each tenant's outcome and fails only when the
    call itself is wrong. ``items``: the result of ``tenant_params`` when the caller already has it.
    """
    if items is None:
        items = tenant_params(module, per_tenant)
    if module.params.get("tenants") is None:
        try:
            result = converge_one(items[0])
        except errors as e:
            module.fail_json(msg=str(e), **getattr(e, "partial", {}))
        module.exit_json(**result)

    def outcome(params):
        try:
            return converge_one(params)
        except errors as e:
            return dict(getattr(e, "partial", {}), failed=True, msg=str(e))

    if workers > 1 and len(items) > 1:
        with ThreadPoolExecutor(max_workers=workers) as pool:
            outcomes = list(pool.map(outcome, items))
    else:
        outcomes = [outcome(params) for params in items]
    results, failed, diffs = {}, {}, []
    for params, result in zip(items, outcomes, strict=True):
        name = params["name"]
        if result.get("failed"):
            failed[name] = result["msg"]
        result.setdefault("failed", False)
        result.setdefault("changed", False)
        diff = result.pop("diff", None)
        if diff:
            diffs.extend(diff if isinstance(diff, list) else [diff])
        results[name] = result
    out = dict(
        changed=any(r["changed"] for r in results.values()),
        results=results,
        failed_tenants=failed,
    )
    if diffs:
        out["diff"] = diffs
    module.exit_json(**out)
