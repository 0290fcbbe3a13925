//! Robustness run: Debian's sqlsmith throws random queries at a cluster with every
//! session-audit code path switched on, for a fixed time, first as the superuser, then as
//! an unprivileged login role (a table owner and pgaudit_admin member, with every
//! extension function it may call in sqlsmith's catalog). Afterwards the server log must
//! show no backend killed by a signal and no audit-stack error. Not part of CI (it runs
//! for minutes per phase); `bash scripts/bench.sh sqlsmith --minutes 10`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pgaudit_siem_tests::Cluster;

pub fn run(minutes: u32) {
    let cluster = Cluster::builder()
        .name("sqlsmith")
        .preload("pgaudit_siem")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit.log_relation", "on")
        .setting("pgaudit.log_parameter", "on")
        .setting("pgaudit.log_rows", "on")
        .setting("pgaudit.role", "'auditor'")
        .setting("statement_timeout", "'5s'")
        // Random configure() calls may only point delivery at this machine.
        .setting("pgaudit_siem.delivery_allowed_hosts", "'127.0.0.1'")
        // sqlsmith's failing queries would otherwise be logged twice (as ERROR and STATEMENT).
        .setting("log_min_error_statement", "panic")
        .start();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE EXTENSION pgaudit_siem;
         CREATE ROLE auditor;
         CREATE TABLE accounts (id int PRIMARY KEY, name text, balance numeric, tags text[], doc jsonb, at timestamptz);
         INSERT INTO accounts SELECT g, 'n' || g, g * 1.5, ARRAY['a', 'b'], jsonb_build_object('k', g), now() FROM generate_series(1, 200) g;
         CREATE TABLE events (id bigserial, account int REFERENCES accounts, kind text, payload jsonb) PARTITION BY HASH (id);
         CREATE TABLE events_0 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 0);
         CREATE TABLE events_1 PARTITION OF events FOR VALUES WITH (MODULUS 2, REMAINDER 1);
         INSERT INTO events (account, kind, payload) SELECT 1 + g % 200, 'k' || g % 5, '{}' FROM generate_series(1, 500) g;
         CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 100;
         GRANT SELECT (name), UPDATE ON accounts TO auditor;
         GRANT SELECT ON events TO auditor;",
    )
    .expect("set up sqlsmith schema");
    // The unprivileged phase: a login role that owns tracked tables and is a pgaudit_admin
    // member, so every extension function a non-superuser can reach is in sqlsmith's
    // catalog (delivery may only target loopback: see delivery_allowed_hosts above).
    c.batch_execute(
        "CREATE ROLE smith LOGIN; GRANT pgaudit_admin TO smith; GRANT CREATE ON SCHEMA public TO smith;
         GRANT SELECT, INSERT, UPDATE, DELETE ON accounts, events TO smith;",
    )
    .expect("unprivileged role");
    let mut smith = cluster.connect_as("postgres", "smith");
    smith
        .batch_execute(
            "CREATE TABLE orders (id int PRIMARY KEY, account int, amount numeric, note text);
             INSERT INTO orders SELECT g, 1 + g % 200, g, 'o' || g FROM generate_series(1, 200) g;
             SELECT pgaudit_siem.track('orders', 'orders', ARRAY['note']);",
        )
        .expect("smith's tracked table");
    let mut rows = Vec::new();
    let mut findings = Vec::new();
    for user in ["postgres", "smith"] {
        let (row, bad) = phase(&cluster, user, minutes);
        rows.push(row);
        findings.extend(bad);
    }
    println!("## sqlsmith robustness run\n");
    println!("| role | duration | statements (committed + rolled back) | AUDIT lines | backends terminated by a signal / PANIC | \"pgaudit stack\" errors | sqlsmith's last report |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for row in &rows {
        println!("{row}");
    }
    println!("\nsettings: featureEnabled, log = all, log_relation, log_parameter, log_rows, role = auditor; role smith: LOGIN, pgaudit_admin member, owner of a tracked table.");
    for line in findings.iter().take(20) {
        println!("    {line}");
    }
    assert!(findings.is_empty(), "sqlsmith run is not clean");
}

/// One sqlsmith run as `user`; returns the table row and the crash / stack-error lines it
/// added to the server log.
fn phase(cluster: &Cluster, user: &str, minutes: u32) -> (String, Vec<String>) {
    let log_before = cluster.server_log().len();
    let stats_before = transactions(&mut cluster.connect());
    let started = Instant::now();
    let mut child = Command::new("sqlsmith")
        .arg(format!(
            "--target=host=127.0.0.1 port={} user={user} dbname=postgres",
            cluster.port()
        ))
        .arg("--seed=42")
        .arg("--verbose")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run sqlsmith (apt-get install sqlsmith)");
    let deadline = started + Duration::from_secs(u64::from(minutes) * 60);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
    }
    let _ = child.kill();
    let output = child.wait_with_output().expect("sqlsmith output");
    let elapsed = started.elapsed();
    let statements = transactions(&mut cluster.connect()) - stats_before;
    let full = cluster.server_log();
    let log = full.get(log_before..).unwrap_or("");
    let bad: Vec<String> = log
        .lines()
        .filter(|l| {
            l.contains("terminated by signal") || l.contains("PANIC") || l.contains("pgaudit stack")
        })
        .map(str::to_owned)
        .collect();
    let crashes = log
        .lines()
        .filter(|l| l.contains("terminated by signal") || l.contains("PANIC"))
        .count();
    let audit_lines = log.lines().filter(|l| l.contains("AUDIT: ")).count();
    let tail = String::from_utf8_lossy(&output.stderr);
    let tail: String = tail.lines().rev().take(2).collect::<Vec<_>>().join(" / ");
    (
        format!(
            "| {user} | {:.0} s | {statements} | {audit_lines} | {crashes} | {} | {} |",
            elapsed.as_secs_f64(),
            bad.len() - crashes,
            tail.replace('|', "/")
        ),
        bad,
    )
}

fn transactions(client: &mut pgaudit_siem_tests::postgres::Client) -> i64 {
    client
        .query_one(
            "SELECT (xact_commit + xact_rollback)::bigint FROM pg_stat_database WHERE datname = 'postgres'",
            &[],
        )
        .map(|r| r.get(0))
        .unwrap_or(0)
}
