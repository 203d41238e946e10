-- Backups and restores through the API (docs/backup.md): job kinds backup (POST
-- /v1/tenants/{name}/backups: a backup on the repository host now) and restore (POST
-- /v1/tenants/{name}/restore: the tenant in place to a target). request: what was asked
-- ({"type": "full"}, {"target": {...}}); the spec of such a job is the tenant's, unchanged.
ALTER TABLE jobs DROP CONSTRAINT jobs_kind_check;
ALTER TABLE jobs ADD CONSTRAINT jobs_kind_check
    CHECK (kind IN ('create', 'update', 'delete', 'backup', 'restore'));
ALTER TABLE jobs ADD COLUMN request jsonb;
