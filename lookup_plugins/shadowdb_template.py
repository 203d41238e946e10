# Copyright: ShadowDB contributors
# Apache License 2.0 (see LICENSE or https://www.apache.org/licenses/LICENSE-2.0)
"""ansible.builtin.template's lookup, without a deep copy of every variable of the play on each
call.

The builtin lookup deep-copies the task's variables before it adds the template's own
(template_vars, ansible_managed): with the registry's records, the batch's plans and the
tenants' fingerprints among the facts, that copy grows with the fleet (HAProxy's candidate
renders three templates per run; its per-tenant fragments come from one of them,
tenants.cfg.j2). Here the variables are copied one level deep only: the template sees the same
values and renders the same text (ShadowDB's templates never change a variable they are given).
"""

from __future__ import annotations

from ansible.plugins.loader import lookup_loader
from ansible.plugins.lookup import LookupBase

DOCUMENTATION = """
name: shadowdb_template
short_description: render a template, as ansible.builtin.template does, without a deep copy of the variables
description:
  - Takes the terms and options of the ansible.builtin.template lookup (template_vars, trim_blocks...)
    and returns the same text.
options:
  _terms:
    description: The templates to render, found as ansible.builtin.template finds them.
"""


class _OneLevelCopy(dict):
    """The variables, copied one level deep where the builtin lookup asks for a deep copy."""

    def __deepcopy__(self, memo):
        return dict(self)


class LookupModule(LookupBase):
    def run(self, terms, variables=None, **kwargs):
        template = lookup_loader.get("ansible.builtin.template", loader=self._loader, templar=self._templar)
        return template.run(terms, variables=_OneLevelCopy(variables or {}), **kwargs)
