//! Delegated configuration, as the platform admin of the user's guide does it: a role
//! like `avnadmin` that owns the database, has CREATEROLE, is a member of pgaudit_admin,
//! and is not a superuser. Every statement of the guide, verbatim, with real names.

use std::time::Duration;

use pgaudit_siem_tests::postgres::error::SqlState;
use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::Cluster;

/// A cluster with the extension, `avnadmin` (delegated admin), `defaultdb` owned by it,
/// and an application role `app_user`.
fn platform() -> Cluster {
    let cluster = Cluster::builder()
        .name("delegated")
        .preload("pgaudit_siem")
        .start_logged();
    let mut su = cluster.connect();
    for s in [
        "CREATE ROLE avnadmin LOGIN CREATEROLE",
        "CREATE DATABASE defaultdb OWNER avnadmin",
        "CREATE ROLE app_user LOGIN",
        "CREATE ROLE other_admin LOGIN CREATEROLE",
    ] {
        su.batch_execute(s).unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let mut db = cluster.connect_as("defaultdb", "postgres");
    db.batch_execute(
        "CREATE EXTENSION pgaudit_siem;
         GRANT pgaudit_admin TO avnadmin;
         GRANT pgaudit_admin TO other_admin;
         CREATE TABLE public.orders (id int, item text);
         GRANT ALL ON public.orders TO app_user;
         GRANT CREATE ON SCHEMA public TO app_user;",
    )
    .unwrap();
    cluster
}

fn admin(cluster: &Cluster) -> Client {
    cluster.connect_as("defaultdb", "avnadmin")
}

fn settings_snapshot(cluster: &Cluster) -> Vec<(String, String, Vec<String>)> {
    cluster
        .connect()
        .query(
            "SELECT coalesce(d.datname, '*'), coalesce(r.rolname, '*'), s.setconfig
               FROM pg_db_role_setting s
               LEFT JOIN pg_database d ON d.oid = s.setdatabase
               LEFT JOIN pg_roles r ON r.oid = s.setrole
              ORDER BY 1, 2",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

fn app_session(cluster: &Cluster) -> Vec<String> {
    cluster.session_audit("defaultdb", "app_user", |c| {
        c.batch_execute("SELECT * FROM orders").unwrap();
        c.batch_execute("INSERT INTO orders VALUES (1, 'book')")
            .unwrap();
        c.batch_execute("CREATE TABLE app_t (id int)").unwrap();
        c.batch_execute("DROP TABLE app_t").unwrap();
    })
}

#[test]
fn every_statement_of_the_guide_works_for_the_delegated_admin() {
    let cluster = platform();
    let mut admin = admin(&cluster);
    assert!(
        app_session(&cluster).is_empty(),
        "auditing is off until enabled"
    );

    // "Enable on a database", exactly as the guide spells it (lower-case `set`).
    admin
        .batch_execute("ALTER DATABASE defaultdb set pgaudit.featureEnabled = 'on'")
        .unwrap();
    // "Configure session audit logging".
    let reply: String = admin
        .query_one(
            "SELECT aiven_extras.set_pgaudit_parameter('log', 'defaultdb', 'read, ddl');",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(reply.contains("new connections"), "{reply}");
    // INSERT is WRITE, not enabled, so it consumes no statement id.
    assert_eq!(
        app_session(&cluster),
        vec![
            "SESSION,1,1,READ,SELECT,,,SELECT * FROM orders,<not logged>",
            "SESSION,2,1,DDL,CREATE TABLE,TABLE,public.app_t,CREATE TABLE app_t (id int),<not logged>",
            "SESSION,3,1,DDL,DROP TABLE,TABLE,public.app_t,DROP TABLE app_t,<not logged>",
        ]
    );

    // "Configure on a database": any pgaudit.log_* setting.
    admin
        .batch_execute("ALTER DATABASE defaultdb SET pgaudit.log_relation = on")
        .unwrap();
    admin
        .batch_execute("ALTER DATABASE defaultdb SET pgaudit.log_rows = on")
        .unwrap();
    let lines = app_session(&cluster);
    assert_eq!(
        lines[0],
        "SESSION,1,1,READ,SELECT,TABLE,public.orders,SELECT * FROM orders,<not logged>,2"
    ); // two rows inserted by the sessions above

    // "Enable for a user" / "on a DB for a user" and the matching log_* forms.
    admin
        .batch_execute("ALTER ROLE app_user SET pgaudit.featureEnabled = 'on'")
        .unwrap();
    admin
        .batch_execute(
            "ALTER ROLE app_user IN DATABASE defaultdb SET pgaudit.featureEnabled = 'on'",
        )
        .unwrap();
    admin
        .batch_execute("ALTER ROLE app_user SET pgaudit.log_statement = off")
        .unwrap();
    admin
        .batch_execute(
            "ALTER ROLE app_user IN DATABASE defaultdb SET pgaudit.log_statement_once = on",
        )
        .unwrap();
    admin
        .query_one(
            "SELECT aiven_extras.set_pgaudit_role_parameter('log', 'app_user', 'write')",
            &[],
        )
        .unwrap();
    admin
        .query_one("SELECT aiven_extras.set_pgaudit_role_in_database_parameter('log_rows', 'app_user', 'defaultdb', 'off')", &[])
        .unwrap();
    // Role scope beats database scope: app_user now logs WRITE only, without text or rows.
    assert_eq!(
        app_session(&cluster),
        vec!["SESSION,1,1,WRITE,INSERT,TABLE,public.orders,<not logged>,<not logged>"]
    );

    // "Disable ... with SQL", both scopes.
    admin
        .batch_execute(
            "ALTER ROLE app_user IN DATABASE defaultdb SET pgaudit.featureEnabled = 'off'",
        )
        .unwrap();
    assert!(
        app_session(&cluster).is_empty(),
        "role-in-database off beats role on and database on"
    );
    admin
        .batch_execute("ALTER ROLE app_user IN DATABASE defaultdb RESET pgaudit.featureEnabled")
        .unwrap();
    admin
        .batch_execute("ALTER DATABASE defaultdb set pgaudit.featureEnabled = 'off'")
        .unwrap();
    admin
        .batch_execute("ALTER ROLE app_user RESET pgaudit.featureEnabled")
        .unwrap();
    assert!(app_session(&cluster).is_empty());

    // Every delegated change is in the server log whatever the audit settings.
    let records = cluster.log_records();
    let delegated: Vec<_> = records
        .iter()
        .filter(|r| {
            r.message
                .contains("delegated configuration by role \"avnadmin\"")
        })
        .collect();
    assert!(delegated.len() >= 12, "{delegated:#?}");
}

#[test]
fn delegated_changes_are_audit_logged_when_auditing_is_on() {
    let cluster = platform();
    let mut su = cluster.connect_as("defaultdb", "postgres");
    su.batch_execute("ALTER ROLE avnadmin SET pgaudit.featureEnabled = on")
        .unwrap();
    su.batch_execute("ALTER ROLE avnadmin SET pgaudit.log = 'role, ddl, function'")
        .unwrap();
    let lines = cluster.session_audit("defaultdb", "avnadmin", |c| {
        c.batch_execute("ALTER ROLE app_user SET pgaudit.log = 'read'")
            .unwrap();
        c.query_one(
            "SELECT aiven_extras.set_pgaudit_parameter('log_catalog', 'defaultdb', 'off')",
            &[],
        )
        .unwrap();
    });
    assert_eq!(
        lines[0],
        "SESSION,1,1,ROLE,ALTER ROLE,,,ALTER ROLE app_user SET pgaudit.log = 'read',<not logged>"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("FUNCTION,EXECUTE,FUNCTION,aiven_extras.set_pgaudit_parameter")),
        "{lines:#?}"
    );
    // The call is in the trail with its arguments; the ALTER DATABASE the extension runs
    // for it is its own statement (recorded by the LOG line) and takes no line or id.
    assert!(
        lines
            .iter()
            .any(|l| l
                .contains("aiven_extras.set_pgaudit_parameter('log_catalog', 'defaultdb', 'off')")),
        "{lines:#?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l.contains("ALTER DATABASE") || l.contains("apply_delegated_setting")),
        "{lines:#?}"
    );
    cluster.wait_for_log(Duration::from_secs(10), |r| {
        r.message.contains("delegated configuration by role \"avnadmin\": set pgaudit.log_catalog = 'off' for database \"defaultdb\"")
    });
}

#[test]
fn precedence_of_scopes_is_postgres_own() {
    let cluster = platform();
    let mut admin = admin(&cluster);
    cluster.alter_system(&[("pgaudit.log", "'misc'")]);
    for s in [
        "ALTER DATABASE defaultdb SET pgaudit.featureEnabled = 'on'",
        "ALTER DATABASE defaultdb SET pgaudit.log = 'read'",
        "ALTER ROLE app_user SET pgaudit.log = 'write'",
        "ALTER ROLE app_user IN DATABASE defaultdb SET pgaudit.log = 'ddl'",
    ] {
        admin
            .batch_execute(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    let show = |db: &str, user: &str| -> (String, String) {
        let mut c = cluster.connect_as(db, user);
        (
            c.query_one("SHOW pgaudit.featureEnabled", &[])
                .unwrap()
                .get(0),
            c.query_one("SHOW pgaudit.log", &[]).unwrap().get(0),
        )
    };
    assert_eq!(show("postgres", "app_user"), ("off".into(), "write".into())); // role > system
    assert_eq!(show("defaultdb", "avnadmin"), ("on".into(), "read".into())); // database > system
    assert_eq!(show("defaultdb", "app_user"), ("on".into(), "ddl".into())); // role in database > role > database
    assert_eq!(show("postgres", "postgres"), ("off".into(), "misc".into())); // system
}

#[test]
fn refusals_are_clear_and_change_nothing() {
    let cluster = platform();
    cluster
        .connect()
        .batch_execute("CREATE ROLE su_role SUPERUSER")
        .unwrap();
    let mut admin = admin(&cluster);
    let before = settings_snapshot(&cluster);
    let cases: Vec<(&str, SqlState, &str)> = vec![
        ("SELECT aiven_extras.set_pgaudit_parameter('log_client', 'defaultdb', 'on')", SqlState::INVALID_PARAMETER_VALUE, "Invalid parameter: log_client"),
        ("SELECT aiven_extras.set_pgaudit_parameter('LOG_LEVEL', 'defaultdb', 'notice')", SqlState::INVALID_PARAMETER_VALUE, "Invalid parameter: LOG_LEVEL"),
        ("SELECT aiven_extras.set_pgaudit_parameter('role', 'defaultdb', 'x')", SqlState::INVALID_PARAMETER_VALUE, "Invalid parameter: role"),
        ("SELECT aiven_extras.set_pgaudit_parameter('shared_preload_libraries', 'defaultdb', '')", SqlState::INVALID_PARAMETER_VALUE, "Invalid parameter: shared_preload_libraries"),
        ("SELECT aiven_extras.set_pgaudit_parameter('log', 'nosuchdb', 'read')", SqlState::INVALID_CATALOG_NAME, "database \"nosuchdb\" does not exist"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('log', 'nosuchrole', 'read')", SqlState::UNDEFINED_OBJECT, "role \"nosuchrole\" does not exist"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('log', 'su_role', 'read')", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring superuser roles not allowed: su_role"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('log', 'postgres', 'none')", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring superuser roles not allowed: postgres"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('featureEnabled', 'avnadmin', 'off')", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring your own role or a role you are a member of is not allowed: avnadmin"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('featureEnabled', 'pgaudit_admin', 'off')", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring your own role or a role you are a member of is not allowed: pgaudit_admin"),
        ("SELECT aiven_extras.set_pgaudit_parameter(NULL, 'defaultdb', 'read')", SqlState::NULL_VALUE_NOT_ALLOWED, "parameter and value must not be NULL"),
        ("SELECT aiven_extras.set_pgaudit_parameter('log', NULL, 'read')", SqlState::NULL_VALUE_NOT_ALLOWED, "database must not be NULL"),
        ("SELECT aiven_extras.set_pgaudit_role_parameter('log', NULL, 'read')", SqlState::NULL_VALUE_NOT_ALLOWED, "role must not be NULL"),
        ("SELECT aiven_extras.set_pgaudit_parameter('log', 'defaultdb', 'read, bogus')", SqlState::INVALID_PARAMETER_VALUE, "invalid value for parameter \"pgaudit.log\": \"read, bogus\""),
        ("SELECT aiven_extras.set_pgaudit_parameter('log_rows', 'defaultdb', 'perhaps')", SqlState::INVALID_PARAMETER_VALUE, "parameter \"pgaudit.log_rows\" requires a Boolean value"),
        ("ALTER DATABASE defaultdb SET pgaudit.log_client = on", SqlState::INSUFFICIENT_PRIVILEGE, "permission denied to set parameter \"pgaudit.log_client\""),
        ("ALTER DATABASE defaultdb SET pgaudit.role = 'x'", SqlState::INSUFFICIENT_PRIVILEGE, "permission denied to set parameter \"pgaudit.role\""),
        ("ALTER ROLE avnadmin SET pgaudit.featureEnabled = 'off'", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring your own role or a role you are a member of is not allowed: avnadmin"),
        ("ALTER ROLE su_role SET pgaudit.log = 'none'", SqlState::INSUFFICIENT_PRIVILEGE, "Configuring superuser roles not allowed: su_role"),
        ("ALTER DATABASE postgres SET pgaudit.featureEnabled = 'off'", SqlState::INSUFFICIENT_PRIVILEGE, "must be owner of database postgres"),
        ("ALTER DATABASE defaultdb SET pgaudit.log = 'read,,write'", SqlState::INVALID_PARAMETER_VALUE, "invalid value for parameter \"pgaudit.log\": \"read,,write\""),
        ("SET pgaudit.featureEnabled = off", SqlState::INSUFFICIENT_PRIVILEGE, "permission denied to set parameter \"pgaudit.featureenabled\""),
        ("SET pgaudit.log = 'none'", SqlState::INSUFFICIENT_PRIVILEGE, "permission denied to set parameter \"pgaudit.log\""),
        ("SELECT pgaudit_siem.apply_delegated_setting('log', NULL, 'defaultdb', 'none', 'database')", SqlState::INSUFFICIENT_PRIVILEGE, "permission denied for function apply_delegated_setting"),
    ];
    let mut wrong = Vec::new();
    for (sql, code, message) in &cases {
        match admin.batch_execute(sql) {
            Ok(()) => wrong.push(format!("{sql}: succeeded")),
            Err(e) => {
                let db = e.as_db_error().unwrap();
                if db.code() != code || db.message() != *message {
                    wrong.push(format!("{sql}: {} {}", db.code().code(), db.message()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(settings_snapshot(&cluster), before);
}

#[test]
fn public_and_unprivileged_roles_are_denied() {
    let cluster = platform();
    let mut app = cluster.connect_as("defaultdb", "app_user");
    let before = settings_snapshot(&cluster);
    for sql in [
        "SELECT aiven_extras.set_pgaudit_parameter('log', 'defaultdb', 'none')",
        "SELECT aiven_extras.set_pgaudit_role_parameter('log', 'app_user', 'none')",
        "SELECT aiven_extras.set_pgaudit_role_in_database_parameter('log', 'app_user', 'defaultdb', 'none')",
        "ALTER ROLE app_user SET pgaudit.featureEnabled = 'off'",
        "SET pgaudit.featureEnabled = off",
    ] {
        let err = app.batch_execute(sql).unwrap_err();
        assert_eq!(err.as_db_error().unwrap().code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{sql}: {err}");
    }
    let n: i64 = cluster
        .connect_as("defaultdb", "postgres")
        .query_one(
            "SELECT count(*) FROM information_schema.routine_privileges WHERE routine_schema = 'aiven_extras' AND grantee = 'PUBLIC'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(n, 0);
    assert_eq!(settings_snapshot(&cluster), before);
}

#[test]
fn injection_and_search_path_attacks_change_nothing_else() {
    let cluster = platform();
    let mut su = cluster.connect();
    su.batch_execute(r#"CREATE DATABASE "x""; ALTER ROLE avnadmin SUPERUSER; --" OWNER avnadmin"#)
        .unwrap();
    su.batch_execute(r#"CREATE ROLE "r""; ALTER ROLE avnadmin SUPERUSER; --""#)
        .unwrap();
    let mut admin = admin(&cluster);
    // Shadow everything the functions could resolve through search_path.
    admin
        .batch_execute(
            "CREATE SCHEMA evil;
             CREATE FUNCTION evil.quote_ident(text) RETURNS text LANGUAGE sql AS $$ SELECT 'defaultdb SET pgaudit.log = ''none''; --' $$;
             CREATE FUNCTION evil.format(text, VARIADIC text[]) RETURNS text LANGUAGE sql AS $$ SELECT 'SELECT 1' $$;
             CREATE FUNCTION evil.lower(text) RETURNS text LANGUAGE sql AS $$ SELECT 'log' $$;
             CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = pg_catalog.textne);
             SET search_path = evil, public, pg_catalog;",
        )
        .unwrap();
    let db_name = r#"x"; ALTER ROLE avnadmin SUPERUSER; --"#;
    let role_name = r#"r"; ALTER ROLE avnadmin SUPERUSER; --"#;
    let value = "read'; ALTER ROLE avnadmin SUPERUSER; --";
    admin
        .query(
            "SELECT aiven_extras.set_pgaudit_parameter('log_statement', $1, 'off')",
            &[&db_name],
        )
        .unwrap();
    admin
        .query(
            "SELECT aiven_extras.set_pgaudit_role_parameter('log_rows', $1, 'on')",
            &[&role_name],
        )
        .unwrap();
    let err = admin
        .query(
            "SELECT aiven_extras.set_pgaudit_parameter('log', 'defaultdb', $1)",
            &[&value],
        )
        .unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &SqlState::INVALID_PARAMETER_VALUE
    );
    let err = admin.query("SELECT aiven_extras.set_pgaudit_parameter('log; DROP TABLE orders', 'defaultdb', 'read')", &[]).unwrap_err();
    assert_eq!(
        err.as_db_error().unwrap().message(),
        "Invalid parameter: log; DROP TABLE orders"
    );
    let superuser: bool = cluster
        .connect()
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'avnadmin'",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!superuser, "injection made avnadmin a superuser");
    let snapshot = settings_snapshot(&cluster);
    assert_eq!(
        snapshot,
        vec![
            (
                "*".to_owned(),
                role_name.to_owned(),
                vec!["pgaudit.log_rows=on".to_owned()]
            ),
            (
                db_name.to_owned(),
                "*".to_owned(),
                vec!["pgaudit.log_statement=off".to_owned()]
            ),
        ]
    );
    let orders: i64 = cluster
        .connect_as("defaultdb", "postgres")
        .query_one(
            "SELECT count(*) FROM pg_class WHERE relname = 'orders'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(orders, 1);
}
