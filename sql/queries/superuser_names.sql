-- Roles that are superusers now: pgaudit_admin members do not see their sessions'
-- records in session_audit_log() (see session_audit::log).
SELECT r.rolname::pg_catalog.text FROM pg_catalog.pg_roles r WHERE r.rolsuper
