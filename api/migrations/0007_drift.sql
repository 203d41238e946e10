-- Drift checks (api/drift.py): a periodic, read-only comparison of the catalog with the db
-- hosts and the registry. findings: [{kind, tenant, host, detail}]; error: why a check could
-- not run. The last ones are kept; GET /v1/tenants and /metrics show the latest.
CREATE TABLE drift_checks (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL,
    finished_at timestamptz NOT NULL,
    error       text,
    findings    jsonb NOT NULL DEFAULT '[]'
);
