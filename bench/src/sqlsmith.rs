//! Robustness run: Debian's sqlsmith throws random queries at a cluster with every
//! session-audit code path switched on, for a fixed time. Afterwards the server log must
//! show no backend killed by a signal and no audit-stack error. Not part of CI (it runs
//! for minutes); `bash scripts/bench.sh sqlsmith --minutes 10`.

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
    let stats_before = transactions(&mut c);
    let started = Instant::now();
    let mut child = Command::new("sqlsmith")
        .arg(format!(
            "--target=host=127.0.0.1 port={} user=postgres dbname=postgres",
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
    let log = cluster.server_log();
    let crashes: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("terminated by signal") || l.contains("PANIC"))
        .collect();
    let stack_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("pgaudit stack"))
        .collect();
    let audit_lines = log.lines().filter(|l| l.contains("AUDIT: ")).count();
    let sqlsmith_tail = String::from_utf8_lossy(&output.stderr);
    let sqlsmith_tail: String = sqlsmith_tail
        .lines()
        .rev()
        .take(3)
        .collect::<Vec<_>>()
        .join(" | ");
    println!("## sqlsmith robustness run\n");
    println!("| what | value |\n|---|---|");
    println!("| duration | {:.0} s |", elapsed.as_secs_f64());
    println!("| statements run (committed + rolled back transactions) | {statements} |");
    println!("| AUDIT lines written | {audit_lines} |");
    println!(
        "| backends terminated by a signal / PANIC | {} |",
        crashes.len()
    );
    println!("| \"pgaudit stack\" errors | {} |", stack_errors.len());
    println!("| settings | featureEnabled, log = all, log_relation, log_parameter, log_rows, role = auditor |");
    println!("\nsqlsmith's last report: {sqlsmith_tail}");
    for line in crashes.iter().chain(stack_errors.iter()).take(20) {
        println!("    {line}");
    }
    assert!(
        crashes.is_empty() && stack_errors.is_empty(),
        "sqlsmith run is not clean"
    );
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
