//! Session audit behaviour that pgAudit does not have, so no differential test can
//! cover it: the master switch at every scope, log_nested_statements,
//! log_max_string_length, and parallel workers. Runs on real clusters.

use pgaudit_siem_tests::Cluster;

fn cluster() -> Cluster {
    let cluster = Cluster::builder()
        .name("session")
        .preload("pgaudit_siem")
        .start_logged();
    for db in ["template1", "postgres"] {
        cluster
            .connect_as(db, "postgres")
            .batch_execute("CREATE EXTENSION pgaudit_siem")
            .unwrap();
    }
    cluster
}

/// Runs `statements`; `SELECT pg_reload_conf()` waits until the reload is applied.
fn sql(cluster: &Cluster, statements: &[&str]) {
    let mut c = cluster.connect();
    for s in statements {
        if *s == "SELECT pg_reload_conf()" {
            cluster.reload_config();
            continue;
        }
        c.batch_execute(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
}

#[test]
fn nothing_is_logged_while_the_master_switch_is_off() {
    let cluster = cluster();
    sql(
        &cluster,
        &[
            "ALTER SYSTEM SET pgaudit.log = 'all'",
            "ALTER SYSTEM SET pgaudit.role = 'auditor'",
            "SELECT pg_reload_conf()",
        ],
    );
    sql(
        &cluster,
        &[
            "CREATE ROLE auditor",
            "CREATE TABLE t (id int)",
            "GRANT SELECT ON t TO auditor",
        ],
    );
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("SELECT * FROM t; INSERT INTO t VALUES (1); CREATE TABLE u (id int); DO $$BEGIN PERFORM 1; END$$; SET work_mem = '2MB'")
            .unwrap();
    });
    assert_eq!(lines, Vec::<String>::new());
    // Switching it on in a session (superuser): the SET itself is not logged (deviation
    // D9), what follows is.
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("SET pgaudit.featureEnabled = on").unwrap();
        c.batch_execute("SELECT 1").unwrap();
    });
    assert_eq!(
        lines,
        vec!["SESSION,1,1,READ,SELECT,,,SELECT 1,<not logged>"]
    );
    // Turned on for the server: the same statements are audited on a new connection.
    sql(
        &cluster,
        &[
            "ALTER SYSTEM SET pgaudit.featureEnabled = on",
            "SELECT pg_reload_conf()",
        ],
    );
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.batch_execute("SELECT * FROM t").unwrap();
    });
    assert_eq!(
        lines,
        vec![
            "OBJECT,1,1,READ,SELECT,TABLE,public.t,SELECT * FROM t,<not logged>".to_owned(),
            "SESSION,1,1,READ,SELECT,,,SELECT * FROM t,<not logged>".to_owned(),
        ]
        .into_iter()
        .rev()
        .collect::<Vec<_>>()
    );
}

#[test]
fn master_switch_follows_postgres_scope_precedence() {
    let cluster = cluster();
    sql(&cluster, &["CREATE DATABASE d1", "CREATE DATABASE d2"]);
    sql(
        &cluster,
        &[
            "CREATE ROLE r1 LOGIN SUPERUSER",
            "ALTER SYSTEM SET pgaudit.log = 'read'",
            "SELECT pg_reload_conf()",
            // database on, role off, role-in-database on again
            "ALTER DATABASE d1 SET pgaudit.featureEnabled = 'on'",
            "ALTER ROLE r1 SET pgaudit.featureEnabled = 'off'",
            "ALTER ROLE r1 IN DATABASE d2 SET pgaudit.featureEnabled = 'on'",
            "ALTER ROLE r1 IN DATABASE d2 SET pgaudit.log = 'write'",
        ],
    );
    let run = |db: &str, user: &str| {
        cluster.session_audit(db, user, |c| {
            c.batch_execute("CREATE TEMP TABLE x (i int); INSERT INTO x VALUES (1); SELECT 1")
                .unwrap();
        })
    };
    // postgres/postgres: switch off everywhere (system default).
    assert!(run("postgres", "postgres").is_empty());
    // d1/postgres: database scope turns it on; system pgaudit.log = read applies.
    assert_eq!(run("d1", "postgres"), vec!["SESSION,1,1,READ,SELECT,,,CREATE TEMP TABLE x (i int); INSERT INTO x VALUES (1); SELECT 1,<not logged>"]);
    // d1/r1: the role scope (off) beats the database scope (on).
    assert!(run("d1", "r1").is_empty());
    // d2/r1: role-in-database beats role, and its pgaudit.log beats the system's.
    assert_eq!(run("d2", "r1"), vec!["SESSION,1,1,WRITE,INSERT,,,CREATE TEMP TABLE x (i int); INSERT INTO x VALUES (1); SELECT 1,<not logged>"]);
    // d2/postgres: nothing set for this pair: off.
    assert!(run("d2", "postgres").is_empty());
}

#[test]
fn nested_statements_can_be_left_out() {
    let cluster = cluster();
    sql(&cluster, &[
        "ALTER SYSTEM SET pgaudit.featureEnabled = on",
        "ALTER SYSTEM SET pgaudit.log = 'read, write, function, ddl'",
        "SELECT pg_reload_conf()",
        "CREATE TABLE n (id int)",
        "CREATE TABLE n_log (id int)",
        "CREATE FUNCTION nf(a int) RETURNS int LANGUAGE plpgsql AS $$BEGIN INSERT INTO n VALUES (a); RETURN a; END$$",
        "CREATE FUNCTION n_trg() RETURNS trigger LANGUAGE plpgsql AS $$BEGIN INSERT INTO n_log VALUES (NEW.id); RETURN NEW; END$$",
        "CREATE TRIGGER n_after AFTER INSERT ON n FOR EACH ROW EXECUTE FUNCTION n_trg()",
    ]);
    let workload = |c: &mut pgaudit_siem_tests::postgres::Client| {
        c.batch_execute("SELECT nf(1)").unwrap();
        c.batch_execute("DO $$BEGIN INSERT INTO n VALUES (2); PERFORM 1; END$$")
            .unwrap();
        c.batch_execute("INSERT INTO n VALUES (3)").unwrap();
        c.batch_execute("CREATE TABLE n_ctas AS SELECT * FROM n")
            .unwrap();
    };
    let all = cluster.session_audit("postgres", "postgres", workload);
    sql(
        &cluster,
        &[
            "DROP TABLE n_ctas",
            "ALTER SYSTEM SET pgaudit.log_nested_statements = off",
            "SELECT pg_reload_conf()",
        ],
    );
    let top = cluster.session_audit("postgres", "postgres", workload);
    // With nesting on, bodies of functions, DO blocks and triggers are there...
    assert!(
        all.iter().any(|l| l.contains("INSERT INTO n VALUES (a)")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|l| l.contains("INSERT INTO n_log VALUES (NEW.id)")),
        "{all:#?}"
    );
    // ...and with it off only what the client sent, with contiguous substatement ids.
    assert_eq!(
        top,
        vec![
            "SESSION,1,1,READ,SELECT,,,SELECT nf(1),<not logged>",
            "SESSION,1,2,FUNCTION,EXECUTE,FUNCTION,public.nf,SELECT nf(1),<not logged>",
            "SESSION,2,1,FUNCTION,DO,,,DO $$BEGIN INSERT INTO n VALUES (2); PERFORM 1; END$$,<not logged>",
            "SESSION,3,1,WRITE,INSERT,,,INSERT INTO n VALUES (3),<not logged>",
            "SESSION,4,1,READ,SELECT,,,CREATE TABLE n_ctas AS SELECT * FROM n,<not logged>",
            "SESSION,4,2,DDL,CREATE TABLE AS,TABLE,public.n_ctas,CREATE TABLE n_ctas AS SELECT * FROM n,<not logged>",
        ]
    );
}

#[test]
fn long_statements_and_parameters_are_cut_on_character_boundaries() {
    let cluster = cluster();
    sql(
        &cluster,
        &[
            "ALTER SYSTEM SET pgaudit.featureEnabled = on",
            "ALTER SYSTEM SET pgaudit.log = 'read'",
            "ALTER SYSTEM SET pgaudit.log_parameter = on",
            "ALTER SYSTEM SET pgaudit.log_max_string_length = 12",
            "SELECT pg_reload_conf()",
        ],
    );
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        c.query("SELECT $1::text AS long_name", &[&"ééééééé, and more"])
            .unwrap();
        c.batch_execute("SELECT 1").unwrap();
    });
    assert_eq!(
        lines,
        vec![
            // 12 bytes of text; the parameter's 7th "é" would straddle byte 12.
            "SESSION,1,1,READ,SELECT,,,SELECT $1::t<truncated>,éééééé<truncated>",
            "SESSION,2,1,READ,SELECT,,,SELECT 1,<none>",
        ]
    );
}

#[test]
fn parallel_workers_never_log() {
    let cluster = cluster();
    sql(
        &cluster,
        &[
            "ALTER SYSTEM SET pgaudit.featureEnabled = on",
            "ALTER SYSTEM SET pgaudit.log = 'read, function'",
            "ALTER SYSTEM SET force_parallel_mode = on",
            "ALTER SYSTEM SET parallel_setup_cost = 0",
            "ALTER SYSTEM SET parallel_tuple_cost = 0",
            "SELECT pg_reload_conf()",
            "CREATE TABLE p AS SELECT g AS id FROM generate_series(1, 1000) g",
            "ANALYZE p",
        ],
    );
    let lines = cluster.session_audit("postgres", "postgres", |c| {
        let plan: Vec<String> = c
            .query("EXPLAIN (COSTS OFF) SELECT count(*) FROM p", &[])
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        assert!(
            plan.iter().any(|l| l.contains("Gather")),
            "not a parallel plan: {plan:?}"
        );
        c.batch_execute("SELECT count(*) FROM p").unwrap();
    });
    let selects: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains(",SELECT count(*) FROM p,"))
        .collect();
    assert_eq!(
        selects,
        vec!["SESSION,2,1,READ,SELECT,,,SELECT count(*) FROM p,<not logged>"]
    );
}

#[test]
fn audit_survives_errors_savepoints_and_cursors_without_stack_errors() {
    let cluster = cluster();
    sql(
        &cluster,
        &[
            "ALTER SYSTEM SET pgaudit.featureEnabled = on",
            "ALTER SYSTEM SET pgaudit.log = 'all'",
            "SELECT pg_reload_conf()",
        ],
    );
    let records = cluster.session_log("postgres", "postgres", |c| {
        for s in [
            "CREATE TABLE e (id int PRIMARY KEY)",
            "BEGIN",
            "DECLARE cur CURSOR FOR SELECT * FROM generate_series(1, 10)",
            "FETCH 2 FROM cur",
            "SAVEPOINT a",
            "INSERT INTO e VALUES (1)",
            "INSERT INTO e VALUES (1)",
            "ROLLBACK TO SAVEPOINT a",
            "FETCH 2 FROM cur",
            "COMMIT",
            "DO $$BEGIN RAISE EXCEPTION 'boom'; END$$",
            "SELECT 1",
        ] {
            let _ = c.batch_execute(s);
        }
    });
    assert!(
        !records.iter().any(|r| r.message.contains("pgaudit stack")),
        "{records:#?}"
    );
    let last = records
        .iter()
        .rev()
        .find(|r| r.message.starts_with("AUDIT: "))
        .unwrap();
    assert!(
        last.message.ends_with(",MISC,???,,,SELECT 1,<not logged>")
            || last
                .message
                .ends_with(",READ,SELECT,,,SELECT 1,<not logged>"),
        "{}",
        last.message
    );
}
