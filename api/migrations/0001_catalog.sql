-- The API catalog: tokens, tenants, jobs and their events.
-- Secrets are never stored in clear: tokens as SHA-256, a create job's credentials sealed
-- (api/sealing.py) for a key that only the creating caller's token unwraps.

CREATE TABLE api_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text NOT NULL,
    scope        text NOT NULL CHECK (scope IN ('admin', 'read')),
    token_sha256 bytea NOT NULL UNIQUE CHECK (length(token_sha256) = 32),
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz,
    revoked_at   timestamptz
);

CREATE TABLE tenants (
    name        text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9-]{0,14}[a-z0-9]$'),
    host        text NOT NULL,
    spec        jsonb NOT NULL,
    state       text NOT NULL CHECK (state IN ('creating', 'ready', 'updating', 'deleting', 'failed')),
    -- host, address, port, dbname, user, readonly_user: never a password
    endpoint    jsonb,
    last_job_id uuid,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX tenants_host ON tenants (host);

CREATE TABLE jobs (
    id               uuid PRIMARY KEY,
    kind             text NOT NULL CHECK (kind IN ('create', 'update', 'delete')),
    tenant           text NOT NULL,
    host             text NOT NULL,
    -- the spec the job converges to (create, update) or the removal request (delete)
    spec             jsonb NOT NULL,
    status           text NOT NULL DEFAULT 'queued'
                     CHECK (status IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
    created_by       bigint REFERENCES api_tokens (id),
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    attempts         integer NOT NULL DEFAULT 0,
    -- the tenant's state before this job (restored when the job is cancelled before it starts)
    prior_state      text,
    cancel_requested boolean NOT NULL DEFAULT false,
    error            text,
    result           jsonb,
    -- create jobs: X25519 public key given to the playbook, private key wrapped under a key
    -- derived from the creator's token, and the credentials sealed for it (until delivered)
    public_key       bytea,
    wrapped_key      bytea,
    sealed_credentials text,
    credentials_delivered_at timestamptz
);
CREATE INDEX jobs_queue ON jobs (created_at) WHERE status = 'queued';
CREATE INDEX jobs_tenant ON jobs (tenant, created_at);
-- One running job per host (different hosts run in parallel), enforced by the catalog itself.
CREATE UNIQUE INDEX jobs_one_running_per_host ON jobs (host) WHERE status = 'running';
-- One unfinished job per tenant: a second change while one is queued or running is a conflict.
CREATE UNIQUE INDEX jobs_one_active_per_tenant ON jobs (tenant) WHERE status IN ('queued', 'running');

CREATE TABLE job_events (
    job_id     uuid NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    seq        integer NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    type       text NOT NULL,
    data       jsonb NOT NULL,
    PRIMARY KEY (job_id, seq)
);
