//! Foundation: loading rules, the settings catalogue and the harness itself, on real
//! PostgreSQL 15 clusters.

use std::time::Duration;

use pgaudit_siem_tests::postgres::error::SqlState;
use pgaudit_siem_tests::{wait_until, Cluster};

fn siem_cluster() -> Cluster {
    Cluster::builder()
        .name("foundation")
        .preload("pgaudit_siem")
        .start()
}

fn db_error(e: &pgaudit_siem_tests::postgres::Error) -> (&SqlState, String, Option<String>) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (
        db.code(),
        db.message().to_owned(),
        db.detail().map(str::to_owned),
    )
}

#[test]
fn refuses_to_load_outside_shared_preload_libraries() {
    let cluster = Cluster::builder().name("nopreload").start();
    let mut client = cluster.connect();
    for sql in ["LOAD 'pgaudit_siem'", "CREATE EXTENSION pgaudit_siem"] {
        let err = client.batch_execute(sql).expect_err(sql);
        let (code, message, _) = db_error(&err);
        assert_eq!(code, &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE, "{sql}");
        assert_eq!(
            message, "pgaudit_siem must be loaded via shared_preload_libraries",
            "{sql}"
        );
        let hint = err.as_db_error().and_then(|d| d.hint()).unwrap_or_default();
        assert!(
            hint.contains("shared_preload_libraries"),
            "{sql}: hint {hint:?}"
        );
    }
    // The failed CREATE EXTENSION created nothing.
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_extension WHERE extname = 'pgaudit_siem'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Nor did the failed LOAD register settings.
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_settings WHERE name = 'pgaudit.featureenabled'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // session_preload_libraries: every new connection is refused with FATAL.
    client
        .batch_execute("ALTER SYSTEM SET session_preload_libraries = 'pgaudit_siem'")
        .unwrap();
    client.batch_execute("SELECT pg_reload_conf()").unwrap();
    // The reload is applied asynchronously: wait until new connections are refused.
    let mut refused = None;
    wait_until(
        "connections refused with session_preload_libraries = pgaudit_siem",
        Duration::from_secs(10),
        || {
            refused = cluster.try_connect_as("postgres", "postgres", "late").err();
            refused.is_some()
        },
    );
    let err = refused.unwrap();
    let (code, message, _) = db_error(&err);
    assert_eq!(code, &SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert_eq!(
        message,
        "pgaudit_siem must be loaded via shared_preload_libraries"
    );
}

#[test]
fn preloaded_library_registers_every_setting() {
    let cluster = siem_cluster();
    let mut client = cluster.connect();
    let rows = client
        .query(
            "SELECT name, setting, vartype, context, min_val, max_val
               FROM pg_settings WHERE name LIKE 'pgaudit.%' ORDER BY name",
            &[],
        )
        .unwrap();
    let got: Vec<(
        String,
        String,
        String,
        String,
        Option<String>,
        Option<String>,
    )> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)))
        .collect();
    let row = |n: &str, s: &str, t: &str| {
        (
            n.to_owned(),
            s.to_owned(),
            t.to_owned(),
            "superuser".to_owned(),
            None,
            None,
        )
    };
    let expected = vec![
        row("pgaudit.featureEnabled", "off", "bool"),
        row("pgaudit.log", "none", "string"),
        row("pgaudit.log_catalog", "on", "bool"),
        row("pgaudit.log_client", "off", "bool"),
        row("pgaudit.log_level", "log", "string"),
        (
            "pgaudit.log_max_string_length".into(),
            "-1".into(),
            "integer".into(),
            "superuser".into(),
            Some("-1".into()),
            Some("2147483647".into()),
        ),
        row("pgaudit.log_nested_statements", "on", "bool"),
        row("pgaudit.log_parameter", "off", "bool"),
        row("pgaudit.log_relation", "off", "bool"),
        row("pgaudit.log_rows", "off", "bool"),
        row("pgaudit.log_statement", "on", "bool"),
        row("pgaudit.log_statement_once", "off", "bool"),
        row("pgaudit.role", "", "string"),
    ];
    assert_eq!(got, expected);
    // _PG_init runs in the postmaster before the logging collector starts.
    assert!(cluster
        .server_log()
        .contains("LOG:  pgaudit_siem extension initialized"));
}

#[test]
fn feature_enabled_accepts_boolean_spellings_and_is_superuser_only() {
    let cluster = siem_cluster();
    let mut su = cluster.connect();
    for (value, shown) in [
        ("on", "on"),
        ("off", "off"),
        ("true", "on"),
        ("false", "off"),
        ("'on'", "on"),
        ("1", "on"),
    ] {
        su.batch_execute(&format!("SET pgaudit.featureEnabled = {value}"))
            .unwrap();
        let got: String = su
            .query_one("SHOW pgaudit.featureenabled", &[])
            .unwrap()
            .get(0);
        assert_eq!(got, shown, "{value}");
    }
    let err = su
        .batch_execute("SET pgaudit.featureEnabled = 'maybe'")
        .unwrap_err();
    let (code, message, _) = db_error(&err);
    assert_eq!(code, &SqlState::INVALID_PARAMETER_VALUE);
    // PostgreSQL names the parameter as the statement spelt it (identifiers fold to lower case).
    assert_eq!(
        message,
        "parameter \"pgaudit.featureenabled\" requires a Boolean value"
    );

    su.batch_execute("CREATE ROLE plain LOGIN").unwrap();
    let mut plain = cluster.connect_as("postgres", "plain");
    for sql in [
        "SET pgaudit.featureEnabled = off",
        "SET pgaudit.log = 'none'",
        "SET pgaudit.log_max_string_length = 10",
    ] {
        let err = plain.batch_execute(sql).unwrap_err();
        let (code, message, _) = db_error(&err);
        assert_eq!(code, &SqlState::INSUFFICIENT_PRIVILEGE, "{sql}");
        assert!(
            message.starts_with("permission denied to set parameter \"pgaudit."),
            "{message}"
        );
    }
}

#[test]
fn invalid_values_are_refused_and_change_nothing() {
    let cluster = siem_cluster();
    let mut su = cluster.connect();
    su.batch_execute("SET pgaudit.log = 'ddl'; SET pgaudit.log_level = 'notice'")
        .unwrap();
    let cases = [
        ("SET pgaudit.log = 'read, bogus'", "invalid value for parameter \"pgaudit.log\": \"read, bogus\"", None),
        ("SET pgaudit.log = 'read write'", "invalid value for parameter \"pgaudit.log\": \"read write\"", Some("List syntax is invalid")),
        ("SET pgaudit.log = 'read,'", "invalid value for parameter \"pgaudit.log\": \"read,\"", Some("List syntax is invalid")),
        ("SET pgaudit.log_level = 'error'", "invalid value for parameter \"pgaudit.log_level\": \"error\"", None),
        ("SET pgaudit.log_level = notice, warning", "invalid value for parameter \"pgaudit.log_level\": \"notice, warning\"", None),
        ("SET pgaudit.log_max_string_length = -2", "-2 is outside the valid range for parameter \"pgaudit.log_max_string_length\" (-1 .. 2147483647)", None),
        ("SET pgaudit.log_nested_statements = 'sometimes'", "parameter \"pgaudit.log_nested_statements\" requires a Boolean value", None),
    ];
    for (sql, message, detail) in cases {
        let err = su.batch_execute(sql).unwrap_err();
        let (code, got, got_detail) = db_error(&err);
        assert_eq!(code, &SqlState::INVALID_PARAMETER_VALUE, "{sql}");
        assert_eq!(got, message, "{sql}");
        assert_eq!(got_detail.as_deref(), detail, "{sql}");
    }
    let log: String = su.query_one("SHOW pgaudit.log", &[]).unwrap().get(0);
    let level: String = su.query_one("SHOW pgaudit.log_level", &[]).unwrap().get(0);
    assert_eq!((log.as_str(), level.as_str()), ("ddl", "notice"));

    // Stored settings are validated too, and a refused one leaves the catalogs alone.
    su.batch_execute("CREATE DATABASE d").unwrap();
    su.batch_execute("CREATE ROLE r").unwrap();
    let before: i64 = su
        .query_one("SELECT count(*) FROM pg_db_role_setting", &[])
        .unwrap()
        .get(0);
    for sql in [
        "ALTER DATABASE d SET pgaudit.log = 'read, bogus'",
        "ALTER ROLE r SET pgaudit.log = 'read,,write'",
        "ALTER ROLE r IN DATABASE d SET pgaudit.log_level = 'fatal'",
        "ALTER SYSTEM SET pgaudit.log = 'bogus'",
    ] {
        let err = su.batch_execute(sql).unwrap_err();
        assert_eq!(
            db_error(&err).0,
            &SqlState::INVALID_PARAMETER_VALUE,
            "{sql}"
        );
    }
    let after: i64 = su
        .query_one("SELECT count(*) FROM pg_db_role_setting", &[])
        .unwrap()
        .get(0);
    assert_eq!(before, after);
    let auto_conf =
        std::fs::read_to_string(cluster.data_dir().join("postgresql.auto.conf")).unwrap();
    assert!(!auto_conf.contains("pgaudit"), "{auto_conf}");
}

#[test]
fn settings_work_at_every_scope() {
    let cluster = siem_cluster();
    let mut su = cluster.connect();
    su.batch_execute("CREATE DATABASE d1").unwrap();
    // One statement per call: ALTER SYSTEM refuses to run in a (implicit) transaction block.
    for sql in [
        "CREATE ROLE r1 LOGIN",
        "ALTER SYSTEM SET pgaudit.log = 'read'",
        "ALTER DATABASE d1 SET pgaudit.log = 'write'",
        "ALTER ROLE r1 SET pgaudit.log = 'ddl'",
        "ALTER ROLE r1 IN DATABASE d1 SET pgaudit.log = 'role'",
        "ALTER DATABASE d1 SET pgaudit.featureEnabled = 'on'",
    ] {
        su.batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }
    cluster.reload_config();
    let show = |db: &str, user: &str| -> (String, String) {
        let mut c = cluster.connect_as(db, user);
        let log: String = c.query_one("SHOW pgaudit.log", &[]).unwrap().get(0);
        let on: String = c
            .query_one("SHOW pgaudit.featureEnabled", &[])
            .unwrap()
            .get(0);
        (log, on)
    };
    assert_eq!(show("postgres", "postgres"), ("read".into(), "off".into()));
    assert_eq!(show("d1", "postgres"), ("write".into(), "on".into()));
    assert_eq!(show("postgres", "r1"), ("ddl".into(), "off".into()));
    assert_eq!(show("d1", "r1"), ("role".into(), "on".into()));
}

#[test]
fn reserved_prefix_rejects_misspelt_settings() {
    let cluster = siem_cluster();
    let mut su = cluster.connect();
    let err = su
        .batch_execute("SET pgaudit.log_relations = on")
        .unwrap_err();
    let (code, message, detail) = db_error(&err);
    assert_eq!(code, &SqlState::INVALID_NAME);
    assert_eq!(
        message,
        "invalid configuration parameter name \"pgaudit.log_relations\""
    );
    assert_eq!(detail.as_deref(), Some("\"pgaudit\" is a reserved prefix."));
}

#[test]
fn binary_upgrade_mode_skips_initialisation() {
    // pg_upgrade starts servers with -b; the library must then do nothing at all.
    let mut cluster = Cluster::builder()
        .name("binup")
        .preload("pgaudit_siem")
        .start();
    cluster.stop("fast");
    std::fs::remove_file(cluster.dir().join("startup.log")).unwrap();
    cluster.start_with_server_options(&["-b"]);
    let mut client = cluster.connect();
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_settings WHERE name LIKE 'pgaudit.%'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "settings registered in binary-upgrade mode");
    assert!(
        !cluster
            .server_log()
            .contains("pgaudit_siem extension initialized"),
        "initialised under binary upgrade:\n{}",
        cluster.server_log()
    );
}

#[test]
fn harness_cleans_up_after_a_failing_test() {
    let leaked = std::sync::Mutex::new(None);
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let cluster = Cluster::builder().name("failing").start();
        *leaked.lock().unwrap() = Some((cluster.dir().to_owned(), cluster.port()));
        let mut client = cluster.connect();
        client.batch_execute("SELECT 1").unwrap();
        panic!("deliberate failure inside a test");
    }));
    assert!(result.is_err());
    let (dir, port) = leaked.lock().unwrap().clone().unwrap();
    assert!(
        !dir.exists(),
        "cluster directory {} left behind",
        dir.display()
    );
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "server on port {port} still accepting connections"
    );
}

#[test]
fn clusters_run_side_by_side() {
    let a = Cluster::builder().name("a").start_logged();
    let b = Cluster::builder().name("b").start();
    assert_ne!(a.port(), b.port());
    a.connect()
        .batch_execute("CREATE TABLE only_in_a (x int)")
        .unwrap();
    let n: i64 = b
        .connect()
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'only_in_a'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    // Several sessions at once on one cluster, each seen in the log by its own name.
    let records = a.session_log("postgres", "postgres", |c| {
        c.batch_execute("SELECT 1").unwrap();
    });
    assert!(
        records
            .iter()
            .any(|r| r.message.starts_with("disconnection:")),
        "{records:?}"
    );
}
