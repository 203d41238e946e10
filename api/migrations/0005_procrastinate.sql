-- Jobs run on procrastinate (api/jobs.py): each step of a job (host, route, ha) is one
-- procrastinate job in its own tables (procrastinate_*, applied by api/catalog.py:migrate), whose
-- lock serializes the runs of one host (and the route and HA steps of the deployment). Its lock
-- replaces the catalog's "one running job per host" index; its heartbeats and retries replace
-- the session advisory locks and the recovery sweep of the home-made engine.
DROP INDEX jobs_one_running_per_host;
-- steps: the job's steps in order (fixed when it is queued); step: the one queued or running.
ALTER TABLE jobs ADD COLUMN steps text[];
ALTER TABLE jobs ADD COLUMN step text;
-- stats: the custom stats of the job's finished steps, until it ends (the host step's endpoint
-- and sealed credentials wait there for its route step; never a secret in clear).
ALTER TABLE jobs ADD COLUMN stats jsonb;
-- run_by: while a run does the job's current step, the job whose procrastinate job runs it (the
-- job itself, or the first job of a batch: jobs waiting for a host step of the same host share
-- one run of tenant.yml); NULL while the step waits.
ALTER TABLE jobs ADD COLUMN run_by uuid;
