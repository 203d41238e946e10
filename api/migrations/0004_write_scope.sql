-- A third token scope, between read and admin: "write" creates, changes, removes and cancels
-- tenants and jobs, but cannot ask for what widens a tenant's powers on its host
-- (superuser: true), which stays with "admin" (api/auth.py).
ALTER TABLE api_tokens DROP CONSTRAINT api_tokens_scope_check;
ALTER TABLE api_tokens ADD CONSTRAINT api_tokens_scope_check CHECK (scope IN ('admin', 'write', 'read'));
