-- Session audit: pgAudit's DDL event triggers. Included by src/session_audit/event_triggers.rs.

CREATE FUNCTION pgaudit_ddl_command_end()
    RETURNS event_trigger
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'pgaudit_ddl_command_end';

CREATE EVENT TRIGGER pgaudit_ddl_command_end
    ON ddl_command_end
    EXECUTE PROCEDURE pgaudit_ddl_command_end();

CREATE FUNCTION pgaudit_sql_drop()
    RETURNS event_trigger
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'pgaudit_sql_drop';

CREATE EVENT TRIGGER pgaudit_sql_drop
    ON sql_drop
    EXECUTE PROCEDURE pgaudit_sql_drop();

-- Event triggers fire without an EXECUTE check; nobody needs to call these directly.
REVOKE ALL ON FUNCTION pgaudit_ddl_command_end(), pgaudit_sql_drop() FROM PUBLIC;
