//! The README's demo: a throwaway PostgreSQL 15 cluster with pgaudit_siem preloaded, a
//! short scripted session, and what the extension produced: its settings, pgAudit-format
//! audit lines from the server log, captured change events, and what the local SIEM
//! receiver (this repository's `siem_receiver`, on 127.0.0.1) got from the delivery
//! worker. The cluster is deleted at the end. Run it with `bash scripts/demo.sh`, which
//! builds and installs the extension.

use std::time::{Duration, Instant};

use pgaudit_siem_tests::receiver::Receiver;
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

fn show(client: &mut pgaudit_siem_tests::postgres::Client, who: &str, sql: &str) {
    println!("{who}=# {sql};");
    match client.simple_query(sql) {
        Ok(messages) => {
            for m in messages {
                if let pgaudit_siem_tests::postgres::SimpleQueryMessage::Row(row) = m {
                    let fields: Vec<String> = (0..row.len())
                        .map(|i| {
                            format!(
                                "{} = {}",
                                row.columns()[i].name(),
                                row.get(i).unwrap_or("NULL")
                            )
                        })
                        .collect();
                    println!("  {}", fields.join(" | "));
                }
            }
        }
        Err(e) => println!(
            "ERROR:  {}",
            e.as_db_error()
                .map(|d| d.message().to_owned())
                .unwrap_or_else(|| e.to_string())
        ),
    }
}

fn main() {
    let output =
        pgaudit_siem_tests::receiver::default_output().with_file_name("demo-events.ndjson");
    std::fs::create_dir_all(output.parent().unwrap()).expect("receiver output directory");
    let _ = std::fs::remove_file(&output);
    let receiver = Receiver::start(0, Some(&output)).expect("start the local SIEM receiver");
    section("A local SIEM receiver (siem_receiver) listens on 127.0.0.1");
    println!(
        "{} (events are appended to {})",
        receiver.url("/"),
        output.display()
    );
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

    section("The admin enables SIEM integration: endpoint, headers, test, categories, save");
    let url = receiver.url("/services/collector/event");
    show(
        &mut admin,
        "avnadmin",
        &format!("SELECT pgaudit_siem.configure('{url}', '{{\"Authorization\": \"Splunk 5e2c1f4b-demo-token\"}}', ARRAY['orgs', 'siem_settings'], 'splunk_hec')"),
    );
    show(
        &mut admin,
        "avnadmin",
        "SELECT * FROM pgaudit_siem.test_connection()",
    );
    show(&mut admin, "avnadmin", "SELECT pgaudit_siem.enable()");
    show(
        &mut admin,
        "avnadmin",
        "SELECT enabled, url, headers, categories, format FROM pgaudit_siem.settings",
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

    section("Settings registered by pgaudit_siem");
    for row in su.query("SELECT name, setting, context FROM pg_settings WHERE name LIKE 'pgaudit%' ORDER BY name", &[]).unwrap() {
        let (name, setting, context): (String, String, String) = (row.get(0), row.get(1), row.get(2));
        println!("{name:<40} {setting:<10} {context}");
    }

    section("Captured change events (pgaudit_siem.events) and delivery statistics");
    let rows = admin
        .query(
            "SELECT category, action, delivered FROM pgaudit_siem.events ORDER BY xid, created_at",
            &[],
        )
        .expect("read events");
    for row in rows {
        println!(
            "{:<14} {:<8} delivered = {}",
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, bool>(2)
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let queued: i64 = admin
            .query_one("SELECT queued FROM pgaudit_siem.stats", &[])
            .unwrap()
            .get(0);
        if queued == 0 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    show(&mut admin, "avnadmin", "SELECT queued, delivered, retried, dead_lettered, last_http_status, avg_batch_size, worker_pid FROM pgaudit_siem.stats");

    section("The platform streams the session audit trail itself (superuser, ALTER SYSTEM)");
    let stream_url = receiver.url("/session-audit");
    run(
        &mut su,
        "postgres",
        &[
            format!("ALTER SYSTEM SET pgaudit_siem.session_audit_url = '{stream_url}'").as_str(),
            "ALTER SYSTEM SET pgaudit_siem.session_audit_format = 'ndjson'",
        ],
    );
    cluster.reload_config();
    let mut app = cluster.connect_as("defaultdb", "app");
    run(
        &mut app,
        "app",
        &[
            "SELECT id, name FROM orgs WHERE id = 1",
            "UPDATE orgs SET name = 'Acme Corp' WHERE id = 1",
        ],
    );
    drop(app);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let row = admin
            .query_one(
                "SELECT records_spooled, records_shipped FROM pgaudit_siem.session_audit_stats",
                &[],
            )
            .unwrap();
        let (spooled, shipped): (i64, i64) = (row.get(0), row.get(1));
        if (spooled > 0 && shipped >= spooled - 1) || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    show(&mut admin, "avnadmin", "SELECT records_spooled, records_shipped, records_unshipped, spool_bytes, fallbacks_to_server_log, last_http_status FROM pgaudit_siem.session_audit_stats");
    drop((su, su_db, admin));
    drop(cluster);
    println!("\ncluster stopped and removed");

    section(&format!(
        "What the SIEM received ({}): change events (from Splunk HEC envelopes) and session-audit records",
        output.display()
    ));
    drop(receiver);
    for line in pgaudit_siem_tests::receiver::read_output(&output) {
        // Session-audit records arrive as ndjson (the record itself); change events as
        // HEC envelopes around the event.
        let event = if line.get("sequence").is_some() {
            &line
        } else {
            &line["event"]
        };
        println!("{}", serde_json::to_string_pretty(event).unwrap());
    }
}
