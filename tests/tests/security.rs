//! Attacks on a preloaded pgaudit_siem, each made as the attacking role (never a
//! superuser unless the test says why), on a real cluster: any login role, a table owner,
//! a database owner, a pgaudit_admin member. Every test also checks that no backend died
//! from a signal (which would have restarted the cluster).

use std::time::Duration;

use pgaudit_siem_tests::postgres::error::SqlState;
use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::receiver::Receiver;
use pgaudit_siem_tests::{
    assert_stays, audit_lines, server_owned, wait_until, Cluster, ClusterBuilder,
};
use serde_json::Value;

fn builder(name: &str) -> ClusterBuilder {
    Cluster::builder()
        .name(name)
        .preload("pgaudit_siem")
        .setting("pgaudit_siem.delivery_retry_base", "'20ms'")
        .setting("pgaudit_siem.delivery_retry_max", "'300ms'")
        .setting("pgaudit_siem.delivery_timeout", "'2s'")
}

fn code(result: Result<impl Sized, pgaudit_siem_tests::postgres::Error>) -> SqlState {
    match result {
        Ok(_) => panic!("the attack succeeded"),
        Err(e) => e
            .as_db_error()
            .unwrap_or_else(|| panic!("not a server error: {e}"))
            .code()
            .clone(),
    }
}

fn outbox_count(su: &mut Client) -> i64 {
    su.query_one("SELECT count(*) FROM pgaudit_siem.outbox", &[])
        .unwrap()
        .get(0)
}

fn worker_pid(su: &mut Client, db: &str) -> Option<i32> {
    su.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem delivery' AND datname = $1",
        &[&db],
    )
    .unwrap()
    .map(|r| r.get(0))
}

/// Waits for database `db`'s delivery worker and returns its pid.
fn wait_for_worker(cluster: &Cluster, db: &str) -> i32 {
    let mut su = cluster.connect();
    let mut pid = None;
    wait_until(
        &format!("the delivery worker of {db}"),
        Duration::from_secs(30),
        || {
            pid = worker_pid(&mut su, db);
            pid.is_some()
        },
    );
    pid.unwrap()
}

// ---- Any login role and the capture trigger function ----

#[test]
fn any_role_cannot_use_the_capture_trigger_function() {
    let cluster = builder("sec-capture-public").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory;
         CREATE TABLE orgs (id int); SELECT pgaudit_siem.track('orgs');",
    )
    .unwrap();
    let before = outbox_count(&mut su);
    let mut m = cluster.connect_as("postgres", "mallory");
    m.batch_execute("CREATE TEMP TABLE t (x int); CREATE TABLE mine (x int)")
        .unwrap();
    for attack in [
        // The crash: no transition table.
        "CREATE TRIGGER t AFTER INSERT ON t FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes()",
        // Forged events in another table's category.
        "CREATE TRIGGER pgaudit_siem_capture_insert AFTER INSERT ON mine REFERENCING NEW TABLE AS n
           FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')",
        "CREATE TRIGGER r AFTER INSERT ON mine FOR EACH ROW EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')",
        "SELECT pgaudit_siem.capture_changes()",
    ] {
        assert_eq!(code(m.batch_execute(attack)), SqlState::INSUFFICIENT_PRIVILEGE, "{attack}");
    }
    m.batch_execute("INSERT INTO t VALUES (1); INSERT INTO mine VALUES (1)")
        .unwrap();
    assert_eq!(outbox_count(&mut su), before, "no event was written");
    cluster.assert_no_crash();
}

#[test]
fn capture_function_refuses_every_trigger_it_did_not_install() {
    // EXECUTE is revoked, so only a superuser (or a role it grants EXECUTE to) can name the
    // function in a trigger: the function's own checks are the second line, shown here.
    let cluster = builder("sec-capture-misuse").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE TABLE orgs (id int); SELECT pgaudit_siem.track('orgs');
         CREATE TABLE plain (x int); CREATE TABLE other (x int);",
    )
    .unwrap();
    let before = outbox_count(&mut su);
    let cases = [
        ("no transition table", "CREATE TRIGGER a AFTER INSERT ON plain FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO plain VALUES (1)"),
        ("row level", "CREATE TRIGGER a AFTER INSERT ON plain FOR EACH ROW EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO plain VALUES (1)"),
        ("before", "CREATE TRIGGER a BEFORE INSERT ON plain FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO plain VALUES (1)"),
        ("other name", "CREATE TRIGGER a AFTER INSERT ON plain REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO plain VALUES (1)"),
        ("untracked table", "CREATE TRIGGER pgaudit_siem_capture_insert AFTER INSERT ON other REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO other VALUES (1)"),
        ("update without old rows", "CREATE TRIGGER pgaudit_siem_capture_update AFTER UPDATE ON plain REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs')", "INSERT INTO plain VALUES (1); UPDATE plain SET x = 2"),
        ("bad exclusion argument", "CREATE TRIGGER pgaudit_siem_capture_delete AFTER DELETE ON plain REFERENCING OLD TABLE AS o FOR EACH STATEMENT EXECUTE FUNCTION pgaudit_siem.capture_changes('orgs', 'x')", "INSERT INTO plain VALUES (1); DELETE FROM plain"),
    ];
    for (what, create, fire) in cases {
        su.batch_execute("DROP TRIGGER IF EXISTS a ON plain; DROP TRIGGER IF EXISTS pgaudit_siem_capture_insert ON other;
                          DROP TRIGGER IF EXISTS pgaudit_siem_capture_update ON plain; DROP TRIGGER IF EXISTS pgaudit_siem_capture_delete ON plain")
            .unwrap();
        su.batch_execute(create)
            .unwrap_or_else(|e| panic!("{what}: {e}"));
        let err = su.batch_execute(fire).unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{what}: {err}"));
        assert_eq!(
            db.code(),
            &SqlState::E_R_I_E_TRIGGER_PROTOCOL_VIOLATED,
            "{what}: {}",
            db.message()
        );
        assert!(
            db.hint().unwrap_or("").contains("pgaudit_siem.track()"),
            "{what}"
        );
    }
    assert_eq!(outbox_count(&mut su), before);
    cluster.assert_no_crash();
}

// ---- A database owner and the delivery worker ----

/// A database `app` owned by the non-superuser `owner`, with the extension, a tracked
/// table and delivery to `receiver`.
fn owned_database(cluster: &Cluster, receiver: &Receiver) {
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE owner LOGIN; CREATE ROLE mallory LOGIN")
        .unwrap();
    su.batch_execute("CREATE DATABASE app OWNER owner").unwrap();
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE TABLE t (n int); SELECT pgaudit_siem.track('t');
                       GRANT INSERT ON t TO owner",
    )
    .unwrap();
    app.execute(
        "SELECT pgaudit_siem.configure($1, '{}', NULL, 'ndjson')",
        &[&receiver.url("/ingest")],
    )
    .unwrap();
    app.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
}

fn received_markers(receiver: &Receiver) -> Vec<i64> {
    receiver
        .events()
        .iter()
        .filter(|r| r.event.pointer("/source/table") == Some(&Value::from("t")))
        .flat_map(|r| {
            r.event["changes"]["data_after"]
                .as_array()
                .cloned()
                .unwrap_or_default()
        })
        .filter_map(|row| row["n"].as_i64())
        .collect()
}

/// Restarts the worker of `app` (as the platform would after a crash) and waits for the new one.
fn restart_worker(cluster: &Cluster) {
    let old = wait_for_worker(cluster, "app");
    let mut su = cluster.connect();
    su.execute("SELECT pg_terminate_backend($1)", &[&old])
        .unwrap();
    let mut pid = None;
    wait_until("a new delivery worker", Duration::from_secs(30), || {
        pid = worker_pid(&mut su, "app");
        pid.is_some_and(|p| p != old)
    });
}

#[test]
fn database_owner_settings_cannot_run_code_in_the_delivery_worker() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("sec-worker-search-path").start();
    owned_database(&cluster, &receiver);
    let mut owner = cluster.connect_as("app", "owner");
    // Every type, operator and function the worker's SQL could resolve by name.
    owner
        .batch_execute(
            "CREATE SCHEMA evil;
             CREATE TABLE evil.calls (at timestamptz DEFAULT now());
             CREATE FUNCTION evil.pwn() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO evil.calls DEFAULT VALUES;
                 BEGIN ALTER ROLE owner SUPERUSER; EXCEPTION WHEN OTHERS THEN NULL; END;
                 RETURN true;
             END $$;
             CREATE DOMAIN evil.text AS pg_catalog.text CHECK (evil.pwn());
             CREATE DOMAIN evil.int8 AS pg_catalog.int8 CHECK (evil.pwn());
             CREATE DOMAIN evil.int4 AS pg_catalog.int4 CHECK (evil.pwn());
             CREATE DOMAIN evil.xid8 AS pg_catalog.xid8 CHECK (evil.pwn());
             CREATE FUNCTION evil.eq(pg_catalog.text, pg_catalog.text) RETURNS boolean LANGUAGE sql AS 'SELECT evil.pwn() AND $1 OPERATOR(pg_catalog.=) $2';
             CREATE OPERATOR evil.= (LEFTARG = pg_catalog.text, RIGHTARG = pg_catalog.text, FUNCTION = evil.eq);
             CREATE FUNCTION evil.gt(pg_catalog.xid8, pg_catalog.xid8) RETURNS boolean LANGUAGE sql AS 'SELECT evil.pwn() AND $1 OPERATOR(pg_catalog.>) $2';
             CREATE OPERATOR evil.> (LEFTARG = pg_catalog.xid8, RIGHTARG = pg_catalog.xid8, FUNCTION = evil.gt);
             CREATE FUNCTION evil.date_part(pg_catalog.text, pg_catalog.timestamptz) RETURNS double precision LANGUAGE sql AS 'SELECT 0::float8 WHERE evil.pwn()';
             CREATE FUNCTION evil.unnest(anyarray) RETURNS SETOF anyelement LANGUAGE sql AS 'SELECT x FROM pg_catalog.unnest($1) x WHERE evil.pwn()';
             GRANT USAGE ON SCHEMA evil TO PUBLIC;
             GRANT ALL ON evil.calls TO PUBLIC;
             ALTER DATABASE app SET search_path = evil, pg_catalog;",
        )
        .unwrap();
    restart_worker(&cluster);
    for n in 0..5 {
        owner
            .execute("INSERT INTO public.t VALUES ($1)", &[&n])
            .unwrap();
    }
    wait_until(
        "delivery of the owner's rows",
        Duration::from_secs(30),
        || received_markers(&receiver).len() == 5,
    );
    let mut su = cluster.connect();
    let superuser: bool = su
        .query_one("SELECT rolsuper FROM pg_roles WHERE rolname = 'owner'", &[])
        .unwrap()
        .get(0);
    assert!(!superuser, "the database owner became superuser");
    let calls: i64 = cluster
        .connect_as("app", "postgres")
        .query_one("SELECT count(*) FROM evil.calls", &[])
        .unwrap()
        .get(0);
    assert_eq!(calls, 0, "the worker ran the owner's code");
    cluster.assert_no_crash();
}

#[test]
fn database_owner_settings_cannot_stall_or_loop_delivery() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("sec-worker-settings").start();
    owned_database(&cluster, &receiver);
    // Test plumbing (as the superuser): a writer whose own sessions do not get the
    // planted settings (role-in-database settings take precedence).
    cluster
        .connect_as("app", "postgres")
        .batch_execute(
            "CREATE ROLE writer LOGIN; GRANT INSERT ON t TO writer; GRANT pgaudit_admin TO writer;
             ALTER ROLE writer IN DATABASE app SET default_transaction_read_only = off;
             ALTER ROLE writer IN DATABASE app SET statement_timeout = 0;
             ALTER ROLE writer IN DATABASE app SET lock_timeout = 0;
             ALTER ROLE writer IN DATABASE app SET idle_in_transaction_session_timeout = 0;
             ALTER ROLE writer IN DATABASE app SET exit_on_error = off;
             ALTER ROLE writer IN DATABASE app SET default_transaction_isolation = 'read committed';
             ALTER ROLE writer IN DATABASE app SET role = 'none';",
        )
        .unwrap();
    let mut owner = cluster.connect_as("app", "owner");
    for setting in [
        "default_transaction_read_only = on",
        "statement_timeout = 1",
        "lock_timeout = 1",
        "idle_in_transaction_session_timeout = 1",
        "default_transaction_isolation = 'serializable'",
        "default_transaction_deferrable = on",
        "enable_indexscan = off",
        "enable_bitmapscan = off",
        "work_mem = '64kB'",
        "DateStyle = 'SQL, DMY'",
        "extra_float_digits = -15",
        "exit_on_error = on",
        "role = 'mallory'",
    ] {
        owner
            .batch_execute(&format!("ALTER DATABASE app SET {setting}"))
            .unwrap_or_else(|e| panic!("{setting}: {e}"));
    }
    restart_worker(&cluster);
    let mut writer = cluster.connect_as("app", "writer");
    for n in 0..20 {
        writer.execute("INSERT INTO t VALUES ($1)", &[&n]).unwrap();
    }
    let mut app = cluster.connect_as("app", "writer");
    wait_until(
        "the cursor to pass every event",
        Duration::from_secs(30),
        || {
            let queued: i64 = app
                .query_one("SELECT queued FROM pgaudit_siem.stats", &[])
                .unwrap()
                .get(0);
            queued == 0
        },
    );
    // The cursor moved, so nothing is sent again: each row arrived exactly once.
    let mut markers = received_markers(&receiver);
    markers.sort();
    assert_eq!(markers, (0..20).collect::<Vec<i64>>());
    let error: Option<String> = app
        .query_one("SELECT last_error FROM pgaudit_siem.stats", &[])
        .unwrap()
        .get(0);
    assert_eq!(error, None);
    cluster.assert_no_crash();
}

#[test]
fn refused_database_statements_leave_the_worker_alone() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("sec-worker-side-effects").start();
    owned_database(&cluster, &receiver);
    let pid = wait_for_worker(&cluster, "app");
    let attempts = [
        ("mallory", "DROP DATABASE app"),
        ("mallory", "ALTER DATABASE app RENAME TO app2"),
        ("mallory", "ALTER DATABASE app SET TABLESPACE pg_default"),
        ("mallory", "CREATE DATABASE copy TEMPLATE app"),
        // The owner lacks CREATEDB, which RENAME needs.
        ("owner", "ALTER DATABASE app RENAME TO app2"),
        // The owner, where PostgreSQL refuses statements that need no transaction: a
        // function or DO block, an implicit transaction block, a subtransaction.
        ("owner", "DO $$ BEGIN EXECUTE 'DROP DATABASE app'; END $$"),
        (
            "owner",
            "DO $$ BEGIN EXECUTE 'ALTER DATABASE app SET TABLESPACE pg_default'; END $$",
        ),
        ("owner", "SELECT 1; DROP DATABASE app"),
        ("owner", "BEGIN; SAVEPOINT s; DROP DATABASE app"),
    ];
    for (role, sql) in attempts {
        let mut client = cluster.connect_as("postgres", role);
        assert!(client.batch_execute(sql).is_err(), "{role}: {sql}");
    }
    let mut owner_tx = cluster.connect_as("postgres", "owner");
    // Inside a transaction block DROP DATABASE is refused too.
    assert!(owner_tx.batch_execute("BEGIN; DROP DATABASE app").is_err());
    let mut su = cluster.connect();
    assert_eq!(
        worker_pid(&mut su, "app"),
        Some(pid),
        "the worker was stopped"
    );
    cluster.assert_no_crash();
}

#[test]
fn delivery_is_held_back_only_by_transactions_that_wrote_events() {
    let receiver = Receiver::start(0, None).unwrap();
    let mut cluster = builder("sec-horizon")
        .setting("max_prepared_transactions", "5")
        .start();
    owned_database(&cluster, &receiver);
    let mut su = cluster.connect();
    su.batch_execute("CREATE DATABASE elsewhere").unwrap();
    // Any role in another database holding an xid open.
    let mut other = cluster.connect_as("elsewhere", "postgres");
    other
        .batch_execute("CREATE TABLE x (i int); BEGIN; INSERT INTO x VALUES (1)")
        .unwrap();
    // Roles of this database holding an xid open without writing events.
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute("CREATE TABLE untracked (i int); GRANT ALL ON untracked TO mallory, owner")
        .unwrap();
    let mut idle = cluster.connect_as("app", "mallory");
    idle.batch_execute("BEGIN; INSERT INTO untracked VALUES (1)")
        .unwrap();
    let mut older = cluster.connect_as("app", "owner");
    older
        .batch_execute("BEGIN; INSERT INTO untracked VALUES (2)")
        .unwrap();
    app.batch_execute("INSERT INTO t VALUES (7)").unwrap();
    wait_until(
        "delivery past open transactions that wrote no events",
        Duration::from_secs(20),
        || received_markers(&receiver) == vec![7],
    );
    // Let the worker acknowledge and go idle (it publishes its horizon when it looks).
    let queued = |c: &mut Client| -> i64 {
        c.query_one("SELECT queued FROM pgaudit_siem.stats", &[])
            .unwrap()
            .get(0)
    };
    wait_until("the cursor past event 7", Duration::from_secs(20), || {
        queued(&mut app) == 0
    });
    assert_stays("an idle worker", Duration::from_secs(1), || {
        queued(&mut app) == 0
    });
    // The older transaction (its id is below the delivered event's) now writes an event:
    // it is not skipped (its key is at or above the published horizon) and does not wait
    // for some other transaction to take an id (nothing else runs here).
    older
        .batch_execute("INSERT INTO t VALUES (8); COMMIT")
        .unwrap();
    wait_until(
        "the older transaction's event",
        Duration::from_secs(20),
        || received_markers(&receiver) == vec![7, 8],
    );
    // A transaction that wrote events holds later ones back until it commits, so order
    // is kept.
    let mut local = cluster.connect_as("app", "postgres");
    local
        .batch_execute("BEGIN; INSERT INTO t VALUES (9)")
        .unwrap();
    app.batch_execute("INSERT INTO t VALUES (10)").unwrap();
    assert_stays(
        "event 10 waits for the open writer",
        Duration::from_secs(2),
        || received_markers(&receiver) == vec![7, 8],
    );
    local.batch_execute("COMMIT").unwrap();
    wait_until("both later events", Duration::from_secs(20), || {
        received_markers(&receiver) == vec![7, 8, 9, 10]
    });
    idle.batch_execute("COMMIT").unwrap();
    other.batch_execute("COMMIT").unwrap();
    // A prepared writer holds delivery back, also after a restart (when no registration
    // is left in shared memory).
    local
        .batch_execute("BEGIN; INSERT INTO t VALUES (11); PREPARE TRANSACTION 'w'")
        .unwrap();
    app.batch_execute("INSERT INTO t VALUES (12)").unwrap();
    drop((app, local, idle, older, other, su));
    cluster.restart();
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute("INSERT INTO t VALUES (13)").unwrap();
    assert_stays(
        "events after a prepared writer wait for it",
        Duration::from_secs(3),
        || received_markers(&receiver) == vec![7, 8, 9, 10],
    );
    app.batch_execute("COMMIT PREPARED 'w'").unwrap();
    wait_until(
        "the prepared writer's event and later ones",
        Duration::from_secs(30),
        || received_markers(&receiver) == vec![7, 8, 9, 10, 11, 12, 13],
    );
    cluster.assert_no_crash();
}

// ---- Gaps in the session audit trail ----

fn audited(name: &str) -> Cluster {
    builder(name)
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit.log_catalog", "off")
        .start_logged()
}

#[test]
fn a_caught_error_never_hides_later_statements() {
    let cluster = audited("sec-caught-error");
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE app LOGIN;
         CREATE TABLE tracked (x int); SELECT pgaudit_siem.track('tracked');
         CREATE TABLE secret (x int); CREATE TABLE other (x int);
         CREATE FUNCTION raise_after() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'no'; END $$;
         CREATE TABLE tracked2 (x int); SELECT pgaudit_siem.track('tracked2');
         CREATE TRIGGER zz AFTER INSERT ON tracked2 FOR EACH STATEMENT EXECUTE FUNCTION raise_after();
         CREATE FUNCTION nested_write() RETURNS void LANGUAGE plpgsql AS $$
         BEGIN
             BEGIN INSERT INTO tracked SELECT 1 FROM (SELECT set_config('transaction_read_only', 'on', true)) s;
             EXCEPTION WHEN read_only_sql_transaction THEN NULL; END;
         END $$;
         GRANT ALL ON tracked, tracked2, secret, other TO app;",
    )
    .unwrap();
    let lines = cluster.session_audit("postgres", "app", |c| {
        // The block: the capture insert fails read-only and is caught.
        c.batch_execute(
            "DO $$ BEGIN
               BEGIN INSERT INTO tracked SELECT 1 FROM (SELECT set_config('transaction_read_only','on',true)) s;
               EXCEPTION WHEN read_only_sql_transaction THEN NULL; END;
               DELETE FROM secret;
             END $$",
        )
        .unwrap();
        // A trigger that raises after capture ran, caught.
        c.batch_execute(
            "DO $$ BEGIN
               BEGIN INSERT INTO tracked2 VALUES (1); EXCEPTION WHEN raise_exception THEN NULL; END;
               UPDATE secret SET x = 2;
             END $$",
        )
        .unwrap();
        // Nested in a function, then a top-level statement.
        c.batch_execute("DO $$ BEGIN PERFORM nested_write(); INSERT INTO other VALUES (3); END $$")
            .unwrap();
        c.batch_execute("DELETE FROM other").unwrap();
    });
    for needle in [
        "DELETE FROM secret",
        "UPDATE secret SET x = 2",
        "INSERT INTO other VALUES (3)",
    ] {
        assert!(
            lines
                .iter()
                .any(|l| l.contains(needle) && l.contains("WRITE")),
            "{needle} is missing from the trail:\n{}",
            lines.join("\n")
        );
    }
    assert!(
        lines.last().unwrap().contains("DELETE FROM other"),
        "{lines:?}"
    );
    cluster.assert_no_crash();
}

#[test]
fn the_extensions_own_statements_never_enter_the_trail() {
    let cluster = audited("sec-own-statements");
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE owner_r LOGIN; GRANT CREATE ON SCHEMA public TO owner_r; CREATE EXTENSION pgaudit_siem")
        .unwrap();
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("SELECT 1").unwrap();
        c.batch_execute("CREATE TABLE t (x int, y int)").unwrap();
        c.batch_execute("SELECT pgaudit_siem.track('t', 'cat', ARRAY['y'])")
            .unwrap();
        c.batch_execute("INSERT INTO t VALUES (1, 2)").unwrap();
        c.batch_execute("ALTER TABLE t ADD COLUMN z int").unwrap();
        c.batch_execute("SELECT pgaudit_siem.untrack('t')").unwrap();
        c.batch_execute("DROP TABLE t").unwrap();
        c.batch_execute("SELECT pgaudit_siem.discard_undelivered()")
            .unwrap();
        c.batch_execute("DROP EXTENSION pgaudit_siem").unwrap();
        c.batch_execute("SELECT 2").unwrap();
    });
    let trail = lines.join("\n");
    for internal in [
        "pgaudit_siem.outbox",
        "pgaudit_siem.tracked",
        "to_regclass",
        "CREATE TRIGGER",
        "pg_event_trigger",
        "_install_triggers",
        "_admin_event",
    ] {
        assert!(
            !trail.contains(internal),
            "internal statement ({internal}) in the trail:\n{trail}"
        );
    }
    // One statement id per statement the client sent, in order, none skipped.
    let ids: Vec<i64> = lines
        .iter()
        .map(|l| l.split(',').nth(1).unwrap().parse().unwrap())
        .collect();
    let mut distinct = ids.clone();
    distinct.dedup();
    assert_eq!(distinct, (1..=10).collect::<Vec<i64>>(), "{trail}");
    assert!(lines.last().unwrap().contains("SELECT 2"), "{trail}");
    cluster.assert_no_crash();
}

// ---- The delegated admin ----

/// Server level: auditing on for everything. `avnadmin` is the delegated admin of the
/// guide (CREATEROLE, owns defaultdb, pgaudit_admin member).
#[test]
fn user_code_run_by_capture_stays_in_the_trail() {
    // Encoding a captured row runs the element type's cast to json (PostgreSQL's
    // array_to_json does, for user types other than composites), which is user code: its statements are the user's, so they are
    // logged, while the extension's own insert of the event is not.
    let cluster = audited("sec-json-cast");
    cluster
        .connect()
        .batch_execute(
            "CREATE EXTENSION pgaudit_siem; CREATE TABLE cast_log (n int);
             CREATE TYPE mood AS ENUM ('calm', 'cross');
             CREATE FUNCTION mood_json(mood) RETURNS json LANGUAGE plpgsql AS $$
                 BEGIN INSERT INTO cast_log VALUES (7); RETURN json_build_array($1::text, 8); END $$;
             CREATE CAST (mood AS json) WITH FUNCTION mood_json(mood);
             CREATE TABLE pairs (p mood[]); SELECT pgaudit_siem.track('pairs');",
        )
        .unwrap();
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("INSERT INTO pairs VALUES (ARRAY['calm'::mood])")
            .unwrap()
    });
    assert!(
        lines
            .iter()
            .any(|l| l.contains(",WRITE,INSERT,") && l.contains("INSERT INTO cast_log")),
        "the cast's statement is missing: {lines:#?}"
    );
    assert!(
        !lines.iter().any(|l| l.contains("pgaudit_siem.outbox")),
        "the extension's own insert was logged: {lines:#?}"
    );
    let payload: String = cluster
        .connect()
        .query_one(
            "SELECT payload::text FROM pgaudit_siem.outbox WHERE action = 'insert'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        payload.contains("[[\"calm\", 8]]") || payload.contains("[[\"calm\",8]]"),
        "{payload}"
    );
    cluster.assert_no_crash();
}

fn platform(name: &str) -> Cluster {
    let cluster = audited(name);
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE avnadmin LOGIN CREATEROLE; CREATE ROLE app_user LOGIN")
        .unwrap();
    su.batch_execute("CREATE DATABASE defaultdb OWNER avnadmin")
        .unwrap();
    cluster
        .connect_as("defaultdb", "postgres")
        .batch_execute("CREATE EXTENSION pgaudit_siem; GRANT pgaudit_admin TO avnadmin")
        .unwrap();
    cluster
}

#[test]
fn the_delegated_admin_cannot_silence_its_own_sessions() {
    let cluster = platform("sec-admin-self");
    let mut admin = cluster.connect_as("defaultdb", "avnadmin");
    admin
        .batch_execute(
            "CREATE ROLE shadow LOGIN IN ROLE avnadmin;
             CREATE ROLE shadow_noinherit LOGIN NOINHERIT IN ROLE avnadmin;
             CREATE ROLE deputy LOGIN; GRANT pgaudit_admin TO deputy;",
        )
        .unwrap();
    for target in ["shadow", "shadow_noinherit", "deputy"] {
        for attack in [
            format!("ALTER ROLE {target} SET pgaudit.featureEnabled = off"),
            format!("ALTER ROLE {target} IN DATABASE defaultdb SET pgaudit.log = 'none'"),
            format!("SELECT aiven_extras.set_pgaudit_role_parameter('featureEnabled', '{target}', 'off')"),
            format!("SELECT aiven_extras.set_pgaudit_role_in_database_parameter('log', '{target}', 'defaultdb', 'none')"),
        ] {
            assert_eq!(code(admin.batch_execute(&attack)), SqlState::INSUFFICIENT_PRIVILEGE, "{attack}");
        }
    }
    // ALTER ROLE ALL is the server level: refused by PostgreSQL, no crash.
    for attack in [
        "ALTER ROLE ALL SET pgaudit.log = 'none'",
        "ALTER ROLE ALL IN DATABASE defaultdb SET pgaudit.featureEnabled = off",
    ] {
        assert_eq!(
            code(admin.batch_execute(attack)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{attack}"
        );
    }
    let settings: i64 = cluster
        .connect()
        .query_one("SELECT count(*) FROM pg_db_role_setting", &[])
        .unwrap()
        .get(0);
    assert_eq!(settings, 0, "a refused statement changed a setting");
    // The database level is the admin's to configure, for others.
    admin
        .batch_execute(
            "ALTER DATABASE defaultdb SET pgaudit.featureEnabled = off;
             ALTER DATABASE defaultdb SET pgaudit.log = 'none';
             ALTER DATABASE defaultdb SET pgaudit.log_statement_once = on;",
        )
        .unwrap();
    let run = |c: &mut Client| c.batch_execute("SELECT 42 AS marker").unwrap();
    assert!(
        cluster
            .session_audit("defaultdb", "app_user", run)
            .is_empty(),
        "others follow the database level"
    );
    for role in ["avnadmin", "shadow", "shadow_noinherit", "deputy"] {
        let lines = cluster.session_audit("defaultdb", role, run);
        assert!(
            lines.iter().any(|l| l.contains("SELECT 42 AS marker")),
            "{role}'s session escaped the server level: {lines:?}"
        );
    }
    cluster.assert_no_crash();
}

#[test]
fn a_reload_never_lowers_the_server_level_of_admin_sessions() {
    // The files say off; the superuser turns auditing on for every role with ALTER ROLE
    // ALL, a stronger source than the files, which a reload does not re-read.
    let cluster = builder("sec-admin-reload")
        .setting("pgaudit.featureEnabled", "off")
        .setting("pgaudit.log", "'none'")
        .setting("pgaudit.log_catalog", "off")
        .start_logged();
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE avnadmin LOGIN CREATEROLE")
        .unwrap();
    su.batch_execute("CREATE DATABASE defaultdb OWNER avnadmin")
        .unwrap();
    su.batch_execute(
        "ALTER ROLE ALL SET pgaudit.featureEnabled = on; ALTER ROLE ALL SET pgaudit.log = 'all'",
    )
    .unwrap();
    cluster
        .connect_as("defaultdb", "postgres")
        .batch_execute("CREATE EXTENSION pgaudit_siem; GRANT pgaudit_admin TO avnadmin")
        .unwrap();
    cluster
        .connect_as("defaultdb", "avnadmin")
        .batch_execute(
            "ALTER DATABASE defaultdb SET pgaudit.featureEnabled = off;
             ALTER DATABASE defaultdb SET pgaudit.log = 'none'",
        )
        .unwrap();
    let lines = cluster.session_audit("defaultdb", "avnadmin", |admin| {
        admin.batch_execute("SELECT 1 AS before_reload").unwrap();
        let loaded = |c: &mut Client| -> String {
            c.query_one("SELECT pg_conf_load_time()::text", &[])
                .unwrap()
                .get(0)
        };
        let before = loaded(admin);
        cluster.reload_config();
        wait_until(
            "the admin's session to reload the files",
            Duration::from_secs(20),
            || loaded(admin) != before,
        );
        admin.batch_execute("SELECT 2 AS after_reload").unwrap();
    });
    for marker in ["before_reload", "after_reload"] {
        assert!(
            lines.iter().any(|l| l.contains(marker)),
            "{marker} is missing from the admin's session: {lines:?}"
        );
    }
    // Others follow the database level.
    let run = |c: &mut Client| c.batch_execute("SELECT 3 AS other").unwrap();
    su.batch_execute("CREATE ROLE app_user LOGIN").unwrap();
    assert!(cluster
        .session_audit("defaultdb", "app_user", run)
        .is_empty());
    cluster.assert_no_crash();
}

// ---- A table owner and change capture ----

fn events_of(su: &mut Client, after_seq: i64) -> Vec<(String, String, Value)> {
    su.query(
        "SELECT category, action, payload::jsonb FROM pgaudit_siem.outbox WHERE seq > $1 ORDER BY seq",
        &[&after_seq],
    )
    .unwrap()
    .iter()
    .map(|r| (r.get(0), r.get(1), r.get(2)))
    .collect()
}

fn last_seq(su: &mut Client) -> i64 {
    su.query_one("SELECT coalesce(max(seq), 0) FROM pgaudit_siem.outbox", &[])
        .unwrap()
        .get(0)
}

#[test]
fn a_table_owner_cannot_switch_capture_off_unseen() {
    let cluster = builder("sec-owner-capture").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE ROLE owner_r LOGIN; GRANT CREATE ON SCHEMA public TO owner_r;
                      CREATE EXTENSION IF NOT EXISTS plpgsql")
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_r");
    owner
        .batch_execute(
            "CREATE TABLE acct (id int, secret text, note text);
             SELECT pgaudit_siem.track('acct', 'accounts', ARRAY['secret']);
             CREATE FUNCTION noop() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NULL; END $$;",
        )
        .unwrap();
    for attack in [
        "CREATE OR REPLACE TRIGGER pgaudit_siem_capture_update AFTER UPDATE ON acct FOR EACH STATEMENT EXECUTE FUNCTION noop()",
        "CREATE OR REPLACE TRIGGER pgaudit_siem_capture_insert AFTER INSERT ON acct REFERENCING NEW TABLE AS n FOR EACH STATEMENT EXECUTE FUNCTION noop()",
        "CREATE TRIGGER pgaudit_siem_capture_x BEFORE INSERT ON acct FOR EACH ROW EXECUTE FUNCTION noop()",
    ] {
        assert_eq!(code(owner.batch_execute(attack)), SqlState::INSUFFICIENT_PRIVILEGE, "{attack}");
    }
    // Untrack, change, track again: the gap is visible as two events.
    let seq = last_seq(&mut su);
    owner
        .batch_execute("SELECT pgaudit_siem.untrack('acct'); INSERT INTO acct VALUES (1, 's', 'n'); SELECT pgaudit_siem.track('acct', 'accounts')")
        .unwrap();
    let actions: Vec<String> = events_of(&mut su, seq).into_iter().map(|e| e.1).collect();
    assert_eq!(actions, vec!["untrack", "track"]);
    owner
        .batch_execute("SELECT pgaudit_siem.track('acct', 'accounts', ARRAY['secret'])")
        .unwrap();
    // Renaming the excluded column does not leak it; renaming another keeps it captured.
    let seq = last_seq(&mut su);
    owner
        .batch_execute(
            "ALTER TABLE acct RENAME COLUMN secret TO s2;
             ALTER TABLE acct RENAME COLUMN note TO secret;
             INSERT INTO acct VALUES (2, 'hidden', 'shown');",
        )
        .unwrap();
    let events = events_of(&mut su, seq);
    let shape: Vec<(String, String)> = events.iter().map(|e| (e.0.clone(), e.1.clone())).collect();
    assert_eq!(
        shape,
        vec![
            ("pgaudit_siem".to_owned(), "alter_table".to_owned()),
            ("pgaudit_siem".to_owned(), "alter_table".to_owned()),
            ("accounts".to_owned(), "insert".to_owned()),
        ]
    );
    let detail = &events[1].2["changes"]["detail"];
    assert_eq!(detail["exclude_columns"], serde_json::json!(["s2"]));
    assert_eq!(
        detail["captured_columns"],
        serde_json::json!(["id", "secret"])
    );
    let row = &events[2].2["changes"]["data_after"][0];
    assert_eq!(row, &serde_json::json!({"id": 2, "secret": "shown"}));
    assert!(!events[2].2.to_string().contains("hidden"));
    // Dropping and retyping columns are shape changes too.
    let seq = last_seq(&mut su);
    owner
        .batch_execute(
            "ALTER TABLE acct ALTER COLUMN id TYPE bigint; ALTER TABLE acct DROP COLUMN secret",
        )
        .unwrap();
    let actions: Vec<String> = events_of(&mut su, seq).into_iter().map(|e| e.1).collect();
    assert_eq!(actions, vec!["alter_table", "alter_table"]);
    let tracked: Vec<String> = su
        .query(
            "SELECT unnest(exclude_columns) FROM pgaudit_siem.tracked_tables",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(tracked, vec!["s2"]);
    cluster.assert_no_crash();
}

#[test]
fn code_of_another_role_cannot_track_with_its_callers_privileges() {
    let cluster = builder("sec-track-deputy").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE admin LOGIN; GRANT pgaudit_admin TO admin;
         CREATE ROLE mallory LOGIN; GRANT CREATE ON SCHEMA public TO mallory;
         CREATE TABLE important (x int); GRANT SELECT ON important TO admin;
         SELECT pgaudit_siem.track('important')",
    )
    .unwrap();
    let admin_oid: u32 = su
        .query_one("SELECT oid FROM pg_roles WHERE rolname = 'admin'", &[])
        .unwrap()
        .get(0);
    // Mallory's SECURITY DEFINER functions run with mallory's privileges, whoever calls
    // them: a pgaudit_admin member calling one must not lend it the right to untrack.
    let mut mallory = cluster.connect_as("postgres", "mallory");
    mallory
        .batch_execute(&format!(
            "CREATE FUNCTION trap() RETURNS void LANGUAGE sql SECURITY DEFINER
                 AS $$ SELECT pgaudit_siem.untrack('important') $$;
             CREATE FUNCTION forge() RETURNS void LANGUAGE sql SECURITY DEFINER
                 AS $$ SELECT pgaudit_siem._untrack({admin_oid}, 'important') $$;"
        ))
        .unwrap();
    let mut admin = cluster.connect_as("postgres", "admin");
    for call in ["SELECT trap()", "SELECT forge()"] {
        assert_eq!(
            code(admin.batch_execute(call)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{call}"
        );
    }
    // Nor can mallory name someone else as the caller, before or after attesting herself.
    for call in [
        format!("SELECT pgaudit_siem._untrack({admin_oid}, 'important')"),
        format!("SELECT pgaudit_siem._invoking_role(); SELECT pgaudit_siem._untrack({admin_oid}, 'important')"),
        format!("SELECT pgaudit_siem._track({admin_oid}, 'important', 'x', '{{}}')"),
    ] {
        assert_eq!(
            code(mallory.batch_execute(&call)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{call}"
        );
    }
    let tracked: i64 = su
        .query_one(
            "SELECT count(*) FROM pgaudit_siem.tracked WHERE relid = 'important'::regclass",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(tracked, 1, "the table was untracked");
    // The admin's own call still works.
    admin
        .batch_execute("SELECT pgaudit_siem.untrack('important')")
        .unwrap();
    cluster.assert_no_crash();
}

#[test]
fn a_pgaudit_admin_member_cannot_read_tables_through_tracking() {
    let cluster = builder("sec-admin-track").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE auditor LOGIN; GRANT pgaudit_admin TO auditor;
         CREATE TABLE payroll (id int, name text, salary int);
         GRANT SELECT (id, name) ON payroll TO auditor;",
    )
    .unwrap();
    let mut auditor = cluster.connect_as("postgres", "auditor");
    let err = auditor
        .batch_execute("SELECT pgaudit_siem.track('payroll')")
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE);
    assert!(
        db.detail().unwrap().contains("\"salary\""),
        "{:?}",
        db.detail()
    );
    // Excluding what it may not read is fine.
    auditor
        .batch_execute("SELECT pgaudit_siem.track('payroll', 'payroll', ARRAY['salary'])")
        .unwrap();
    su.batch_execute("INSERT INTO payroll VALUES (1, 'ann', 100)")
        .unwrap();
    let payloads: Vec<String> = auditor
        .query(
            "SELECT payload::text FROM pgaudit_siem.events WHERE category = 'payroll'",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(payloads.len(), 1);
    assert!(!payloads[0].contains("100"), "{}", payloads[0]);
    // Row-level security: SELECT on every column shows the auditor only its rows, the
    // events would show all of them.
    su.batch_execute(
        "CREATE TABLE notes (owner name, body text); GRANT SELECT ON notes TO auditor;
         ALTER TABLE notes ENABLE ROW LEVEL SECURITY;
         CREATE POLICY mine ON notes USING (owner = current_user);
         CREATE TABLE parts (id int, body text) PARTITION BY RANGE (id);
         CREATE TABLE parts_1 PARTITION OF parts FOR VALUES FROM (0) TO (10);
         ALTER TABLE parts_1 ENABLE ROW LEVEL SECURITY; GRANT SELECT ON parts, parts_1 TO auditor;",
    )
    .unwrap();
    for table in ["notes", "parts"] {
        let err = auditor
            .batch_execute(&format!("SELECT pgaudit_siem.track('{table}')"))
            .unwrap_err();
        let db = err.as_db_error().unwrap();
        assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{table}");
        assert!(
            db.detail().unwrap().contains("Row-level security"),
            "{:?}",
            db.detail()
        );
    }
    su.batch_execute("ALTER ROLE auditor BYPASSRLS").unwrap();
    auditor
        .batch_execute("SELECT pgaudit_siem.track('notes')")
        .unwrap();
    cluster.assert_no_crash();
}

#[test]
fn audit_categories_reach_the_siem_whatever_the_filter() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("sec-categories").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE TABLE a (n int); CREATE TABLE b (n int);
                      SELECT pgaudit_siem.track('a'); SELECT pgaudit_siem.track('b')",
    )
    .unwrap();
    su.execute(
        "SELECT pgaudit_siem.configure($1, '{}', ARRAY['a'], 'ndjson')",
        &[&receiver.url("/ingest")],
    )
    .unwrap();
    su.batch_execute("SELECT pgaudit_siem.enable(); INSERT INTO b VALUES (1); SELECT pgaudit_siem.untrack('b'); INSERT INTO a VALUES (1)")
        .unwrap();
    wait_until("the change of a", Duration::from_secs(20), || {
        receiver
            .events()
            .iter()
            .any(|r| r.event["event"]["category"] == "a")
    });
    let categories: Vec<(String, String)> = receiver
        .events()
        .iter()
        .map(|r| {
            (
                r.event["event"]["category"].as_str().unwrap().to_owned(),
                r.event["event"]["action"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert!(
        categories.contains(&("siem_settings".into(), "update".into())),
        "{categories:?}"
    );
    assert!(
        categories.contains(&("pgaudit_siem".into(), "untrack".into())),
        "{categories:?}"
    );
    assert!(!categories.iter().any(|(c, _)| c == "b"), "{categories:?}");
    cluster.assert_no_crash();
}

// ---- Smaller items ----

#[test]
fn siem_tokens_never_reach_the_server_log() {
    let cluster = builder("sec-token")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit.log_parameter", "on")
        .start_logged();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    su.batch_execute(
        "WITH h AS (SELECT '{\"Authorization\": \"Bearer cte-s3cret\"}'::jsonb AS v)
         SELECT pgaudit_siem.configure('http://127.0.0.1:9/x', (SELECT v FROM h))",
    )
    .unwrap();
    su.batch_execute(
        "SELECT $t$x-s3cret$t$ AS a, ok FROM pgaudit_siem.test_connection('http://127.0.0.1:9/x', '{\"X\": \"dollar-s3cret\"}')",
    )
    .unwrap();
    // The call behind a prepared statement or a wrapper function: the statement that
    // runs it shows the secrets as its own arguments.
    // (One statement per query: a multi-statement query is every statement's text.)
    for statement in [
        "PREPARE conf(text, jsonb) AS SELECT pgaudit_siem.configure($1, $2)",
        "EXECUTE conf('http://127.0.0.1:9/x', '{\"Authorization\": \"Bearer prepared-s3cret\"}')",
        "CREATE FUNCTION my_configure(h jsonb) RETURNS void LANGUAGE sql
             AS $$ SELECT pgaudit_siem.configure('http://127.0.0.1:9/x', h) $$",
        "SELECT my_configure('{\"Authorization\": \"Bearer wrapped-token\"}')",
        "SELECT 1 FROM my_configure('{\"Authorization\": \"Bearer wrapped-token\"}')",
    ] {
        su.batch_execute(statement).unwrap();
    }
    su.batch_execute("SELECT 'done-marker'").unwrap();
    wait_until("the marker in the log", Duration::from_secs(10), || {
        cluster.server_log().contains("done-marker")
    });
    let log = cluster.server_log();
    assert!(
        !log.contains("s3cret"),
        "a token reached the server log:\n{log}"
    );
    // Behind the user's own wrapper function, the statement calling the wrapper is
    // logged before it runs, as written (the README says so); every line from the call
    // of configure() on hides the text.
    let lines = audit_lines(&cluster.log_records());
    let calls: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("FUNCTION,EXECUTE,FUNCTION,pgaudit_siem.configure"))
        .collect();
    assert_eq!(calls.len(), 4, "{lines:#?}");
    assert!(
        calls.iter().all(|l| l.ends_with(",<REDACTED>,<none>")),
        "{calls:#?}"
    );
    let visible: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("wrapped-token"))
        .collect();
    assert_eq!(visible.len(), 2, "{visible:#?}");
    assert!(
        visible.iter().all(|l| l.contains(",READ,SELECT,,,")),
        "{visible:#?}"
    );
    cluster.assert_no_crash();
}

#[test]
fn test_connection_refuses_cloud_metadata_addresses() {
    let cluster = builder("sec-ssrf").start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE admin_r LOGIN; GRANT pgaudit_admin TO admin_r",
    )
    .unwrap();
    let mut admin = cluster.connect_as("postgres", "admin_r");
    for url in [
        "http://169.254.169.254/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://[::ffff:169.254.169.254]/",
        "http://100.100.100.200/latest/meta-data/",
    ] {
        assert_eq!(
            code(admin.query("SELECT * FROM pgaudit_siem.test_connection($1)", &[&url])),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{url}"
        );
        assert_eq!(
            code(admin.query("SELECT pgaudit_siem.configure($1)", &[&url])),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{url}"
        );
    }
    cluster.assert_no_crash();
}

#[test]
fn dropping_the_schema_keeps_undelivered_events() {
    let cluster = builder("sec-drop-schema").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE TABLE t (n int); SELECT pgaudit_siem.track('t'); INSERT INTO t VALUES (1)")
        .unwrap();
    for attack in [
        "DROP SCHEMA pgaudit_siem CASCADE",
        "DROP SCHEMA IF EXISTS public, pgaudit_siem CASCADE",
    ] {
        assert_eq!(
            code(su.batch_execute(attack)),
            SqlState::OBJECT_IN_USE,
            "{attack}"
        );
    }
    assert!(outbox_count(&mut su) >= 2);
    cluster.assert_no_crash();
}

/// Every function, view, table and sequence of the extension's schemas with who may use
/// it, compared with the reviewed list below: a new object cannot appear open to PUBLIC
/// (or to pgaudit_admin) by accident.
#[test]
fn privileges_on_every_object_match_the_reviewed_list() {
    let cluster = builder("sec-privileges").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    let rows = su
        .query(
            "WITH objects AS (
                 SELECT 'function' AS kind, p.oid::regprocedure::text AS name, p.proacl AS acl,
                        p.proowner AS owner, p.prosecdef AS secdef
                   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                  WHERE n.nspname IN ('pgaudit_siem', 'aiven_extras')
                 UNION ALL
                 SELECT CASE c.relkind WHEN 'r' THEN 'table' WHEN 'v' THEN 'view' WHEN 'S' THEN 'sequence' END,
                        c.oid::regclass::text, c.relacl, c.relowner, false
                   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                  WHERE n.nspname IN ('pgaudit_siem', 'aiven_extras') AND c.relkind IN ('r', 'v', 'S')
             )
             SELECT kind || ' ' || name || CASE WHEN secdef THEN ' SECURITY DEFINER' ELSE '' END || ': ' ||
                    coalesce((SELECT string_agg(
                                  CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE pg_get_userbyid(a.grantee) END
                                  || '=' || a.privilege_type, ', ' ORDER BY 1)
                                FROM aclexplode(coalesce(o.acl, acldefault((CASE WHEN kind = 'function' THEN 'f' ELSE 'r' END)::pg_catalog.char, o.owner))) a
                               WHERE a.grantee <> o.owner), '')
               FROM objects o ORDER BY 1",
            &[],
        )
        .unwrap();
    let actual: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
    let reviewed: Vec<&str> = include_str!("security_privileges.txt")
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(
        actual,
        reviewed,
        "privileges changed; review and update tests/tests/security_privileges.txt:\n{}",
        actual.join("\n")
    );
}

#[test]
fn capture_lookups_ignore_the_writers_operators() {
    // The capture trigger reads its registry as the outbox owner (a superuser) inside
    // the writer's session: the writer's search_path and operators must not be used.
    let cluster = builder("sec-capture-operators").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE ROLE owner_r LOGIN; GRANT CREATE ON SCHEMA public TO owner_r")
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_r");
    owner
        .batch_execute(
            "CREATE TABLE calls (n int); GRANT ALL ON calls TO PUBLIC;
             CREATE FUNCTION pwn() RETURNS boolean LANGUAGE plpgsql AS $$
             BEGIN
                 INSERT INTO public.calls VALUES (1);
                 BEGIN ALTER ROLE owner_r SUPERUSER; EXCEPTION WHEN OTHERS THEN NULL; END;
                 RETURN false;
             END $$;
             CREATE FUNCTION eq_oid_regclass(oid, regclass) RETURNS boolean LANGUAGE sql AS 'SELECT public.pwn()';
             CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = regclass, FUNCTION = eq_oid_regclass);
             CREATE FUNCTION eq_oid_oid(oid, oid) RETURNS boolean LANGUAGE sql AS 'SELECT public.pwn()';
             CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = eq_oid_oid);
             CREATE FUNCTION eq_name(name, name) RETURNS boolean LANGUAGE sql AS 'SELECT public.pwn()';
             CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = eq_name);
             CREATE TABLE m (id int) PARTITION BY RANGE (id);
             CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
             SELECT pgaudit_siem.track('m');",
        )
        .unwrap();
    // A fresh session (no cached lookups), the attacker's schema first.
    let mut writer = cluster.connect_as("postgres", "owner_r");
    writer
        .batch_execute("SET search_path = public, pg_catalog; INSERT INTO m1 VALUES (1); INSERT INTO m VALUES (2)")
        .unwrap();
    let calls: i64 = su
        .query_one("SELECT count(*) FROM calls", &[])
        .unwrap()
        .get(0);
    assert_eq!(calls, 0, "the writer's operator ran inside the capture");
    let superuser: bool = su
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'owner_r'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!superuser);
    let captured: i64 = su
        .query_one(
            "SELECT count(*) FROM pgaudit_siem.outbox WHERE category = 'm'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(captured, 2);
    // Reserved categories cannot be posed as.
    for reserved in ["siem_settings", "pgaudit_siem"] {
        assert_eq!(
            code(owner.execute("SELECT pgaudit_siem.track('calls', $1)", &[&reserved])),
            SqlState::INVALID_PARAMETER_VALUE,
            "{reserved}"
        );
    }
    cluster.assert_no_crash();
}

#[test]
fn a_row_too_large_to_capture_is_refused_without_a_crash() {
    let cluster = builder("sec-huge-row").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE ROLE owner_r LOGIN; GRANT CREATE ON SCHEMA public TO owner_r")
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_r");
    owner
        .batch_execute("CREATE TABLE big (v text); SELECT pgaudit_siem.track('big')")
        .unwrap();
    // 50 MB of control characters: 300 MB of JSON once escaped.
    let err = owner
        .batch_execute("INSERT INTO big SELECT repeat(chr(1), 50000000)")
        .unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(
        db.code(),
        &SqlState::PROGRAM_LIMIT_EXCEEDED,
        "{}",
        db.message()
    );
    assert!(db.hint().unwrap().contains("exclude_columns"));
    let rows: i64 = owner
        .query_one("SELECT count(*) FROM big", &[])
        .unwrap()
        .get(0);
    assert_eq!(rows, 0, "the refused statement changed nothing");
    owner
        .batch_execute("SELECT pgaudit_siem.track('big', 'big', ARRAY['v']); INSERT INTO big SELECT repeat(chr(1), 50000000)")
        .unwrap();
    cluster.assert_no_crash();
}

#[test]
fn attached_and_detached_partitions_are_captured_and_the_siem_is_told() {
    let cluster = builder("sec-detach").start();
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem; CREATE ROLE owner_r LOGIN; GRANT CREATE ON SCHEMA public TO owner_r")
        .unwrap();
    let mut owner = cluster.connect_as("postgres", "owner_r");
    owner
        .batch_execute(
            "CREATE TABLE m (id int) PARTITION BY RANGE (id);
             CREATE TABLE m1 PARTITION OF m FOR VALUES FROM (0) TO (100);
             SELECT pgaudit_siem.track('m');
             ALTER TABLE m DETACH PARTITION m1;
             INSERT INTO m1 VALUES (1);",
        )
        .unwrap();
    let inserted = |su: &mut Client| -> Vec<String> {
        su.query(
            "SELECT table_name FROM pgaudit_siem.outbox WHERE action = 'insert' ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    assert!(inserted(&mut su).is_empty());
    let actions: Vec<(String, String)> = su
        .query(
            "SELECT action, table_name FROM pgaudit_siem.outbox ORDER BY seq",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        actions.contains(&("untrack_partition".to_owned(), "m1".to_owned())),
        "{actions:?}"
    );
    // Attaching a table (or a partitioned table with partitions of its own) captures its
    // writes from then on, and the SIEM is told: otherwise the owner could write to a
    // tracked table's data unseen through a partition attached after track().
    owner
        .batch_execute(
            "ALTER TABLE m ATTACH PARTITION m1 FOR VALUES FROM (0) TO (100);
             CREATE TABLE m2 (id int) PARTITION BY RANGE (id);
             CREATE TABLE m2a PARTITION OF m2 FOR VALUES FROM (100) TO (150);
             ALTER TABLE m ATTACH PARTITION m2 FOR VALUES FROM (100) TO (200);
             INSERT INTO m1 VALUES (2); INSERT INTO m2a VALUES (120); INSERT INTO m2 VALUES (130);",
        )
        .unwrap();
    assert_eq!(inserted(&mut su), ["m1", "m2a", "m2"]);
    let attached: Vec<String> = su
        .query(
            "SELECT table_name FROM pgaudit_siem.outbox WHERE action = 'track_partition' ORDER BY table_name",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(attached, ["m1", "m2", "m2a"]);
    cluster.assert_no_crash();
}

#[test]
fn only_the_superuser_controls_the_session_audit_stream_and_its_secrets() {
    let receiver = Receiver::start(0, None).unwrap();
    let headers = std::env::temp_dir().join(format!(
        "pgaudit_siem_stream_headers_{}",
        std::process::id()
    ));
    std::fs::write(
        &headers,
        "# the platform's token\nAuthorization: Bearer s3cret-stream-token\n",
    )
    .unwrap();
    server_owned(&headers, 0o600);
    let cluster = builder("sec-stream")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting(
            "pgaudit_siem.session_audit_url",
            &format!("'{}'", receiver.url("/stream")),
        )
        .setting(
            "pgaudit_siem.session_audit_headers_file",
            &format!("'{}'", headers.display()),
        )
        .start_logged();
    let mut su = cluster.connect();
    su.batch_execute("CREATE ROLE avnadmin LOGIN CREATEROLE; CREATE ROLE app_user LOGIN")
        .unwrap();
    su.batch_execute("CREATE DATABASE defaultdb OWNER avnadmin")
        .unwrap();
    cluster
        .connect_as("defaultdb", "postgres")
        .batch_execute("CREATE EXTENSION pgaudit_siem; GRANT pgaudit_admin TO avnadmin")
        .unwrap();
    // The database owner and delegated admin, and any login role: none can switch the
    // stream off, redirect it, read its URL or headers file, or see the stats' helpers.
    for role in ["avnadmin", "app_user"] {
        let mut c = cluster.connect_as("defaultdb", role);
        for attack in [
            "SET pgaudit_siem.session_audit_server_log = off",
            "SET pgaudit_siem.session_audit_url = ''",
            "ALTER DATABASE defaultdb SET pgaudit_siem.session_audit_url = 'http://127.0.0.1:9/'",
            "ALTER ROLE app_user SET pgaudit_siem.session_audit_server_log = off",
            "SHOW pgaudit_siem.session_audit_url",
            "SHOW pgaudit_siem.session_audit_headers_file",
            // The hash chain's key: neither where it is nor another one.
            "SHOW pgaudit_siem.chain_key_file",
            "SELECT pg_catalog.current_setting('pgaudit_siem.chain_key_file')",
            "SET pgaudit_siem.chain_key_file = '/tmp/my-own-key'",
            "ALTER ROLE app_user SET pgaudit_siem.chain_key_file = '/tmp/my-own-key'",
            "ALTER DATABASE defaultdb SET pgaudit_siem.chain_key_file = ''",
            "SELECT pg_catalog.pg_read_file(pg_catalog.current_setting('data_directory') || '/pgaudit_siem_spool/identity')",
        ] {
            assert!(c.batch_execute(attack).is_err(), "{role}: {attack}");
        }
        c.batch_execute(&format!("SELECT 'after the attacks of {role}'"))
            .unwrap();
    }
    let mut app = cluster.connect_as("defaultdb", "app_user");
    for attack in [
        "SELECT * FROM pgaudit_siem.session_audit_stats",
        "SELECT * FROM pgaudit_siem._session_audit_stats()",
        "SELECT pgaudit_siem._acts_as_admin(10)",
    ] {
        assert_eq!(
            code(app.batch_execute(attack)),
            SqlState::INSUFFICIENT_PRIVILEGE,
            "{attack}"
        );
    }
    // Hostile session values stay inside their JSON strings.
    app.batch_execute("SET application_name = 'x\",\"line\":\"forged'; SELECT 'tagged'")
        .unwrap();
    wait_until(
        "every role's statements in the stream",
        Duration::from_secs(30),
        || {
            let lines: Vec<String> = receiver
                .events()
                .iter()
                .filter_map(|r| r.event["line"].as_str().map(str::to_owned))
                .collect();
            [
                "after the attacks of avnadmin",
                "after the attacks of app_user",
                "'tagged'",
            ]
            .iter()
            .all(|m| lines.iter().any(|l| l.contains(m)))
        },
    );
    let tagged = receiver
        .events()
        .into_iter()
        .find(|r| {
            r.event["line"]
                .as_str()
                .is_some_and(|l| l.contains("'tagged'"))
        })
        .unwrap();
    assert_eq!(
        tagged.event["session"]["application_name"],
        "x\",\"line\":\"forged"
    );
    // The token went to the SIEM, and nowhere an admin or the log could read it.
    assert!(tagged
        .headers
        .iter()
        .any(|(n, v)| n == "authorization" && v == "Bearer s3cret-stream-token"));
    let mut admin = cluster.connect_as("defaultdb", "avnadmin");
    let stats: String = admin
        .query_one(
            "SELECT row_to_json(s)::text FROM pgaudit_siem.session_audit_stats s",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!stats.contains("s3cret"), "{stats}");
    assert!(!cluster.server_log().contains("s3cret-stream-token"));
    // A headers file others may read is refused, and the stream pauses with a WARNING.
    server_owned(&headers, 0o644);
    cluster.reload_config();
    wait_until("the refusal", Duration::from_secs(30), || {
        cluster
            .server_log()
            .contains("must not be accessible to group or others")
    });
    cluster.assert_no_crash();
    let _ = std::fs::remove_file(&headers);
}
