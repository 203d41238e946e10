-- Backups seen by the drift check (api/drift.py): {tenant: unix time of the end of its last
-- backup, or null when its stanza has none}, read from the backup repository; null when the
-- deployment has no repository. GET /v1/tenants/{name} and /metrics show each tenant's age.
ALTER TABLE drift_checks ADD COLUMN backups jsonb;
