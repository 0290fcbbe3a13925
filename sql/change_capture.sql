-- Change capture: the tracked-table registry, the transactional outbox, track()/untrack(),
-- partition and DDL upkeep. Included by src/change_capture/mod.rs (extension_sql_file!).

-- Which tables are tracked. A dump carries the table by name (regclass) and the excluded
-- columns by name: OIDs and attribute numbers change in a restore.
CREATE TABLE pgaudit_siem.tracked (
    relid regclass PRIMARY KEY,
    category text NOT NULL,
    -- Excluded columns by name: what a dump keeps. Refreshed from exclude_attnums after
    -- every DDL command that can rename a column (_sync_partitions).
    exclude_columns text[] NOT NULL DEFAULT '{}',
    tracked_by name NOT NULL DEFAULT current_user,
    tracked_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- The same columns by attribute number: what the capture triggers exclude (they
    -- follow a renamed column, whatever command renamed it).
    exclude_attnums int2[] NOT NULL DEFAULT '{}'
);

-- A registration arriving by INSERT (track(), or a restore's COPY) takes its attribute
-- numbers from the names, which are the part a dump keeps.
CREATE FUNCTION pgaudit_siem._tracked_attnums_from_names() RETURNS trigger
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

-- The order key of the current transaction's events (src/events/order.rs): its id, or
-- the delivery horizon if that is later; registers the transaction as a writer of this
-- outbox. Not for PUBLIC: a registration holds delivery back until the transaction ends.
CREATE FUNCTION pgaudit_siem._outbox_key() RETURNS xid8
    LANGUAGE c VOLATILE PARALLEL UNSAFE AS 'MODULE_PATHNAME', 'pgaudit_siem_outbox_key';
REVOKE ALL ON FUNCTION pgaudit_siem._outbox_key() FROM PUBLIC;

-- The transactional outbox, in delivery order (xid, seq): `xid` is the order key above.
-- Events become deliverable once their key is below the key of every writer still in
-- progress in this database, so the delivery cursor never passes an event that could
-- still commit, and transactions that write no events hold nothing back.
CREATE TABLE pgaudit_siem.outbox (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    id uuid NOT NULL,
    created_at timestamptz NOT NULL,
    xid xid8 NOT NULL DEFAULT pgaudit_siem._outbox_key(),
    category text NOT NULL,
    action text NOT NULL,
    relid oid,
    schema_name text,
    table_name text,
    row_count bigint,
    part int NOT NULL DEFAULT 1,
    part_count int NOT NULL DEFAULT 1,
    payload json NOT NULL,
    PRIMARY KEY (xid, seq)
);
ALTER TABLE pgaudit_siem.outbox ALTER COLUMN payload SET COMPRESSION lz4;
-- One btree (xid, seq) and a BRIN (created_at, which follows seq) keep the per-event cost
-- of writers low; ids are unique by construction (UUIDv7 with a per-backend counter).
CREATE INDEX outbox_created ON pgaudit_siem.outbox USING brin (created_at);

REVOKE ALL ON pgaudit_siem.tracked, pgaudit_siem.outbox FROM PUBLIC;

-- pg_dump keeps the registry and the undelivered events, in delivery order, which a
-- restore re-keys in (sql/delivery.sql, _restore_outbox_event). Delivered events stay
-- with the source: a restored copy must not send them again. (pg_dump reads the filter
-- in the dump's one snapshot, with search_path empty.)
SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.tracked', '');
SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.outbox',
    'WHERE (xid, seq) > (SELECT s.last_xid, s.last_seq FROM pgaudit_siem.delivery_state s) ORDER BY xid, seq');
GRANT USAGE ON SCHEMA pgaudit_siem TO PUBLIC;


CREATE FUNCTION pgaudit_siem.capture_changes() RETURNS trigger
    LANGUAGE c AS 'MODULE_PATHNAME', 'pgaudit_siem_capture_changes';
-- Only the capture triggers track() installs (as the extension owner) call it.
REVOKE ALL ON FUNCTION pgaudit_siem.capture_changes() FROM PUBLIC;

-- Names of columns of p_relid by attribute number, in column order.
CREATE FUNCTION pgaudit_siem._column_names(p_relid oid, p_attnums int2[]) RETURNS text[]
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT coalesce(array_agg(a.attname::text ORDER BY a.attnum), '{}')
      FROM pg_attribute a
     WHERE a.attrelid = p_relid AND a.attnum = ANY (p_attnums) AND NOT a.attisdropped
$f$;

-- The attribute numbers in p_part of the columns p_root_attnums name in p_root
-- (partitions may order their columns differently).
CREATE FUNCTION pgaudit_siem._partition_attnums(p_root oid, p_part oid, p_root_attnums int2[]) RETURNS int2[]
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT coalesce(array_agg(p.attnum ORDER BY p.attnum), '{}')
      FROM pg_attribute r JOIN pg_attribute p ON p.attrelid = p_part AND p.attname = r.attname AND NOT p.attisdropped
     WHERE r.attrelid = p_root AND r.attnum = ANY (p_root_attnums)
$f$;

-- What a tracked table's events contain now: for track and alter_table events.
CREATE FUNCTION pgaudit_siem._shape(p_relid oid, p_category text, p_attnums int2[]) RETURNS jsonb
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

CREATE VIEW pgaudit_siem.tracked_tables AS
    SELECT t.relid::pg_catalog.regclass AS table_name, t.category,
           t.exclude_columns, t.tracked_by, t.tracked_at
      FROM pgaudit_siem.tracked t;
REVOKE ALL ON pgaudit_siem.tracked_tables FROM PUBLIC;
GRANT SELECT ON pgaudit_siem.tracked_tables TO pgaudit_admin;

-- Records an administrative event (untrack, dropped table) in the outbox.
-- With p_before/p_after it records one changed settings row, like the document's example.
CREATE FUNCTION pgaudit_siem._admin_event(p_category text, p_action text, p_relid oid, p_schema text, p_table text, p_detail jsonb,
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

-- Installs (or refreshes) the capture triggers on one table.
-- Trigger arguments: the category, then the excluded columns' attribute numbers.
CREATE FUNCTION pgaudit_siem._install_triggers(p_relid oid, p_category text, p_exclude int2[])
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

CREATE FUNCTION pgaudit_siem._drop_triggers(p_relid oid)
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

-- Refuses unless p_caller (attested by _invoking_role()) owns the table or is a
-- pgaudit_admin member.
CREATE FUNCTION pgaudit_siem._check_may_track(caller oid, p_relid oid)
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

CREATE FUNCTION pgaudit_siem._track(caller oid, tbl regclass, category text, exclude_columns text[])
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

CREATE FUNCTION pgaudit_siem._untrack(caller oid, tbl regclass)
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

-- track() and untrack() run as their caller (SECURITY INVOKER) only to attest who that
-- is: pgaudit_siem._invoking_role() records the current user where they were called
-- (inside another SECURITY DEFINER function, that function's owner, never the session's
-- outer role), and the SECURITY DEFINER bodies accept only the recorded role.
CREATE FUNCTION pgaudit_siem.track(tbl regclass, category text DEFAULT NULL, exclude_columns text[] DEFAULT '{}')
    RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$
    SELECT pgaudit_siem._track(pgaudit_siem._invoking_role(), tbl, category, exclude_columns)
$f$;
CREATE FUNCTION pgaudit_siem.untrack(tbl regclass)
    RETURNS void LANGUAGE sql SET search_path = pg_catalog, pg_temp AS $f$
    SELECT pgaudit_siem._untrack(pgaudit_siem._invoking_role(), tbl)
$f$;

-- New partitions of tracked tables get the capture triggers; dropped tracked tables
-- leave the tracked list with an audit event. The event triggers are C functions that
-- run these bodies as internal (never audit-logged) statements, as pgAudit does for its
-- own event-trigger queries.
CREATE FUNCTION pgaudit_siem._sync_partitions() RETURNS void
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

CREATE FUNCTION pgaudit_siem._untrack_dropped() RETURNS void
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
CREATE FUNCTION pgaudit_siem._on_ddl_command_end() RETURNS event_trigger
    LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'pgaudit_siem_on_ddl_command_end';
CREATE FUNCTION pgaudit_siem._on_sql_drop() RETURNS event_trigger
    LANGUAGE c SECURITY DEFINER SET search_path = pg_catalog, pg_temp
    AS 'MODULE_PATHNAME', 'pgaudit_siem_on_sql_drop';
REVOKE ALL ON FUNCTION pgaudit_siem._on_ddl_command_end(), pgaudit_siem._on_sql_drop() FROM PUBLIC;
CREATE EVENT TRIGGER pgaudit_siem_ddl_command_end ON ddl_command_end
    -- ALTER VIEW / MATERIALIZED VIEW / FOREIGN TABLE ... RENAME COLUMN and ALTER TYPE ...
    -- RENAME ATTRIBUTE also rename a table's columns.
    WHEN TAG IN ('CREATE TABLE', 'ALTER TABLE', 'ALTER VIEW', 'ALTER MATERIALIZED VIEW', 'ALTER FOREIGN TABLE', 'ALTER TYPE')
    EXECUTE FUNCTION pgaudit_siem._on_ddl_command_end();
CREATE EVENT TRIGGER pgaudit_siem_sql_drop ON sql_drop
    WHEN TAG IN ('DROP TABLE', 'DROP SCHEMA', 'DROP OWNED') EXECUTE FUNCTION pgaudit_siem._on_sql_drop();

REVOKE ALL ON FUNCTION pgaudit_siem._check_may_track(oid, oid), pgaudit_siem._caller_is_attested(oid),
    pgaudit_siem._acts_as_admin(oid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION pgaudit_siem.track(regclass, text, text[]), pgaudit_siem.untrack(regclass),
    pgaudit_siem._track(oid, regclass, text, text[]), pgaudit_siem._untrack(oid, regclass),
    pgaudit_siem._invoking_role() TO PUBLIC;
