-- A create or update job ends with its routing step (registry and HAProxy, which every host
-- shares): that step runs after the job's host step, under one lock for the whole deployment,
-- and no longer holds the host, so the host's next job may start while it runs.
-- host_released_at: when the job's host step ended (NULL while it holds its host).
ALTER TABLE jobs ADD COLUMN host_released_at timestamptz;
DROP INDEX jobs_one_running_per_host;
-- One job per host holding it (different hosts run in parallel), enforced by the catalog itself.
CREATE UNIQUE INDEX jobs_one_running_per_host ON jobs (host)
    WHERE status = 'running' AND host_released_at IS NULL;
