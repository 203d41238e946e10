-- hosts: the db hosts a job touches, its host first (shadowdb.tenant_hosts, chosen when the job
-- is queued): a standalone job's host; an HA job's members, current and placed. api/jobs.py
-- locks these hosts (and only these) for the job's host or HA step, and an HA job hands them to
-- tenant_ha.yml as its candidates. A tenant whose members are not recorded yet (an HA create
-- under way) counts on its last job's hosts when the next tenant is placed.
ALTER TABLE jobs ADD COLUMN hosts text[];
