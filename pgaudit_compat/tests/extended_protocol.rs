//! The extended query protocol (Parse/Bind/Execute) on both clusters: bound parameters,
//! prepared statements, suspended portals, CALL with parameters, and pgbench's
//! `-M extended` / `-M prepared` modes.

use pgaudit_compat::{audit_lines, fresh_database, Twins};
use pgaudit_siem_tests::Cluster;

const SETTINGS: [&str; 3] = [
    "pgaudit.log = 'read, write, function, misc'",
    "pgaudit.log_parameter = on",
    "pgaudit.log_rows = off",
];

fn client_workload(cluster: &Cluster) -> Vec<String> {
    let settings: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    fresh_database(cluster, "ext", &settings);
    let records = cluster.session_log("ext", "postgres", |c| {
        c.batch_execute("CREATE TABLE e (id int, v text); CREATE PROCEDURE ep(a int) LANGUAGE plpgsql AS $$BEGIN INSERT INTO e VALUES (a, 'p'); END$$")
            .unwrap();
        c.query("SELECT $1::text, $2::int", &[&"a,b", &None::<i32>]).unwrap();
        c.query("SELECT $1::text", &[&"c\"d"]).unwrap();
        c.query("SELECT $1::text", &[&""]).unwrap();
        c.query("SELECT $1::bytea", &[&vec![0u8, 255u8]]).unwrap();
        c.execute("INSERT INTO e VALUES ($1, $2)", &[&1i32, &"x"]).unwrap();
        let insert = c.prepare("INSERT INTO e VALUES ($1, $2)").unwrap();
        c.execute(&insert, &[&2i32, &"y"]).unwrap();
        c.execute(&insert, &[&3i32, &"multi\nline"]).unwrap();
        c.query("SELECT * FROM e WHERE id > $1", &[&1i32]).unwrap();
        c.execute("CALL ep($1)", &[&7i32]).unwrap();
        c.query("SELECT count(*) FROM e", &[]).unwrap();
        // A portal suspended after 2 rows keeps its stack entry: the next statement
        // continues the same statement id (pgAudit behaviour).
        let mut tx = c.transaction().unwrap();
        let portal = tx.bind("SELECT id FROM e ORDER BY id", &[]).unwrap();
        tx.query_portal(&portal, 2).unwrap();
        tx.query("SELECT 'next stmt'", &[]).unwrap();
        tx.query_portal(&portal, 2).unwrap();
        tx.commit().unwrap();
        c.query("SELECT $1::int + 1", &[&41i32]).unwrap();
        let err = c.query("SELECT 1 / $1::int", &[&0i32]);
        assert!(err.is_err());
        c.batch_execute("DROP PROCEDURE ep(int); DROP TABLE e").unwrap();
    });
    audit_lines(&records)
}

#[test]
fn client_library_lines_are_identical() {
    let twins = Twins::for_corpus();
    let oracle = client_workload(&twins.pgaudit);
    let siem = client_workload(&twins.siem);
    println!("extended protocol: {} reference lines", oracle.len());
    if std::env::var_os("PGAUDIT_COMPAT_VERBOSE").is_some() {
        println!("{}", oracle.join("\n"));
    }
    assert!(oracle.len() > 15, "{oracle:#?}");
    assert_eq!(oracle, siem);
}

fn pgbench_workload(cluster: &Cluster, mode: &str) -> Vec<String> {
    let settings: Vec<String> = SETTINGS.iter().map(|s| s.to_string()).collect();
    let db = format!("bench_{mode}");
    fresh_database(cluster, &db, &settings);
    cluster
        .connect_as(&db, "postgres")
        .batch_execute("CREATE TABLE kv (k int PRIMARY KEY, v text); INSERT INTO kv SELECT g, 'v' FROM generate_series(1, 10) g")
        .unwrap();
    let script = cluster.dir().join(format!("{mode}.pgbench"));
    std::fs::write(
        &script,
        "\\set k 3\nSELECT v FROM kv WHERE k = :k;\nUPDATE kv SET v = 'w' WHERE k = :k;\nSELECT :k::int, 'a,b';\n",
    )
    .unwrap();
    let app = format!("pgbench_{mode}_{}", cluster.port());
    let mut pgbench = cluster.pgbench();
    pgbench
        .args(["-n", "-t", "3", "-c", "1", "-M", mode, "-f"])
        .arg(&script)
        .arg(&db)
        .env("PGAPPNAME", &app);
    pgaudit_siem_tests::run_checked(pgbench, "pgbench");
    let records = cluster.application_records(&app);
    audit_lines(&records)
}

#[test]
fn pgbench_extended_and_prepared_lines_are_identical() {
    let twins = Twins::for_corpus();
    for mode in ["extended", "prepared", "simple"] {
        let oracle = pgbench_workload(&twins.pgaudit, mode);
        let siem = pgbench_workload(&twins.siem, mode);
        println!("pgbench -M {mode}: {} reference lines", oracle.len());
        assert_eq!(oracle.len(), 9, "{mode}: {oracle:#?}");
        assert_eq!(oracle, siem, "pgbench -M {mode}");
    }
}
