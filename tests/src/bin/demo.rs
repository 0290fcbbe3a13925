//! The README's demo: a throwaway PostgreSQL 15 cluster with pgaudit_siem preloaded, a
//! short scripted session, and what the extension produced: its settings, pgAudit-format
//! audit lines from the server log, and captured change events. The cluster is deleted at
//! the end. Run it with `bash scripts/demo.sh`, which builds and installs the extension.

use pgaudit_siem_tests::Cluster;

fn section(title: &str) {
    println!("\n== {title} ==");
}

fn run(client: &mut pgaudit_siem_tests::postgres::Client, who: &str, statements: &[&str]) {
    for sql in statements {
        println!("{who}=# {sql};");
        if let Err(e) = client.batch_execute(sql) {
            let message = e
                .as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string());
            println!("ERROR:  {message}");
        }
    }
}

fn main() {
    section(
        "Starting a throwaway PostgreSQL 15 cluster with shared_preload_libraries = 'pgaudit_siem'",
    );
    let cluster = Cluster::builder()
        .name("demo")
        .preload("pgaudit_siem")
        .start_logged();
    println!(
        "cluster at {} listening on 127.0.0.1:{}",
        cluster.dir().display(),
        cluster.port()
    );
    for line in cluster
        .server_log()
        .lines()
        .filter(|l| l.contains("pgaudit_siem extension initialized"))
    {
        println!("{line}");
    }

    section("A superuser installs the extension and delegates auditing to the platform admin");
    let mut su = cluster.connect();
    run(
        &mut su,
        "postgres",
        &[
            "CREATE ROLE avnadmin LOGIN CREATEROLE",
            "CREATE ROLE app LOGIN",
            "CREATE DATABASE defaultdb OWNER avnadmin",
        ],
    );
    let mut su_db = cluster.connect_as("defaultdb", "postgres");
    run(
        &mut su_db,
        "postgres",
        &[
            "CREATE EXTENSION pgaudit_siem",
            "GRANT pgaudit_admin TO avnadmin",
            "CREATE TABLE orgs (id int PRIMARY KEY, name text, siem_integration_enabled boolean, siem_integration_url text)",
            "ALTER TABLE orgs OWNER TO avnadmin",
            "GRANT SELECT, INSERT, UPDATE ON orgs TO app",
        ],
    );

    section("The platform admin (not a superuser) turns auditing on, as in the Aiven guide");
    let mut admin = cluster.connect_as("defaultdb", "avnadmin");
    run(
        &mut admin,
        "avnadmin",
        &[
            "ALTER DATABASE defaultdb set pgaudit.featureEnabled = 'on'",
            "SELECT aiven_extras.set_pgaudit_parameter('log', 'defaultdb', 'read, write, ddl')",
            "ALTER DATABASE defaultdb SET pgaudit.log_relation = on",
            "SELECT pgaudit_siem.track('orgs')",
            "SET pgaudit.log = 'none'",
            "ALTER ROLE avnadmin SET pgaudit.featureEnabled = 'off'",
        ],
    );

    section("The application works; its audit lines appear in the server log");
    let records = cluster.session_log("defaultdb", "app", |c| {
        run(
            c,
            "app",
            &[
                "INSERT INTO orgs VALUES (123, 'test', false, NULL)",
                "BEGIN",
                "SET LOCAL pgaudit_siem.actor_id = '1234'",
                "SET LOCAL pgaudit_siem.actor_email = 'bogdan@example.com'",
                "SET LOCAL pgaudit_siem.org_id = '123'",
                "SET LOCAL pgaudit_siem.org_name = 'test'",
                "UPDATE orgs SET siem_integration_enabled = true, siem_integration_url = 'https://new-siem.example.com/path' WHERE id = 123",
                "COMMIT",
                "SELECT name FROM orgs WHERE id = 123",
            ],
        );
    });
    for line in pgaudit_siem_tests::audit_lines(&records) {
        println!("LOG:  AUDIT: {line}");
    }

    section("Captured change events (pgaudit_siem.events), waiting for SIEM delivery");
    let rows = admin
        .query(
            "SELECT payload::text FROM pgaudit_siem.events ORDER BY created_at",
            &[],
        )
        .expect("read events");
    for row in rows {
        println!("{}", row.get::<_, String>(0));
    }

    section("Settings registered by pgaudit_siem");
    for row in su.query("SELECT name, setting, context FROM pg_settings WHERE name LIKE 'pgaudit%' ORDER BY name", &[]).unwrap() {
        let (name, setting, context): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        println!("{name:<34} {setting:<10} {context}");
    }
    drop((su, su_db, admin));
    drop(cluster);
    println!("\ncluster stopped and removed");
}
