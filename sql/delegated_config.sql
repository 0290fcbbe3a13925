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

-- The aiven_extras wrappers the guide calls. Schema aiven_extras may exist already (the
-- real aiven_extras extension, or a superuser's schema): then only the functions it
-- lacks are created. Everything created here is a member of this extension and goes with
-- DROP EXTENSION; an existing schema and its other functions are left alone. When the
-- aiven_extras extension provides set_pgaudit_parameter itself, its version is the one
-- called (it sets the same pgaudit.* settings this extension reads).
-- Refused: a schema of a non-superuser, or one where a non-superuser may create objects
-- (its owner could drop the wrappers, and anyone with CREATE could add an overload that
-- takes an admin's call), and a same-named function that is not the aiven_extras
-- extension's (a stand-in that would swallow the admin's calls).
DO $do$
DECLARE
    wrapper record;
    schema_owner name;
    owner_is_superuser boolean;
    creators text;
    existing regprocedure;
BEGIN
    SELECT r.rolname, r.rolsuper,
           (SELECT pg_catalog.string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE g.rolname::text END, ', ')
              FROM pg_catalog.aclexplode(n.nspacl) a LEFT JOIN pg_catalog.pg_roles g ON g.oid = a.grantee
             WHERE a.privilege_type = 'CREATE' AND (a.grantee = 0 OR NOT g.rolsuper))
      INTO schema_owner, owner_is_superuser, creators
      FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_roles r ON r.oid = n.nspowner
     WHERE n.nspname = 'aiven_extras';
    IF FOUND AND NOT owner_is_superuser THEN
        RAISE EXCEPTION 'schema "aiven_extras" is owned by role "%", which is not a superuser', schema_owner
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'Its owner could drop or shadow the delegated-configuration functions pgaudit_siem puts there.',
                  HINT = 'Give the schema to a superuser (ALTER SCHEMA aiven_extras OWNER TO postgres) or drop it, then create the extension again.';
    END IF;
    IF FOUND AND creators IS NOT NULL THEN
        RAISE EXCEPTION 'schema "aiven_extras" lets % create objects in it', creators
            USING ERRCODE = 'insufficient_privilege',
                  DETAIL = 'An overload created there could take the calls meant for the delegated-configuration functions.',
                  HINT = 'REVOKE CREATE ON SCHEMA aiven_extras FROM the roles named, then create the extension again.';
    END IF;
    IF NOT FOUND THEN
        CREATE SCHEMA aiven_extras;
        -- Only the functions below are meant for callers; USAGE lets pgaudit_admin reach them.
        REVOKE ALL ON SCHEMA aiven_extras FROM PUBLIC;
    END IF;
    GRANT USAGE ON SCHEMA aiven_extras TO pgaudit_admin;
    FOR wrapper IN
        SELECT * FROM (VALUES
            ('set_pgaudit_parameter', 'parameter text, database text, value text', 'text, text, text',
             $$parameter, NULL, database, value, 'database'$$),
            ('set_pgaudit_role_parameter', 'parameter text, role text, value text', 'text, text, text',
             $$parameter, role, NULL, value, 'role'$$),
            ('set_pgaudit_role_in_database_parameter', 'parameter text, role text, database text, value text',
             'text, text, text, text', $$parameter, role, database, value, 'role in database'$$)
        ) AS w(name, params, types, call)
    LOOP
        existing := pg_catalog.to_regprocedure(pg_catalog.format('aiven_extras.%s(%s)', wrapper.name, wrapper.types));
        IF existing IS NOT NULL THEN
            CONTINUE WHEN EXISTS (SELECT FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid
                                   WHERE d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass AND d.objid = existing
                                     AND d.refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass
                                     AND d.deptype = 'e' AND e.extname IN ('aiven_extras', 'pgaudit_siem'));
            RAISE EXCEPTION 'function % already exists and is not part of the aiven_extras extension', existing
                USING ERRCODE = 'duplicate_function',
                      HINT = 'Drop it (pgaudit_siem creates the delegated-configuration functions itself), then create the extension again.';
        END IF;
        EXECUTE pg_catalog.format(
            'CREATE FUNCTION aiven_extras.%s(%s) RETURNS text LANGUAGE sql VOLATILE SECURITY DEFINER '
            'SET search_path = pg_catalog, pg_temp '
            'AS $f$ SELECT pgaudit_siem.apply_delegated_setting(%s) $f$',
            wrapper.name, wrapper.params, wrapper.call);
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION aiven_extras.%s(%s) FROM PUBLIC', wrapper.name, wrapper.types);
        EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION aiven_extras.%s(%s) TO pgaudit_admin', wrapper.name, wrapper.types);
    END LOOP;
END
$do$;
-- The worker function is reachable only through the wrappers above.
REVOKE ALL ON FUNCTION pgaudit_siem.apply_delegated_setting(text, text, text, text, text) FROM PUBLIC;
