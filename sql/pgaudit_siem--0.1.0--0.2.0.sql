-- pgaudit_siem 0.1.0 -> 0.2.0. Released scripts are never edited (sql/README.md).
-- Tables are altered in place: the outbox keeps every undelivered event, the registry,
-- configuration, cursor and dead letters stay. Everything else is (re)created as in
-- pgaudit_siem--0.2.0.sql, which tests/tests/operations.rs compares with the result.
-- It takes exclusive locks on the outbox and on every tracked table (their capture
-- triggers are reinstalled): run it when no long transaction writes to them.
\echo Use "ALTER EXTENSION pgaudit_siem UPDATE TO '0.2.0'" to load this file. \quit

-- Functions whose signature changed (the new ones are created below).
DROP FUNCTION pgaudit_siem._install_triggers(oid, text, text[]);
DROP FUNCTION pgaudit_siem._check_may_track(oid);
-- (track() and untrack() become SQL wrappers of _track()/_untrack(): replaced below,
-- keeping any grants or revokes a site made on them.)
-- The DDL event trigger fires for more commands (renames through ALTER VIEW and others).
DROP EVENT TRIGGER pgaudit_siem_ddl_command_end;

-- The registry: tables by regclass and exclusions by name (what a dump keeps), plus the
-- exclusions by attribute number (what follows a renamed column).
DROP VIEW pgaudit_siem.tracked_tables;
ALTER TABLE pgaudit_siem.tracked ALTER COLUMN relid TYPE regclass;
ALTER TABLE pgaudit_siem.tracked ADD COLUMN exclude_attnums int2[] NOT NULL DEFAULT '{}';
UPDATE pgaudit_siem.tracked t
   SET exclude_attnums = ARRAY(SELECT a.attnum FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = t.relid AND a.attname = ANY (t.exclude_columns)
                                  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum),
       exclude_columns = ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                                WHERE a.attrelid = t.relid AND a.attname = ANY (t.exclude_columns)
                                  AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum);

-- The outbox's order key (src/events/order.rs); existing keys are transaction ids, which
-- the new keys continue.
CREATE FUNCTION pgaudit_siem._outbox_key() RETURNS xid8
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'pgaudit_siem_outbox_key';
ALTER TABLE pgaudit_siem.outbox ALTER COLUMN xid SET DEFAULT pgaudit_siem._outbox_key();

-- The delivery cursor: the hash chain after it.
ALTER TABLE pgaudit_siem.delivery_state
    ADD COLUMN chain_hash text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000';

-- ==== Everything else as in 0.2.0 (functions replaced, new objects created) ====
CREATE OR REPLACE FUNCTION pgaudit_sql_drop()
    RETURNS event_trigger
    SECURITY DEFINER
    SET search_path = pg_catalog, pg_temp
    LANGUAGE C
    AS 'MODULE_PATHNAME', 'pgaudit_sql_drop';

REVOKE ALL ON FUNCTION pgaudit_ddl_command_end(), pgaudit_sql_drop() FROM PUBLIC;

CREATE OR REPLACE FUNCTION "_acts_as_admin"(
	"role" oid /* pg_sys :: Oid */
) RETURNS bool /* bool */
STRICT STABLE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'acts_as_admin_sql_wrapper';

CREATE OR REPLACE FUNCTION "_caller_is_attested"(
	"caller" oid /* pgrx :: pg_sys :: Oid */
) RETURNS bool /* bool */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'caller_is_attested_wrapper';

CREATE OR REPLACE FUNCTION "_inserted_by_extension"() RETURNS bool /* bool */
STRICT VOLATILE PARALLEL RESTRICTED 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'inserted_by_extension_wrapper';

CREATE OR REPLACE FUNCTION "_invoking_role"() RETURNS oid /* pgrx :: pg_sys :: Oid */
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'invoking_role_wrapper';

CREATE OR REPLACE FUNCTION "_send_test_event"(
	"url" TEXT, /* & str */
	"headers" jsonb, /* Option < pgrx :: JsonB > */
	"format" TEXT /* Option < & str > */
) RETURNS TABLE (
	"ok" bool,  /* bool */
	"http_status" INT,  /* Option < i32 > */
	"latency_ms" double precision,  /* f64 */
	"error" TEXT  /* Option < String > */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'send_test_event_wrapper';

CREATE OR REPLACE FUNCTION "_session_audit_stats"() RETURNS TABLE (
	"enabled" bool,  /* bool */
	"stream_id" TEXT,  /* Option < String > */
	"records_spooled" bigint,  /* i64 */
	"records_shipped" bigint,  /* i64 */
	"records_unshipped" bigint,  /* i64 */
	"spool_bytes" bigint,  /* i64 */
	"oldest_unshipped_age_s" double precision,  /* Option < f64 > */
	"fallbacks_to_server_log" bigint,  /* i64 */
	"dead_lettered" bigint,  /* i64 */
	"last_http_status" INT,  /* Option < i32 > */
	"last_error" TEXT  /* Option < String > */
)
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'session_audit_stats_wrapper';

CREATE OR REPLACE FUNCTION "_start_delivery_at_commit"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'start_delivery_at_commit_wrapper';

CREATE OR REPLACE FUNCTION "_validate_siem_config"(
	"url" TEXT, /* Option < & str > */
	"headers" jsonb, /* Option < pgrx :: JsonB > */
	"categories" TEXT[], /* :: std :: option :: Option < Vec < Option < String > > > */
	"format" TEXT /* Option < & str > */
) RETURNS void
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'validate_siem_config_wrapper';

CREATE OR REPLACE FUNCTION "_wake_delivery_at_commit"() RETURNS void
STRICT VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'wake_delivery_at_commit_wrapper';

CREATE OR REPLACE FUNCTION "_worker_pid"() RETURNS INT /* Option < i32 > */
STRICT VOLATILE PARALLEL SAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'worker_pid_wrapper';

CREATE OR REPLACE FUNCTION "apply_delegated_setting"(
	"parameter" TEXT, /* Option < & str > */
	"role" TEXT, /* Option < & str > */
	"database" TEXT, /* Option < & str > */
	"value" TEXT, /* Option < & str > */
	"scope" TEXT /* & str */
) RETURNS TEXT /* String */
VOLATILE PARALLEL UNSAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'apply_delegated_setting_wrapper';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'pgaudit_admin') THEN
        CREATE ROLE pgaudit_admin NOLOGIN;
    END IF;
END
$$;

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

REVOKE ALL ON FUNCTION pgaudit_siem.apply_delegated_setting(text, text, text, text, text) FROM PUBLIC;

CREATE OR REPLACE FUNCTION "session_audit_log"(
	"since" timestamp with time zone, /* TimestampWithTimeZone */
	"until" timestamp with time zone DEFAULT now() /* Option < TimestampWithTimeZone > */
) RETURNS TABLE (
	"sequence" bigint,  /* i64 */
	"recorded_at" timestamp with time zone,  /* TimestampWithTimeZone */
	"action" TEXT,  /* Option < String > */
	"database" TEXT,  /* Option < String > */
	"login_role" TEXT,  /* Option < String > */
	"statement" TEXT,  /* Option < String > */
	"record" jsonb  /* pgrx :: JsonB */
)
VOLATILE PARALLEL UNSAFE 
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'session_audit_log_wrapper';

REVOKE ALL ON FUNCTION pgaudit_siem.session_audit_log(timestamptz, timestamptz) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem.session_audit_log(timestamptz, timestamptz) TO pgaudit_admin;

CREATE OR REPLACE FUNCTION "uuid_v7"() RETURNS uuid /* pgrx :: Uuid */
STRICT VOLATILE PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'uuid_v7_wrapper';

CREATE OR REPLACE FUNCTION pgaudit_siem._tracked_attnums_from_names() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    missing text;
BEGIN
    -- A name the table lacks cannot be excluded: refuse rather than capture the column
    -- that name meant (its registration is left out, so its capture triggers refuse
    -- writes until it is tracked again).
    SELECT c INTO missing FROM pg_catalog.unnest(NEW.exclude_columns) c
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute a
                        WHERE a.attrelid = NEW.relid AND a.attname = c AND a.attnum > 0 AND NOT a.attisdropped)
     LIMIT 1;
    IF missing IS NOT NULL THEN
        RAISE EXCEPTION 'excluded column "%" of tracked table % does not exist', missing, NEW.relid
            USING ERRCODE = 'undefined_column',
                  HINT = 'Track the table again with pgaudit_siem.track() and the columns to exclude.';
    END IF;
    NEW.exclude_attnums := ARRAY(SELECT a.attnum FROM pg_catalog.pg_attribute a
                                  WHERE a.attrelid = NEW.relid AND a.attname = ANY (NEW.exclude_columns)
                                    AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum);
    RETURN NEW;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._tracked_attnums_from_names() FROM PUBLIC;

CREATE TRIGGER tracked_attnums_from_names BEFORE INSERT ON pgaudit_siem.tracked
    FOR EACH ROW EXECUTE FUNCTION pgaudit_siem._tracked_attnums_from_names();

ALTER TABLE pgaudit_siem.tracked ENABLE ALWAYS TRIGGER tracked_attnums_from_names;

CREATE OR REPLACE FUNCTION pgaudit_siem._outbox_key() RETURNS xid8
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'pgaudit_siem_outbox_key';

REVOKE ALL ON FUNCTION pgaudit_siem._outbox_key() FROM PUBLIC;

REVOKE ALL ON pgaudit_siem.tracked, pgaudit_siem.outbox FROM PUBLIC;

SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.tracked', '');

SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.outbox',
    'WHERE (xid, seq) > (SELECT s.last_xid, s.last_seq FROM pgaudit_siem.delivery_state s) ORDER BY xid, seq');

GRANT USAGE ON SCHEMA pgaudit_siem TO PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem.capture_changes() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'pgaudit_siem_capture_changes';

REVOKE ALL ON FUNCTION pgaudit_siem.capture_changes() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem._column_names(p_relid oid, p_attnums int2[]) RETURNS text[]
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
      FROM pg_attribute a
     WHERE a.attrelid = p_relid AND a.attnum = ANY (p_attnums) AND NOT a.attisdropped
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._partition_attnums(p_root oid, p_part oid, p_root_attnums int2[]) RETURNS int2[]
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT coalesce(array_agg(p.attnum ORDER BY p.attnum), '{}')
      FROM pg_attribute r JOIN pg_attribute p ON p.attrelid = p_part AND p.attname = r.attname AND NOT p.attisdropped
     WHERE r.attrelid = p_root AND r.attnum = ANY (p_root_attnums)
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._shape(p_relid oid, p_category text, p_attnums int2[]) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT jsonb_build_object(
        'category', p_category,
        'captured_columns', (SELECT coalesce(jsonb_agg(a.attname::text ORDER BY a.attnum), '[]')
                               FROM pg_attribute a
                              WHERE a.attrelid = p_relid AND a.attnum > 0 AND NOT a.attisdropped
                                AND a.attnum <> ALL (p_attnums)),
        'exclude_columns', to_jsonb(pgaudit_siem._column_names(p_relid, p_attnums)))
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._column_names(oid, int2[]), pgaudit_siem._partition_attnums(oid, oid, int2[]),
    pgaudit_siem._shape(oid, text, int2[]) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem._column_names(oid, int2[]) TO pgaudit_admin;

CREATE OR REPLACE VIEW pgaudit_siem.tracked_tables AS
    SELECT t.relid::pg_catalog.regclass AS table_name, t.category,
           t.exclude_columns, t.tracked_by, t.tracked_at
      FROM pgaudit_siem.tracked t;

REVOKE ALL ON pgaudit_siem.tracked_tables FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.tracked_tables TO pgaudit_admin;

CREATE OR REPLACE FUNCTION pgaudit_siem._admin_event(p_category text, p_action text, p_relid oid, p_schema text, p_table text, p_detail jsonb,
                                          p_before jsonb DEFAULT NULL, p_after jsonb DEFAULT NULL)
    RETURNS void LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    INSERT INTO pgaudit_siem.outbox (id, created_at, category, action, relid, schema_name, table_name, row_count, payload)
    SELECT x.id, now_ts, p_category, p_action, p_relid, p_schema, p_table, NULL,
           json_build_object(
             'id', id, 'timestamp', to_char(now_ts AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
             'event', json_build_object('category', p_category, 'action', p_action),
             'org', json_build_object('id', NULL, 'name', current_database(), 'alias', current_database()),
             'actor', json_build_object('id', session_user, 'email', NULL, 'first_name', NULL, 'last_name', NULL),
             'changes', json_build_object('processed_row_count', CASE WHEN p_before IS NOT NULL OR p_after IS NOT NULL THEN 1 END,
                                         'part', 1, 'part_count', 1,
                                         'data_before', CASE WHEN p_before IS NULL THEN '[]'::json ELSE json_build_array(p_before) END,
                                         'data_after', CASE WHEN p_after IS NULL THEN '[]'::json ELSE json_build_array(p_after) END,
                                         'detail', p_detail),
             'source', json_build_object('database', current_database(), 'schema', p_schema, 'table', p_table,
                                         'transaction_id', pg_current_xact_id()::text::bigint, 'session_user', session_user,
                                         'current_user', current_user, 'application_name', current_setting('application_name'),
                                         'client_addr', host(inet_client_addr())))
      FROM (SELECT pgaudit_siem.uuid_v7() AS id, clock_timestamp() AS now_ts) x;
    SELECT pgaudit_siem._wake_delivery_at_commit();
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._admin_event(text, text, oid, text, text, jsonb, jsonb, jsonb) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem._install_triggers(p_relid oid, p_category text, p_exclude int2[])
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    args text := pg_catalog.array_to_string(ARRAY(SELECT pg_catalog.quote_literal(a) FROM pg_catalog.unnest(ARRAY[p_category] || p_exclude::text[]) a), ', ');
    tbl text := p_relid::pg_catalog.regclass::text;
BEGIN
    PERFORM pgaudit_siem._drop_triggers(p_relid);
    EXECUTE pg_catalog.format('CREATE TRIGGER pgaudit_siem_capture_insert AFTER INSERT ON %s REFERENCING NEW TABLE AS pgaudit_siem_new FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes(%s)', tbl, args);
    EXECUTE pg_catalog.format('CREATE TRIGGER pgaudit_siem_capture_update AFTER UPDATE ON %s REFERENCING OLD TABLE AS pgaudit_siem_old NEW TABLE AS pgaudit_siem_new FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes(%s)', tbl, args);
    EXECUTE pg_catalog.format('CREATE TRIGGER pgaudit_siem_capture_delete AFTER DELETE ON %s REFERENCING OLD TABLE AS pgaudit_siem_old FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes(%s)', tbl, args);
    EXECUTE pg_catalog.format('CREATE TRIGGER pgaudit_siem_capture_truncate AFTER TRUNCATE ON %s FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes(%s)', tbl, args);
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._drop_triggers(p_relid oid)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['pgaudit_siem_capture_insert', 'pgaudit_siem_capture_update', 'pgaudit_siem_capture_delete', 'pgaudit_siem_capture_truncate'] LOOP
        IF EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = p_relid AND tgname = t) THEN
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', t, p_relid::pg_catalog.regclass);
        END IF;
    END LOOP;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._install_triggers(oid, text, int2[]) FROM PUBLIC;

REVOKE ALL ON FUNCTION pgaudit_siem._drop_triggers(oid) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem._check_may_track(caller oid, p_relid oid)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF NOT pgaudit_siem._caller_is_attested(caller) THEN
        RAISE EXCEPTION 'pgaudit_siem: the caller of track() or untrack() is not attested'
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Call pgaudit_siem.track() or pgaudit_siem.untrack().';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_class WHERE oid = p_relid) THEN
        RAISE EXCEPTION 'relation with OID % does not exist', p_relid USING ERRCODE = 'undefined_table';
    END IF;
    IF NOT (pg_catalog.pg_has_role(caller, (SELECT relowner FROM pg_catalog.pg_class WHERE oid = p_relid), 'USAGE')
            OR pgaudit_siem._acts_as_admin(caller)) THEN
        RAISE EXCEPTION 'permission denied to track table %', p_relid::pg_catalog.regclass
            USING ERRCODE = 'insufficient_privilege',
                  HINT = 'Only the table owner or a member of pgaudit_admin may track or untrack a table.';
    END IF;
    IF (SELECT relkind FROM pg_catalog.pg_class WHERE oid = p_relid) NOT IN ('r', 'p') THEN
        RAISE EXCEPTION '% is not a table', p_relid::pg_catalog.regclass USING ERRCODE = 'wrong_object_type';
    END IF;
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._track(caller oid, tbl regclass, category text, exclude_columns text[])
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    cat text := coalesce(category, (SELECT relname FROM pg_catalog.pg_class WHERE oid = tbl));
    unknown text;
    excluded_attnums int2[];
    previous jsonb;
    part oid;
BEGIN
    PERFORM pgaudit_siem._check_may_track(caller, tbl);
    IF cat = '' THEN
        RAISE EXCEPTION 'category must not be empty' USING ERRCODE = 'invalid_parameter_value';
    END IF;
    -- The extension's own categories are always forwarded: a table must not pose as them.
    IF cat IN ('pgaudit_siem', 'siem_settings', 'pgaudit_siem_test', 'session_audit') THEN
        RAISE EXCEPTION 'category "%" is reserved', cat USING ERRCODE = 'invalid_parameter_value',
            HINT = 'pgaudit_siem uses it for its own events; choose another category name.';
    END IF;
    SELECT c INTO unknown FROM pg_catalog.unnest(coalesce(exclude_columns, '{}')) c
     WHERE NOT EXISTS (SELECT FROM pg_catalog.pg_attribute WHERE attrelid = tbl AND attname = c AND attnum > 0 AND NOT attisdropped)
     LIMIT 1;
    IF unknown IS NOT NULL THEN
        RAISE EXCEPTION 'column "%" of relation % does not exist', unknown, tbl USING ERRCODE = 'undefined_column';
    END IF;
    excluded_attnums := ARRAY(SELECT a.attnum FROM pg_catalog.pg_attribute a
                       WHERE a.attrelid = tbl AND a.attname = ANY (coalesce(exclude_columns, '{}'))
                         AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum);
    -- Events show the captured rows: a pgaudit_admin member must be allowed to read them.
    IF NOT pg_catalog.pg_has_role(caller, (SELECT relowner FROM pg_catalog.pg_class WHERE oid = tbl), 'USAGE') THEN
        SELECT a.attname INTO unknown FROM pg_catalog.pg_attribute a
         WHERE a.attrelid = tbl AND a.attnum > 0 AND NOT a.attisdropped AND a.attnum <> ALL (excluded_attnums)
           AND NOT pg_catalog.has_column_privilege(caller, tbl, a.attnum, 'SELECT')
         ORDER BY a.attnum LIMIT 1;
        IF unknown IS NOT NULL THEN
            RAISE EXCEPTION 'permission denied to track table %', tbl
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = pg_catalog.format('Its events would show column "%s", which you may not read.', unknown),
                      HINT = 'Tracking needs SELECT on every captured column (or ownership of the table); exclude the others.';
        END IF;
        -- Events show every row, whatever the policies: row-level security that applies
        -- to the caller (on the table or a partition) would be bypassed.
        IF EXISTS (SELECT FROM pg_catalog.pg_class c
                    WHERE c.oid IN (SELECT tbl::oid UNION SELECT p.relid FROM pg_catalog.pg_partition_tree(tbl) p)
                      AND c.relrowsecurity)
           AND NOT (SELECT r.rolbypassrls FROM pg_catalog.pg_roles r WHERE r.oid = caller) THEN
            RAISE EXCEPTION 'permission denied to track table %', tbl
                USING ERRCODE = 'insufficient_privilege',
                      DETAIL = 'Row-level security on it hides rows from you, and its events would show every row.',
                      HINT = 'Its owner or a role with BYPASSRLS may track it.';
        END IF;
    END IF;
    SELECT pgaudit_siem._shape(t.relid, t.category, t.exclude_attnums) INTO previous FROM pgaudit_siem.tracked t WHERE t.relid = tbl;
    INSERT INTO pgaudit_siem.tracked (relid, category, exclude_columns, tracked_by)
         VALUES (tbl, cat, pgaudit_siem._column_names(tbl, excluded_attnums), (SELECT rolname FROM pg_catalog.pg_roles WHERE oid = caller))
    ON CONFLICT (relid) DO UPDATE SET category = excluded.category, exclude_columns = excluded.exclude_columns,
                                      exclude_attnums = excluded.exclude_attnums,
                                      tracked_by = excluded.tracked_by, tracked_at = pg_catalog.now();
    -- The table itself, plus every partition below it (pg_partition_tree is empty for plain tables).
    FOR part IN SELECT tbl::oid UNION SELECT relid FROM pg_catalog.pg_partition_tree(tbl) LOOP
        PERFORM pgaudit_siem._install_triggers(part, cat, pgaudit_siem._partition_attnums(tbl, part, excluded_attnums));
    END LOOP;
    PERFORM pgaudit_siem._admin_event('pgaudit_siem', CASE WHEN previous IS NULL THEN 'track' ELSE 'retrack' END, tbl,
        (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = tbl),
        (SELECT relname FROM pg_catalog.pg_class WHERE oid = tbl),
        pgaudit_siem._shape(tbl, cat, excluded_attnums) || CASE WHEN previous IS NULL THEN '{}'::jsonb ELSE pg_catalog.jsonb_build_object('previous', previous) END);
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._untrack(caller oid, tbl regclass)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    part oid;
    cat text;
BEGIN
    PERFORM pgaudit_siem._check_may_track(caller, tbl);
    DELETE FROM pgaudit_siem.tracked WHERE relid = tbl RETURNING category INTO cat;
    IF cat IS NULL THEN
        RAISE EXCEPTION 'table % is not tracked', tbl USING ERRCODE = 'undefined_object';
    END IF;
    -- The table itself, plus every partition below it (pg_partition_tree is empty for plain tables).
    FOR part IN SELECT tbl::oid UNION SELECT relid FROM pg_catalog.pg_partition_tree(tbl) LOOP
        PERFORM pgaudit_siem._drop_triggers(part);
    END LOOP;
    PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'untrack', tbl,
        (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = tbl),
        (SELECT relname FROM pg_catalog.pg_class WHERE oid = tbl),
        pg_catalog.jsonb_build_object('category', cat));
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem.track(tbl regclass, category text DEFAULT NULL, exclude_columns text[] DEFAULT '{}')
    RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$
    SELECT pgaudit_siem._track(pgaudit_siem._invoking_role(), tbl, category, exclude_columns)
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem.untrack(tbl regclass)
    RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$
    SELECT pgaudit_siem._untrack(pgaudit_siem._invoking_role(), tbl)
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._sync_partitions() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    cmd record;
    part record;
    root record;
    t record;
BEGIN
    FOR cmd IN SELECT DISTINCT objid, command_tag FROM pg_catalog.pg_event_trigger_ddl_commands()
                WHERE classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND object_type IN ('table', 'table column') LOOP
        -- New partitions of a tracked table get its capture triggers: CREATE TABLE ...
        -- PARTITION OF names the partition, ALTER TABLE ... ATTACH PARTITION names the
        -- parent, so look at the whole tree below the object (an attached table may be
        -- partitioned itself). The tree is read from pg_inherits, not pg_partition_tree,
        -- which locks every partition: holding the parent's lock from the command, that
        -- inverts PostgreSQL's own partition-then-parent order and deadlocks a parallel
        -- pg_restore (one job adding the parent's key while another loads a partition).
        FOR part IN WITH RECURSIVE tree(relid) AS (
                        SELECT cmd.objid
                        UNION
                        SELECT i.inhrelid FROM pg_catalog.pg_inherits i
                          JOIN tree ON i.inhparent = tree.relid
                          JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid AND c.relispartition)
                    SELECT tree.relid FROM tree LOOP
            FOR root IN SELECT tr.relid, tr.category, tr.exclude_attnums FROM pgaudit_siem.tracked tr
                         WHERE tr.relid IN (SELECT relid FROM pg_catalog.pg_partition_ancestors(part.relid) WHERE relid <> part.relid) LOOP
                -- A root without its own triggers is being restored (pg_dump creates the
                -- triggers after the constraints, whose ALTER TABLE lands here): the dump
                -- brings the partition's triggers too.
                -- An ALTER of the partition itself (a restore adding its constraints) attaches
                -- nothing to it: only CREATE TABLE ... PARTITION OF, and ATTACH on a parent.
                IF (cmd.command_tag = 'CREATE TABLE' OR part.relid <> cmd.objid)
                   AND NOT EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = part.relid AND tgname = 'pgaudit_siem_capture_insert')
                   AND EXISTS (SELECT FROM pg_catalog.pg_trigger WHERE tgrelid = root.relid AND tgname = 'pgaudit_siem_capture_insert') THEN
                    PERFORM pgaudit_siem._install_triggers(part.relid, root.category,
                                                           pgaudit_siem._partition_attnums(root.relid, part.relid, root.exclude_attnums));
                    PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'track_partition', part.relid,
                        (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = part.relid),
                        (SELECT relname FROM pg_catalog.pg_class WHERE oid = part.relid),
                        pg_catalog.jsonb_build_object('reason', 'a new partition of a tracked table',
                                                      'root', pg_catalog.format('%s', root.relid::pg_catalog.regclass)));
                END IF;
            END LOOP;
        END LOOP;
        -- A tracked table changed shape (columns added, renamed, dropped, retyped, the table
        -- renamed or rewritten): the SIEM sees what its events contain from now on.
        SELECT tr.relid, tr.category, tr.exclude_attnums INTO t FROM pgaudit_siem.tracked tr WHERE tr.relid = cmd.objid;
        IF FOUND AND cmd.command_tag LIKE 'ALTER %' THEN
            PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'alter_table', t.relid,
                (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = t.relid),
                (SELECT relname FROM pg_catalog.pg_class WHERE oid = t.relid),
                pgaudit_siem._shape(t.relid, t.category, t.exclude_attnums));
        END IF;
        -- A partition detached from a tracked table is no longer tracked: its capture
        -- triggers go (they would refuse its writes), and the SIEM is told.
        IF cmd.command_tag = 'ALTER TABLE' THEN
            FOR t IN SELECT DISTINCT tg.tgrelid AS relid FROM pg_catalog.pg_trigger tg
                      WHERE tg.tgname = 'pgaudit_siem_capture_insert'
                        AND NOT EXISTS (SELECT FROM pgaudit_siem.tracked tr
                                         WHERE tr.relid = tg.tgrelid
                                            OR tr.relid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tg.tgrelid) a)) LOOP
                PERFORM pgaudit_siem._drop_triggers(t.relid);
                PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'untrack_partition', t.relid,
                    (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = t.relid),
                    (SELECT relname FROM pg_catalog.pg_class WHERE oid = t.relid),
                    pg_catalog.jsonb_build_object('reason', 'no longer a partition of a tracked table'));
            END LOOP;
        END IF;
    END LOOP;
    -- Renamed or dropped excluded columns (through any command, on the table or an
    -- ancestor): the names, which a dump keeps, follow the attribute numbers.
    UPDATE pgaudit_siem.tracked tr SET exclude_columns = pgaudit_siem._column_names(tr.relid, tr.exclude_attnums)
     WHERE tr.exclude_columns IS DISTINCT FROM pgaudit_siem._column_names(tr.relid, tr.exclude_attnums);
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem._untrack_dropped() RETURNS void
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    obj record;
BEGIN
    FOR obj IN SELECT d.objid, d.schema_name, d.object_name, t.category
                 FROM pg_catalog.pg_event_trigger_dropped_objects() d
                 JOIN pgaudit_siem.tracked t ON t.relid = d.objid
                WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objsubid = 0 LOOP
        DELETE FROM pgaudit_siem.tracked WHERE relid = obj.objid;
        PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'drop_table', obj.objid, obj.schema_name, obj.object_name,
                                          pg_catalog.jsonb_build_object('category', obj.category));
    END LOOP;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._sync_partitions(), pgaudit_siem._untrack_dropped() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem._on_ddl_command_end() RETURNS event_trigger
    LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'pgaudit_siem_on_ddl_command_end';

CREATE OR REPLACE FUNCTION pgaudit_siem._on_sql_drop() RETURNS event_trigger
    LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'pgaudit_siem_on_sql_drop';

REVOKE ALL ON FUNCTION pgaudit_siem._on_ddl_command_end(), pgaudit_siem._on_sql_drop() FROM PUBLIC;

REVOKE ALL ON FUNCTION pgaudit_siem._check_may_track(oid, oid), pgaudit_siem._caller_is_attested(oid),
    pgaudit_siem._acts_as_admin(oid) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem.track(regclass, text, text[]), pgaudit_siem.untrack(regclass),
    pgaudit_siem._track(oid, regclass, text, text[]), pgaudit_siem._untrack(oid, regclass),
    pgaudit_siem._invoking_role() TO PUBLIC;

REVOKE ALL ON pgaudit_siem.delivery_state FROM PUBLIC;

CREATE OR REPLACE VIEW pgaudit_siem.events AS
    SELECT o.id, o.created_at, o.category, o.action, o.schema_name, o.table_name, o.row_count,
           o.part, o.part_count, o.xid, (o.xid, o.seq) <= (s.last_xid, s.last_seq) AS delivered, o.payload
      FROM pgaudit_siem.outbox o CROSS JOIN pgaudit_siem.delivery_state s;

REVOKE ALL ON pgaudit_siem.events FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.events TO pgaudit_admin;

CREATE OR REPLACE FUNCTION pgaudit_siem._purge_delivered()
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    WITH gone AS (
        DELETE FROM pgaudit_siem.outbox o USING pgaudit_siem.delivery_state s
         WHERE o.created_at < pg_catalog.now() - pg_catalog.current_setting('pgaudit_siem.retention')::interval
           AND (o.xid, o.seq) <= (s.last_xid, s.last_seq)
        RETURNING 1)
    SELECT count(*) FROM gone
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._purge_delivered() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem.purge_expired()
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    horizon timestamptz := pg_catalog.now() - pg_catalog.current_setting('pgaudit_siem.retention')::interval;
    removed bigint;
    stuck bigint;
BEGIN
    removed := pgaudit_siem._purge_delivered();
    SELECT count(*) INTO stuck FROM pgaudit_siem.outbox o, pgaudit_siem.delivery_state s
     WHERE o.created_at < horizon AND (o.xid, o.seq) > (s.last_xid, s.last_seq);
    IF stuck > 0 THEN
        RAISE WARNING 'pgaudit_siem: % undelivered events are older than pgaudit_siem.retention and are kept', stuck
            USING HINT = 'Check SIEM delivery (pgaudit_siem.stats); events are only removed after delivery.';
    END IF;
    RETURN removed;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem.purge_expired() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem.purge_expired() TO pgaudit_admin;

CREATE OR REPLACE FUNCTION pgaudit_siem.discard_undelivered()
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    n bigint;
BEGIN
    DELETE FROM pgaudit_siem.outbox o USING pgaudit_siem.delivery_state s WHERE (o.xid, o.seq) > (s.last_xid, s.last_seq);
    GET DIAGNOSTICS n = ROW_COUNT;
    RAISE LOG 'pgaudit_siem: % undelivered events discarded by %', n, session_user;
    RETURN n;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem.discard_undelivered() FROM PUBLIC;

REVOKE ALL ON pgaudit_siem.siem_config, pgaudit_siem.dead_letter FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.dead_letter TO pgaudit_admin;

SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.siem_config', '');

SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.delivery_state', '');

SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.dead_letter', 'WHERE true ORDER BY xid, seq');

CREATE OR REPLACE FUNCTION pgaudit_siem._restore_siem_config() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF NOT EXISTS (SELECT FROM pgaudit_siem.siem_config) THEN
        RETURN NEW;
    END IF;
    UPDATE pgaudit_siem.siem_config c
       SET enabled = NEW.enabled, url = NEW.url, headers = NEW.headers, categories = NEW.categories,
           format = NEW.format, version = greatest(c.version, NEW.version) + 1,
           updated_at = NEW.updated_at, updated_by = NEW.updated_by;
    RETURN NULL;
END
$f$;

CREATE TRIGGER restore_siem_config BEFORE INSERT ON pgaudit_siem.siem_config
    FOR EACH ROW EXECUTE FUNCTION pgaudit_siem._restore_siem_config();

CREATE OR REPLACE FUNCTION pgaudit_siem._restore_delivery_state() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    IF NOT EXISTS (SELECT FROM pgaudit_siem.delivery_state) THEN
        NEW.last_xid := '0';
        NEW.last_seq := 0;
        RETURN NEW;
    END IF;
    UPDATE pgaudit_siem.delivery_state s
       SET chain_hash = CASE WHEN s.delivered = 0 AND s.dead_lettered = 0 THEN NEW.chain_hash ELSE s.chain_hash END,
           delivered = s.delivered + NEW.delivered, retried = s.retried + NEW.retried,
           dead_lettered = s.dead_lettered + NEW.dead_lettered, batches = s.batches + NEW.batches,
           last_success = coalesce(s.last_success, NEW.last_success);
    RETURN NULL;
END
$f$;

CREATE TRIGGER restore_delivery_state BEFORE INSERT ON pgaudit_siem.delivery_state
    FOR EACH ROW EXECUTE FUNCTION pgaudit_siem._restore_delivery_state();

CREATE OR REPLACE FUNCTION pgaudit_siem._restore_outbox_event() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    NEW.xid := pgaudit_siem._outbox_key();
    NEW.seq := pg_catalog.nextval('pgaudit_siem.outbox_seq_seq');
    RETURN NEW;
END
$f$;

CREATE TRIGGER restore_outbox_event BEFORE INSERT ON pgaudit_siem.outbox
    FOR EACH ROW WHEN (NOT pgaudit_siem._inserted_by_extension())
    EXECUTE FUNCTION pgaudit_siem._restore_outbox_event();

CREATE OR REPLACE FUNCTION pgaudit_siem._restore_dead_letter() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    NEW.xid := '0';
    NEW.seq := pg_catalog.nextval('pgaudit_siem.outbox_seq_seq');
    RETURN NEW;
END
$f$;

CREATE TRIGGER restore_dead_letter BEFORE INSERT ON pgaudit_siem.dead_letter
    FOR EACH ROW WHEN (NOT pgaudit_siem._inserted_by_extension())
    EXECUTE FUNCTION pgaudit_siem._restore_dead_letter();

ALTER TABLE pgaudit_siem.siem_config ENABLE ALWAYS TRIGGER restore_siem_config;

ALTER TABLE pgaudit_siem.delivery_state ENABLE ALWAYS TRIGGER restore_delivery_state;

ALTER TABLE pgaudit_siem.outbox ENABLE ALWAYS TRIGGER restore_outbox_event;

ALTER TABLE pgaudit_siem.dead_letter ENABLE ALWAYS TRIGGER restore_dead_letter;

REVOKE ALL ON FUNCTION pgaudit_siem._restore_siem_config(), pgaudit_siem._restore_delivery_state(),
    pgaudit_siem._restore_outbox_event(), pgaudit_siem._restore_dead_letter(),
    pgaudit_siem._inserted_by_extension() FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem._settings_image(c pgaudit_siem.siem_config) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT jsonb_build_object(
        'siem_integration_enabled', c.enabled,
        'siem_integration_url', c.url,
        'headers', coalesce((SELECT jsonb_object_agg(key, '********') FROM jsonb_each(c.headers)), '{}'::jsonb),
        'categories', to_jsonb(c.categories),
        'format', c.format)
$f$;

CREATE OR REPLACE VIEW pgaudit_siem.settings AS
    SELECT c.enabled, c.url,
           coalesce((SELECT pg_catalog.jsonb_object_agg(key, '********') FROM pg_catalog.jsonb_each(c.headers)), '{}'::jsonb) AS headers,
           c.categories, c.format, c.updated_at, c.updated_by
      FROM pgaudit_siem.siem_config c;

REVOKE ALL ON pgaudit_siem.settings FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.settings TO pgaudit_admin;

CREATE OR REPLACE FUNCTION pgaudit_siem._change_settings(p_enabled boolean, p_url text, p_headers jsonb, p_categories text[], p_format text, p_set_endpoint boolean)
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = '' AS $f$
DECLARE
    before jsonb;
    after jsonb;
BEGIN
    SELECT pgaudit_siem._settings_image(c) INTO before FROM pgaudit_siem.siem_config c FOR UPDATE;
    IF p_set_endpoint THEN
        UPDATE pgaudit_siem.siem_config
           SET url = p_url, headers = p_headers, categories = p_categories, format = p_format;
    END IF;
    IF p_enabled IS NOT NULL THEN
        IF p_enabled AND (SELECT url FROM pgaudit_siem.siem_config) IS NULL THEN
            RAISE EXCEPTION 'no SIEM endpoint is configured' USING ERRCODE = 'object_not_in_prerequisite_state',
                HINT = 'Call pgaudit_siem.configure(url, headers, categories, format) first.';
        END IF;
        UPDATE pgaudit_siem.siem_config SET enabled = p_enabled;
    END IF;
    UPDATE pgaudit_siem.siem_config SET version = version + 1, updated_at = pg_catalog.now(), updated_by = session_user
    RETURNING pgaudit_siem._settings_image(siem_config) INTO after;
    PERFORM pgaudit_siem._admin_event('siem_settings', 'update', NULL, 'pgaudit_siem', 'siem_config', NULL, before, after);
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem._change_settings(boolean, text, jsonb, text[], text, boolean) FROM PUBLIC;

CREATE OR REPLACE FUNCTION pgaudit_siem.configure(url text, headers jsonb DEFAULT '{}', categories text[] DEFAULT NULL, format text DEFAULT 'json')
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = '' AS $f$
BEGIN
    PERFORM pgaudit_siem._validate_siem_config(configure.url, configure.headers, configure.categories, configure.format);
    PERFORM pgaudit_siem._change_settings(NULL, configure.url, coalesce(configure.headers, '{}'), configure.categories, configure.format, true);
END
$f$;

CREATE OR REPLACE FUNCTION pgaudit_siem.enable() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = ''
    AS $f$ SELECT pgaudit_siem._change_settings(true, NULL, NULL, NULL, NULL, false) $f$;

CREATE OR REPLACE FUNCTION pgaudit_siem.disable() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = ''
    AS $f$ SELECT pgaudit_siem._change_settings(false, NULL, NULL, NULL, NULL, false) $f$;

CREATE OR REPLACE FUNCTION pgaudit_siem.test_connection(url text DEFAULT NULL, headers jsonb DEFAULT NULL,
        OUT ok boolean, OUT http_status int, OUT latency_ms double precision, OUT error text)
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = '' AS $f$
DECLARE
    c pgaudit_siem.siem_config;
    target text;
BEGIN
    SELECT * INTO c FROM pgaudit_siem.siem_config;
    target := coalesce(test_connection.url, c.url);
    IF target IS NULL THEN
        RAISE EXCEPTION 'no SIEM endpoint is configured' USING ERRCODE = 'object_not_in_prerequisite_state',
            HINT = 'Pass a URL, or call pgaudit_siem.configure() first.';
    END IF;
    SELECT t.ok, t.http_status, t.latency_ms, t.error INTO ok, http_status, latency_ms, error
      FROM pgaudit_siem._send_test_event(target,
               coalesce(test_connection.headers,
                        CASE WHEN test_connection.url IS NULL OR test_connection.url = c.url THEN c.headers ELSE '{}'::jsonb END),
               c.format) t;
END
$f$;

CREATE OR REPLACE VIEW pgaudit_siem.stats AS
    SELECT c.enabled,
           c.format,
           (SELECT count(*) FROM pgaudit_siem.outbox o WHERE (o.xid, o.seq) > (s.last_xid, s.last_seq)) AS queued,
           s.delivered,
           s.retried,
           s.dead_lettered,
           (SELECT count(*) FROM pgaudit_siem.dead_letter) AS in_dead_letter,
           s.last_success,
           s.last_error,
           s.last_error_at,
           s.last_http_status,
           pg_catalog.make_interval(secs => s.current_backoff_ms / 1000.0) AS current_backoff,
           CASE WHEN s.batches > 0 THEN round(s.delivered::numeric / s.batches, 1) END AS avg_batch_size,
           round(s.events_per_second::numeric, 1) AS events_per_second,
           pgaudit_siem._worker_pid() AS worker_pid
      FROM pgaudit_siem.delivery_state s CROSS JOIN pgaudit_siem.siem_config c;

REVOKE ALL ON pgaudit_siem.stats FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.stats TO pgaudit_admin;

REVOKE ALL ON FUNCTION pgaudit_siem._worker_pid() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem._worker_pid() TO pgaudit_admin;

CREATE OR REPLACE FUNCTION pgaudit_siem.requeue_dead_letter(ids uuid[] DEFAULT NULL)
    RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
DECLARE
    n bigint;
BEGIN
    WITH moved AS (
        DELETE FROM pgaudit_siem.dead_letter d WHERE requeue_dead_letter.ids IS NULL OR d.id = ANY (requeue_dead_letter.ids)
        RETURNING d.*)
    INSERT INTO pgaudit_siem.outbox (id, created_at, category, action, relid, schema_name, table_name, row_count, part, part_count, payload)
    SELECT m.id, m.created_at, m.category, m.action, m.relid, m.schema_name, m.table_name, m.row_count, m.part, m.part_count, m.payload
      FROM moved m ORDER BY m.xid, m.seq;
    GET DIAGNOSTICS n = ROW_COUNT;
    PERFORM pgaudit_siem._wake_delivery_at_commit();
    RAISE LOG 'pgaudit_siem: % dead-lettered events requeued by %', n, session_user;
    RETURN n;
END
$f$;

REVOKE ALL ON FUNCTION pgaudit_siem.configure(text, jsonb, text[], text), pgaudit_siem.enable(), pgaudit_siem.disable(),
    pgaudit_siem.test_connection(text, jsonb), pgaudit_siem.requeue_dead_letter(uuid[]) FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem.configure(text, jsonb, text[], text), pgaudit_siem.enable(), pgaudit_siem.disable(),
    pgaudit_siem.test_connection(text, jsonb), pgaudit_siem.requeue_dead_letter(uuid[]) TO pgaudit_admin;

REVOKE ALL ON FUNCTION pgaudit_siem._send_test_event(text, jsonb, text), pgaudit_siem._validate_siem_config(text, jsonb, text[], text),
    pgaudit_siem._settings_image(pgaudit_siem.siem_config) FROM PUBLIC;

REVOKE ALL ON FUNCTION pgaudit_siem._start_delivery_at_commit(), pgaudit_siem._wake_delivery_at_commit() FROM PUBLIC;

SELECT pgaudit_siem._start_delivery_at_commit();

CREATE OR REPLACE VIEW pgaudit_siem.session_audit_stats AS
    SELECT * FROM pgaudit_siem._session_audit_stats();

REVOKE ALL ON pgaudit_siem.session_audit_stats FROM PUBLIC;

GRANT SELECT ON pgaudit_siem.session_audit_stats TO pgaudit_admin;

REVOKE ALL ON FUNCTION pgaudit_siem._session_audit_stats() FROM PUBLIC;

GRANT EXECUTE ON FUNCTION pgaudit_siem._session_audit_stats() TO pgaudit_admin;

CREATE OR REPLACE FUNCTION "version"() RETURNS TEXT /* & '_ str */
IMMUTABLE STRICT PARALLEL SAFE
LANGUAGE c /* Rust */
AS 'MODULE_PATHNAME', 'version_wrapper';

-- ==== Existing capture triggers take 0.2.0's arguments ====
-- (0.1.0's carried column names; 0.2.0 reads the exclusions from the registry either way.)
CREATE EVENT TRIGGER pgaudit_siem_ddl_command_end ON ddl_command_end
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION pgaudit_siem._on_ddl_command_end();

DO $do$
DECLARE
    t record;
    part oid;
BEGIN
    -- 0.1.0 left the capture triggers of detached partitions behind; 0.2.0 refuses writes
    -- through a trigger that matches no registration, so they go, and the SIEM is told.
    FOR t IN SELECT DISTINCT tg.tgrelid AS relid FROM pg_catalog.pg_trigger tg
              WHERE tg.tgname = 'pgaudit_siem_capture_insert'
                AND NOT EXISTS (SELECT FROM pgaudit_siem.tracked tr
                                 WHERE tr.relid = tg.tgrelid
                                    OR tr.relid IN (SELECT a.relid FROM pg_catalog.pg_partition_ancestors(tg.tgrelid) a)) LOOP
        PERFORM pgaudit_siem._drop_triggers(t.relid);
        PERFORM pgaudit_siem._admin_event('pgaudit_siem', 'untrack_partition', t.relid,
            (SELECT nspname FROM pg_catalog.pg_namespace n JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid WHERE c.oid = t.relid),
            (SELECT relname FROM pg_catalog.pg_class WHERE oid = t.relid),
            pg_catalog.jsonb_build_object('reason', 'no longer a partition of a tracked table'));
    END LOOP;
    FOR t IN SELECT relid, category, exclude_attnums FROM pgaudit_siem.tracked LOOP
        FOR part IN SELECT t.relid::oid UNION SELECT relid FROM pg_catalog.pg_partition_tree(t.relid) LOOP
            PERFORM pgaudit_siem._install_triggers(part, t.category, pgaudit_siem._partition_attnums(t.relid, part, t.exclude_attnums));
        END LOOP;
    END LOOP;
END
$do$;
