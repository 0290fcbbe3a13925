-- SIEM delivery: the cursor, the endpoint configuration, dead letters, statistics and the
-- admin API. Included by src/delivery/mod.rs. The worker's own queries are in sql/queries/.

-- ==== The delivery cursor and the outbox as delivery sees it ====
-- The delivery cursor: every event up to (last_xid, last_seq) was delivered or
-- dead-lettered. One row, written by the delivery worker; counters feed `stats`.
CREATE TABLE pgaudit_siem.delivery_state (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    last_xid xid8 NOT NULL DEFAULT '0',
    last_seq bigint NOT NULL DEFAULT 0,
    delivered bigint NOT NULL DEFAULT 0,
    retried bigint NOT NULL DEFAULT 0,
    dead_lettered bigint NOT NULL DEFAULT 0,
    batches bigint NOT NULL DEFAULT 0,
    last_success timestamptz,
    last_error text,
    last_error_at timestamptz,
    last_http_status int,
    current_backoff_ms bigint NOT NULL DEFAULT 0,
    events_per_second double precision NOT NULL DEFAULT 0,
    worker_pid int,
    -- The hash chain (src/events/chain.rs) after the last delivered event.
    chain_hash text NOT NULL DEFAULT '0000000000000000000000000000000000000000000000000000000000000000'
);
INSERT INTO pgaudit_siem.delivery_state DEFAULT VALUES;

REVOKE ALL ON pgaudit_siem.delivery_state FROM PUBLIC;

CREATE VIEW pgaudit_siem.events AS
    SELECT o.id, o.created_at, o.category, o.action, o.schema_name, o.table_name, o.row_count,
           o.part, o.part_count, o.xid, (o.xid, o.seq) <= (s.last_xid, s.last_seq) AS delivered, o.payload
      FROM pgaudit_siem.outbox o CROSS JOIN pgaudit_siem.delivery_state s;

REVOKE ALL ON pgaudit_siem.events FROM PUBLIC;
GRANT SELECT ON pgaudit_siem.events TO pgaudit_admin;

-- Deletes delivered events older than pgaudit_siem.retention (the delivery worker calls
-- this every minute).
CREATE FUNCTION pgaudit_siem._purge_delivered()
    RETURNS bigint LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $f$
    WITH gone AS (
        DELETE FROM pgaudit_siem.outbox o USING pgaudit_siem.delivery_state s
         WHERE o.created_at < pg_catalog.now() - pg_catalog.current_setting('pgaudit_siem.retention')::interval
           AND (o.xid, o.seq) <= (s.last_xid, s.last_seq)
        RETURNING 1)
    SELECT count(*) FROM gone
$f$;
REVOKE ALL ON FUNCTION pgaudit_siem._purge_delivered() FROM PUBLIC;

-- Retention: delivered events older than pgaudit_siem.retention are deleted; older
-- undelivered events are kept and reported, never removed silently.
CREATE FUNCTION pgaudit_siem.purge_expired()
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

-- Explicit, audited discard of undelivered events (DROP EXTENSION refuses while any exist).
CREATE FUNCTION pgaudit_siem.discard_undelivered()
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

-- ==== The endpoint ====
-- The SIEM endpoint. One row; readable only by the extension owner (headers hold tokens).
CREATE TABLE pgaudit_siem.siem_config (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    enabled boolean NOT NULL DEFAULT false,
    url text,
    headers jsonb NOT NULL DEFAULT '{}',
    categories text[],
    format text NOT NULL DEFAULT 'json',
    version bigint NOT NULL DEFAULT 0,
    updated_at timestamptz,
    updated_by name
);
INSERT INTO pgaudit_siem.siem_config DEFAULT VALUES;

-- Events the SIEM refused (4xx other than 408/429), with what it said.
CREATE TABLE pgaudit_siem.dead_letter (
    id uuid NOT NULL,
    seq bigint PRIMARY KEY,
    xid xid8 NOT NULL,
    created_at timestamptz NOT NULL,
    category text NOT NULL,
    action text NOT NULL,
    relid oid,
    schema_name text,
    table_name text,
    row_count bigint,
    part int NOT NULL,
    part_count int NOT NULL,
    payload json NOT NULL,
    http_status int,
    response_excerpt text,
    attempts int NOT NULL,
    dead_lettered_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp()
);
REVOKE ALL ON pgaudit_siem.siem_config, pgaudit_siem.dead_letter FROM PUBLIC;
GRANT SELECT ON pgaudit_siem.dead_letter TO pgaudit_admin;

-- ==== Dump and restore ====
-- pg_dump keeps the configuration, the delivery counters, the dead letters and
-- (change_capture.sql) the registry and the undelivered events. A restore COPYs them into
-- the rows this script made, in a database whose order keys say nothing of the old ones:
-- the triggers below merge the singletons and re-key every restored event with the
-- restoring transaction's key and a new number in dump order (the delivery order), so
-- delivery resumes with every event that was not acknowledged, in the old order, after
-- this database's own. What the extension inserts itself (_inserted_by_extension()) is
-- left alone. The triggers fire in replica mode too (tools that copy with
-- session_replication_role = replica).
SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.siem_config', '');
SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.delivery_state', '');
SELECT pg_catalog.pg_extension_config_dump('pgaudit_siem.dead_letter', 'WHERE true ORDER BY xid, seq');

-- The restored configuration replaces the fresh one (the workers reload on `version`).
CREATE FUNCTION pgaudit_siem._restore_siem_config() RETURNS trigger
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

-- The dumped cursor is of the old keys and is dropped (the dump holds only events after
-- it); counters add up, and the hash chain continues from the dump's if this database
-- has delivered nothing yet.
CREATE FUNCTION pgaudit_siem._restore_delivery_state() RETURNS trigger
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

-- A restored event: this transaction's key (delivered after it commits, after every
-- event of this database it may already hold) and a new number in arrival order.
CREATE FUNCTION pgaudit_siem._restore_outbox_event() RETURNS trigger
    LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $f$
BEGIN
    NEW.xid := pgaudit_siem._outbox_key();
    NEW.seq := pg_catalog.nextval('pgaudit_siem.outbox_seq_seq');
    RETURN NEW;
END
$f$;
-- The condition costs the writers one function call per event.
CREATE TRIGGER restore_outbox_event BEFORE INSERT ON pgaudit_siem.outbox
    FOR EACH ROW WHEN (NOT pgaudit_siem._inserted_by_extension())
    EXECUTE FUNCTION pgaudit_siem._restore_outbox_event();

-- A restored dead letter gets key 0 (no transaction's) and a new number, so it never
-- collides with an event of this database dead-lettered later.
CREATE FUNCTION pgaudit_siem._restore_dead_letter() RETURNS trigger
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

-- Settings as shown to admins and recorded in siem_settings events: header values masked.
CREATE FUNCTION pgaudit_siem._settings_image(c pgaudit_siem.siem_config) RETURNS jsonb
    LANGUAGE sql STABLE SET search_path = pg_catalog, pg_temp AS $f$
    SELECT jsonb_build_object(
        'siem_integration_enabled', c.enabled,
        'siem_integration_url', c.url,
        'headers', coalesce((SELECT jsonb_object_agg(key, '********') FROM jsonb_each(c.headers)), '{}'::jsonb),
        'categories', to_jsonb(c.categories),
        'format', c.format)
$f$;

CREATE VIEW pgaudit_siem.settings AS
    SELECT c.enabled, c.url,
           coalesce((SELECT pg_catalog.jsonb_object_agg(key, '********') FROM pg_catalog.jsonb_each(c.headers)), '{}'::jsonb) AS headers,
           c.categories, c.format, c.updated_at, c.updated_by
      FROM pgaudit_siem.siem_config c;
REVOKE ALL ON pgaudit_siem.settings FROM PUBLIC;
GRANT SELECT ON pgaudit_siem.settings TO pgaudit_admin;

-- Applies a change to siem_config and records it as a siem_settings audit event.
CREATE FUNCTION pgaudit_siem._change_settings(p_enabled boolean, p_url text, p_headers jsonb, p_categories text[], p_format text, p_set_endpoint boolean)
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

CREATE FUNCTION pgaudit_siem.configure(url text, headers jsonb DEFAULT '{}', categories text[] DEFAULT NULL, format text DEFAULT 'json')
    RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = '' AS $f$
BEGIN
    PERFORM pgaudit_siem._validate_siem_config(configure.url, configure.headers, configure.categories, configure.format);
    PERFORM pgaudit_siem._change_settings(NULL, configure.url, coalesce(configure.headers, '{}'), configure.categories, configure.format, true);
END
$f$;

CREATE FUNCTION pgaudit_siem.enable() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = ''
    AS $f$ SELECT pgaudit_siem._change_settings(true, NULL, NULL, NULL, NULL, false) $f$;
CREATE FUNCTION pgaudit_siem.disable() RETURNS void
    LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp SET pgaudit.log = 'none' SET pgaudit.role = ''
    AS $f$ SELECT pgaudit_siem._change_settings(false, NULL, NULL, NULL, NULL, false) $f$;

-- The SQL API's own statements carry header values as parameters: they are never
-- session-audit-logged (SET pgaudit.log = 'none' for the call); the call itself is logged
-- with its arguments redacted, and every change is a siem_settings event.

-- Sends a marked test event. Stored headers go only to the stored URL.
CREATE FUNCTION pgaudit_siem.test_connection(url text DEFAULT NULL, headers jsonb DEFAULT NULL,
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

CREATE VIEW pgaudit_siem.stats AS
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

-- Puts dead-lettered events back into the outbox (after the cursor; same ids).
CREATE FUNCTION pgaudit_siem.requeue_dead_letter(ids uuid[] DEFAULT NULL)
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

-- Wake-ups are for the extension's own functions: a user looping on them could keep the
-- worker or the launcher busy.
REVOKE ALL ON FUNCTION pgaudit_siem._start_delivery_at_commit(), pgaudit_siem._wake_delivery_at_commit() FROM PUBLIC;

-- The launcher starts this database's worker once the installing transaction commits.
SELECT pgaudit_siem._start_delivery_at_commit();

-- ==== The session-audit stream (one per server; see delivery/session_stream.rs) ====
CREATE VIEW pgaudit_siem.session_audit_stats AS
    SELECT * FROM pgaudit_siem._session_audit_stats();
REVOKE ALL ON pgaudit_siem.session_audit_stats FROM PUBLIC;
GRANT SELECT ON pgaudit_siem.session_audit_stats TO pgaudit_admin;
REVOKE ALL ON FUNCTION pgaudit_siem._session_audit_stats() FROM PUBLIC;
-- A view checks the functions it calls as its reader (like _worker_pid for stats).
GRANT EXECUTE ON FUNCTION pgaudit_siem._session_audit_stats() TO pgaudit_admin;
