-- The session-audit trail in SQL (src/session_audit/log.rs): superusers and pgaudit_admin
-- members only (the function also checks, and hides superusers' sessions from admins).
REVOKE ALL ON FUNCTION pgaudit_siem.session_audit_log(timestamptz, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgaudit_siem.session_audit_log(timestamptz, timestamptz) TO pgaudit_admin;
