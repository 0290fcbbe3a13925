//! The README's demo: a throwaway PostgreSQL 15 cluster with pgaudit_siem preloaded, a
//! short scripted session, and what the extension produced. The cluster is deleted at
//! the end. Run it with `bash scripts/demo.sh`, which builds and installs the extension.

use pgaudit_siem_tests::Cluster;

fn section(title: &str) {
    println!("\n== {title} ==");
}

fn main() {
    section(
        "Starting a throwaway PostgreSQL 15 cluster with shared_preload_libraries = 'pgaudit_siem'",
    );
    let cluster = Cluster::builder()
        .name("demo")
        .preload("pgaudit_siem")
        .start();
    println!(
        "cluster at {} listening on 127.0.0.1:{}",
        cluster.dir().display(),
        cluster.port()
    );

    let mut client = cluster.connect();
    let script = [
        "CREATE EXTENSION pgaudit_siem",
        "ALTER DATABASE postgres SET pgaudit.featureEnabled = 'on'",
        "ALTER DATABASE postgres SET pgaudit.log = 'read, ddl'",
    ];
    section("Scripted session");
    for sql in script {
        println!("postgres=# {sql};");
        client
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    section("Settings registered by pgaudit_siem (as seen by a new connection)");
    let mut fresh = cluster.connect();
    let rows = fresh
        .query(
            "SELECT name, setting, context, vartype FROM pg_settings WHERE name LIKE 'pgaudit.%' ORDER BY name",
            &[],
        )
        .expect("read pg_settings");
    println!(
        "{:<32} {:<8} {:<10} {}",
        "name", "setting", "context", "type"
    );
    for row in rows {
        let (name, setting, context, vartype): (String, String, String, String) =
            (row.get(0), row.get(1), row.get(2), row.get(3));
        println!("{name:<32} {setting:<8} {context:<10} {vartype}");
    }

    section("Invalid values are refused with pgAudit's messages");
    for sql in [
        "SET pgaudit.log = 'read, bogus'",
        "SET pgaudit.log = 'read write'",
        "SET pgaudit.log_level = 'error'",
    ] {
        match fresh.batch_execute(sql) {
            Ok(()) => println!("{sql}: accepted (unexpected)"),
            Err(e) => {
                let db = e.as_db_error().expect("server error");
                let detail = db
                    .detail()
                    .map(|d| format!(" / DETAIL: {d}"))
                    .unwrap_or_default();
                println!(
                    "{sql}\n  -> ERROR {}: {}{detail}",
                    db.code().code(),
                    db.message()
                );
            }
        }
    }

    section("Server log: the library loaded at startup");
    for line in cluster
        .server_log()
        .lines()
        .filter(|l| l.contains("pgaudit_siem extension initialized"))
    {
        println!("{line}");
    }
    drop(fresh);
    drop(client);
    drop(cluster);
    println!("\ncluster stopped and removed");
}
