-- Delegated configuration: the pgaudit_admin role and the aiven_extras wrappers. Included by
-- src/delegated_config/mod.rs.

-- The delegated-configuration role. Roles are cluster-wide, so it survives DROP EXTENSION
-- and is shared by every database that installs the extension.
DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgaudit_admin') THEN
        CREATE ROLE pgaudit_admin NOLOGIN;
    END IF;
END
$$;

CREATE SCHEMA aiven_extras;
-- Only the functions below are meant for callers; USAGE lets pgaudit_admin reach them.
REVOKE ALL ON SCHEMA aiven_extras FROM PUBLIC;
GRANT USAGE ON SCHEMA aiven_extras TO pgaudit_admin;

CREATE FUNCTION aiven_extras.set_pgaudit_parameter(parameter text, database text, value text)
    RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $f$ SELECT pgaudit_siem.apply_delegated_setting(parameter, NULL, database, value, 'database') $f$;

CREATE FUNCTION aiven_extras.set_pgaudit_role_parameter(parameter text, role text, value text)
    RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $f$ SELECT pgaudit_siem.apply_delegated_setting(parameter, role, NULL, value, 'role') $f$;

CREATE FUNCTION aiven_extras.set_pgaudit_role_in_database_parameter(parameter text, role text, database text, value text)
    RETURNS text
    LANGUAGE sql VOLATILE SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    AS $f$ SELECT pgaudit_siem.apply_delegated_setting(parameter, role, database, value, 'role in database') $f$;

REVOKE ALL ON FUNCTION aiven_extras.set_pgaudit_parameter(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION aiven_extras.set_pgaudit_role_parameter(text, text, text) FROM PUBLIC;
REVOKE ALL ON FUNCTION aiven_extras.set_pgaudit_role_in_database_parameter(text, text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION aiven_extras.set_pgaudit_parameter(text, text, text) TO pgaudit_admin;
GRANT EXECUTE ON FUNCTION aiven_extras.set_pgaudit_role_parameter(text, text, text) TO pgaudit_admin;
GRANT EXECUTE ON FUNCTION aiven_extras.set_pgaudit_role_in_database_parameter(text, text, text, text) TO pgaudit_admin;
-- The worker function is reachable only through the wrappers above.
REVOKE ALL ON FUNCTION pgaudit_siem.apply_delegated_setting(text, text, text, text, text) FROM PUBLIC;
