-- A create's guard is no longer a step of its own: the host step's run begins with it (one
-- ansible-runner run per create instead of two). The unfinished jobs queued with a guard step
-- go straight to their host step, which now runs the guard itself; their queued procrastinate
-- job becomes the host step's, with the host's lock (catalog.step_lock). On a new catalog
-- procrastinate's tables come after this file: nothing to convert then.
UPDATE jobs SET step = CASE WHEN step = 'guard' THEN 'host' ELSE step END,
                steps = array_remove(steps, 'guard')
 WHERE 'guard' = ANY(steps) AND status IN ('queued', 'running');
DO $$
BEGIN
    IF to_regclass('procrastinate_jobs') IS NOT NULL THEN
        UPDATE procrastinate_jobs p
           SET args = jsonb_set(p.args, '{step}', '"host"'), lock = 'shadowdb:host:' || j.host
          FROM jobs j
         WHERE p.args->>'step' = 'guard' AND p.status IN ('todo', 'doing')
           AND j.id::text = p.args->>'job_id';
    END IF;
END
$$;
