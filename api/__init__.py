"""ShadowDB API: tenant onboarding as a service (FastAPI + ansible-runner + a PostgreSQL catalog).

Thin by design: every change to a host is one run of the project's own playbooks
(playbooks/tenant.yml, playbooks/tenant_remove.yml); the API only validates, queues, records
and reports.
"""

__version__ = "0.1.0"
