-- High availability through the API (tenant_ha.yml). An HA job touches several db hosts (its
-- members, chosen by the playbook's placement) and renders HAProxy itself: it is "exclusive",
-- claimed only when no other job runs, and no job is claimed while it runs (or while it waits
-- in the queue ahead of them). See api/jobs.py.
ALTER TABLE jobs ADD COLUMN exclusive boolean NOT NULL DEFAULT false;
-- members: the tenant's members as last registered ({host, address, port, api_port, role});
-- ha: its jobs go through tenant_ha.yml (set when an HA job starts, cleared when one leaves it
-- standalone), so a half-done conversion is never handed to tenant.yml or tenant_remove.yml.
ALTER TABLE tenants ADD COLUMN members jsonb;
ALTER TABLE tenants ADD COLUMN ha boolean NOT NULL DEFAULT false;
