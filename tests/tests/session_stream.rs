//! The session-audit stream on real clusters and the local receiver: every AUDIT line
//! arrives as a record whose `line` equals the server log's, with a gapless `sequence`,
//! through kills, crash restarts, immediate shutdowns, receiver outages, a full spool,
//! and on a hot standby.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use pgaudit_siem_tests::chain;
use pgaudit_siem_tests::receiver::{Faults, Receiver};
use pgaudit_siem_tests::{audit_lines, server_owned, wait_until, Cluster, ClusterBuilder};
use serde_json::Value;

fn builder(name: &str, receiver: &Receiver) -> ClusterBuilder {
    Cluster::builder()
        .name(name)
        .preload("pgaudit_siem")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit.log_parameter", "on")
        .setting(
            "pgaudit_siem.session_audit_url",
            &format!("'{}'", receiver.url("/stream")),
        )
        .setting("pgaudit_siem.delivery_retry_base", "'20ms'")
        .setting("pgaudit_siem.delivery_retry_max", "'300ms'")
        .setting("pgaudit_siem.delivery_timeout", "'2s'")
}

/// Session-audit records received, by sequence (duplicates counted), for one stream.
fn records(receiver: &Receiver) -> (BTreeMap<u64, Value>, usize) {
    let mut by_sequence = BTreeMap::new();
    let mut duplicates = 0;
    for r in receiver.events() {
        if r.event["event"]["category"] != "session_audit" {
            continue;
        }
        let sequence = r.event["sequence"].as_u64().expect("sequence");
        if by_sequence.insert(sequence, r.event.clone()).is_some() {
            duplicates += 1;
        }
    }
    (by_sequence, duplicates)
}

/// Records of AUDIT lines (not overflow, error or connection records).
fn audit_records(receiver: &Receiver) -> Vec<Value> {
    records(receiver)
        .0
        .into_values()
        .filter(|r| r["line"].is_string())
        .collect()
}

fn sorted(mut lines: Vec<String>) -> Vec<String> {
    lines.sort();
    lines
}

/// Waits until the stream holds as many AUDIT records as the server log has lines.
fn wait_for_all_lines(cluster: &Cluster, receiver: &Receiver) -> Vec<String> {
    let mut server = Vec::new();
    wait_until(
        "every AUDIT line in the stream",
        Duration::from_secs(60),
        || {
            server = audit_lines(&cluster.log_records());
            audit_records(receiver).len() >= server.len() && !server.is_empty()
        },
    );
    server
}

/// Every record in the spool is written in its canonical (RFC 8785) form, so that the
/// shipper hashes it for the chain without parsing it.
fn assert_spool_is_canonical(cluster: &Cluster) {
    let dir = cluster.data_dir().join("pgaudit_siem_spool");
    let mut records = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "seg") {
            continue;
        }
        let mut bytes = std::fs::read(&path).unwrap();
        // A prepared segment's file goes on in zeros after its records.
        if let Some(end) = bytes.iter().position(|b| *b == 0) {
            bytes.truncate(end);
        }
        for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
            records += 1;
            assert!(
                chain::is_canonical(line),
                "a spooled record is not in canonical form: {}",
                String::from_utf8_lossy(line)
            );
        }
    }
    assert!(records > 0, "the spool holds records");
}

fn assert_gapless(receiver: &Receiver) {
    let (by_sequence, duplicates) = records(receiver);
    let first = *by_sequence.keys().next().unwrap();
    let last = *by_sequence.keys().last().unwrap();
    assert_eq!(first, 1, "the stream starts at 1");
    assert_eq!(by_sequence.len() as u64, last, "sequence has gaps: {:?}", {
        let have: HashSet<u64> = by_sequence.keys().copied().collect();
        (1..=last)
            .filter(|s| !have.contains(s))
            .take(20)
            .collect::<Vec<_>>()
    });
    eprintln!("{last} records, {duplicates} duplicates redelivered");
}

#[test]
fn every_audit_line_arrives_as_a_record_equal_to_the_server_log() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-lines", &receiver).start_logged();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE TABLE orgs (id int PRIMARY KEY, name text);
         CREATE FUNCTION add_org(i int) RETURNS void LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO orgs VALUES (i, 'org ' || i); END $$;",
    )
    .unwrap();
    c.execute(
        "INSERT INTO orgs VALUES ($1, $2)",
        &[&1i32, &"Ünïcødé, \"quoted\"\nnew line"],
    )
    .unwrap();
    c.batch_execute("SELECT add_org(2)").unwrap();
    c.batch_execute("BEGIN; INSERT INTO orgs VALUES (3, 'rolled back'); ROLLBACK")
        .unwrap();
    assert!(c
        .batch_execute("SELECT * FROM orgs WHERE id = 1/0")
        .is_err());
    c.batch_execute("SELECT id,\n       name\n  FROM orgs\n -- a comment\n ORDER BY 1")
        .unwrap();
    let status = cluster
        .pgbench()
        .args(["-i", "-s", "1", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let run = cluster
        .pgbench()
        .args(["-c", "2", "-t", "50", "postgres"])
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    drop(c);
    let server = wait_for_all_lines(&cluster, &receiver);
    let stream: Vec<String> = audit_records(&receiver)
        .iter()
        .map(|r| r["line"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        sorted(stream),
        sorted(server.clone()),
        "the stream's lines are the server log's"
    );
    assert_gapless(&receiver);
    assert_spool_is_canonical(&cluster);
    // The fields match the line, and identity comes from the server.
    let records = audit_records(&receiver);
    let insert = records
        .iter()
        .find(|r| r["line"].as_str().unwrap().contains("Ünïcødé"))
        .expect("the unicode insert");
    assert_eq!(insert["audit"]["type"], "SESSION");
    assert_eq!(insert["audit"]["class"], "WRITE");
    assert_eq!(insert["audit"]["command"], "INSERT");
    assert_eq!(insert["event"]["action"], "insert");
    assert!(insert["audit"]["parameter"]
        .as_str()
        .unwrap()
        .contains("Ünïcødé"));
    assert_eq!(insert["session"]["database"], "postgres");
    assert_eq!(insert["session"]["session_user"], "postgres");
    assert_eq!(insert["session"]["client_addr"], "127.0.0.1");
    assert!(insert["session"]["client_port"].as_u64().is_some());
    // The line is written before the INSERT takes its transaction id.
    assert!(
        insert["session"]["transaction_id"].is_null()
            || insert["session"]["transaction_id"].is_u64()
    );
    let commit = records
        .iter()
        .find(|r| r["audit"]["command"] == "COMMIT" || r["audit"]["command"] == "ROLLBACK");
    assert!(
        commit.is_some_and(|r| r["session"]["transaction_id"].is_u64()),
        "{commit:?}"
    );
    assert_eq!(insert["source"]["role"], "primary");
    let sysid: String = cluster
        .connect()
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(insert["source"]["cluster"], sysid.as_str());
    cluster.assert_no_crash();
}

#[test]
fn server_log_off_leaves_the_lines_to_the_stream_only() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-only", &receiver)
        .setting("pgaudit_siem.session_audit_server_log", "off")
        .start_logged();
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1); SELECT * FROM t")
        .unwrap();
    wait_until("three records", Duration::from_secs(30), || {
        audit_records(&receiver).len() >= 3
    });
    assert!(
        audit_lines(&cluster.log_records()).is_empty(),
        "no AUDIT line in the server log"
    );
    assert_gapless(&receiver);
}

#[test]
fn nothing_is_lost_through_kills_crash_restarts_immediate_stops_and_outages() {
    let receiver = Receiver::start(0, None).unwrap();
    // Small segments: the spool rotates into prepared (zeroed ahead by the shipper) segments
    // several times, and the faults below hit it while it writes into one.
    let mut cluster = builder("stream-faults", &receiver)
        .setting("pgaudit_siem.session_audit_segment_size", "'1MB'")
        // The harness turns fsync off, and the shipper then flushes nothing (as
        // PostgreSQL): here records are shipped only once flushed, as in production.
        .setting("fsync", "on")
        .start_logged();
    // The SIGKILLs below make the postmaster reset the cluster: expected here.
    cluster.expect_crash_restarts();
    let spool = cluster.data_dir().join("pgaudit_siem_spool");
    // Whether records are being written into a prepared segment now: the last segment
    // is a whole megabyte (its file is longer than its records) and ends in zeros.
    let writing_a_prepared_segment = |spool: &std::path::Path| {
        let mut segments: Vec<_> = std::fs::read_dir(spool)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segments.sort();
        segments.last().is_some_and(|last| {
            let bytes = std::fs::read(last).unwrap();
            bytes.len() == 1024 * 1024 && bytes.last() == Some(&0) && bytes[0] == b'{'
        })
    };
    // The shipper's pid, or None while the server restarts (a probe may connect just
    // before the postmaster notices a killed child and restarts everything).
    let shipper = |cluster: &Cluster| -> Option<i32> {
        let mut c = cluster
            .try_connect_as("postgres", "postgres", "probe")
            .ok()?;
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE '%session audit%'",
            &[],
        )
        .ok()
        .flatten()
        .map(|r| r.get(0))
    };
    let work = |cluster: &Cluster, from: i32, to: i32| {
        let mut c = cluster.connect();
        for n in from..to {
            c.execute("SELECT $1::int", &[&n]).unwrap();
        }
    };
    wait_until("the shipper", Duration::from_secs(20), || {
        shipper(&cluster).is_some()
    });
    work(&cluster, 0, 2500);
    assert!(
        writing_a_prepared_segment(&spool),
        "the spool writes into a prepared segment"
    );
    // SIGKILL of the shipper: the postmaster restarts the cluster; the spool survives.
    let pid = shipper(&cluster).unwrap();
    // SAFETY: a signal to a process of our test cluster.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    // The crash restart replaces every process, the shipper included.
    wait_until("a new shipper", Duration::from_secs(30), || {
        shipper(&cluster).is_some_and(|p| p != pid)
    });
    work(&cluster, 2500, 4000);
    // SIGKILL of a client backend in the middle of its statements (crash restart).
    let before_kill = shipper(&cluster).unwrap();
    let mut victim = cluster.connect();
    let victim_pid: i32 = victim
        .query_one("SELECT pg_backend_pid()", &[])
        .unwrap()
        .get(0);
    for n in 0..50 {
        victim.execute("SELECT $1::int + 1", &[&n]).unwrap();
    }
    assert!(
        writing_a_prepared_segment(&spool),
        "the crash restart finds a prepared segment being written"
    );
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(victim_pid, libc::SIGKILL) }, 0);
    drop(victim);
    wait_until(
        "crash recovery (a new shipper)",
        Duration::from_secs(30),
        || shipper(&cluster).is_some_and(|p| p != before_kill),
    );
    // A receiver outage, then an immediate shutdown while records wait.
    receiver.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    work(&cluster, 4000, 6500);
    assert!(
        writing_a_prepared_segment(&spool),
        "the immediate shutdown finds a prepared segment being written"
    );
    cluster.stop("immediate");
    cluster.restart();
    work(&cluster, 6500, 7000);
    receiver.clear_faults();
    let server = wait_for_all_lines(&cluster, &receiver);
    let stream: HashSet<String> = audit_records(&receiver)
        .iter()
        .map(|r| r["line"].as_str().unwrap().to_owned())
        .collect();
    let missing: Vec<&String> = server
        .iter()
        .filter(|l| !stream.contains(*l))
        .take(10)
        .collect();
    assert!(
        missing.is_empty(),
        "lines in the server log but not in the stream: {missing:?}"
    );
    assert_gapless(&receiver);
}

#[test]
fn a_full_spool_falls_back_to_the_server_log_and_says_so() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-full", &receiver)
        .setting("pgaudit_siem.session_audit_server_log", "off")
        .setting("pgaudit_siem.session_audit_spool_max_size", "'1MB'")
        .setting("pgaudit_siem.session_audit_segment_size", "'1MB'")
        .start_logged();
    // The SIEM refuses to answer: nothing is shipped, the spool fills.
    receiver.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let mut c = cluster.connect();
    let filler = "x".repeat(1000);
    for n in 0..2000 {
        c.execute("SELECT $1::int, $2::text", &[&n, &filler])
            .unwrap();
    }
    let log = cluster.log_records();
    assert!(
        log.iter()
            .any(|r| r.severity == "WARNING" && r.message.contains("session-audit spool is full")),
        "a WARNING says so"
    );
    let fallen_back = audit_lines(&log).len();
    assert!(
        fallen_back > 100,
        "records beyond the spool go to the server log ({fallen_back})"
    );
    c.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE platform LOGIN IN ROLE pgaudit_admin",
    )
    .unwrap();
    // What the delegated admin sees (the view is for superusers and pgaudit_admin).
    let mut admin = cluster.connect_as("postgres", "platform");
    let _: i64 = admin
        .query_one(
            "SELECT records_spooled FROM pgaudit_siem.session_audit_stats",
            &[],
        )
        .unwrap()
        .get(0);
    let fallbacks: i64 = c
        .query_one(
            "SELECT fallbacks_to_server_log FROM pgaudit_siem.session_audit_stats",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(
        fallbacks >= fallen_back as i64,
        "{fallbacks} fallbacks counted, {fallen_back} lines"
    );
    // Once the SIEM answers, the spool drains, and the next record is preceded by one
    // that counts what the server log took instead.
    receiver.clear_faults();
    let spooled: i64 = c
        .query_one(
            "SELECT records_spooled FROM pgaudit_siem.session_audit_stats",
            &[],
        )
        .unwrap()
        .get(0);
    wait_until("the spool drained", Duration::from_secs(60), || {
        c.query_one(
            "SELECT records_shipped FROM pgaudit_siem.session_audit_stats",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            >= spooled
    });
    c.batch_execute("SELECT 'after the overflow'").unwrap();
    wait_until("the overflow record", Duration::from_secs(30), || {
        records(&receiver).0.values().any(|r| {
            r["event"]["action"] == "spool_overflow"
                && r["overflow"]["records_in_server_log"].as_u64().unwrap_or(0) > 0
        })
    });
    assert_gapless(&receiver);
    assert_spool_is_canonical(&cluster);
    cluster.assert_no_crash();
}

#[test]
fn a_hot_standby_ships_its_own_records_under_its_own_stream() {
    let receiver = Receiver::start(0, None).unwrap();
    let primary = builder("stream-primary", &receiver).start_logged();
    primary
        .connect()
        .batch_execute("CREATE TABLE t (x int); INSERT INTO t VALUES (1)")
        .unwrap();
    wait_until("primary records", Duration::from_secs(30), || {
        !audit_records(&receiver).is_empty()
    });
    let standby = primary.start_standby(builder("stream-standby", &receiver));
    let mut s = standby.connect();
    wait_until("the standby has the table", Duration::from_secs(30), || {
        s.query_one("SELECT count(*) FROM pg_class WHERE relname = 't'", &[])
            .unwrap()
            .get::<_, i64>(0)
            == 1
    });
    s.batch_execute("SELECT * FROM t /* on the standby */")
        .unwrap();
    wait_until("the standby's record", Duration::from_secs(30), || {
        receiver
            .events()
            .iter()
            .any(|r| r.event["source"]["role"] == "standby")
    });
    let events: Vec<Value> = receiver.events().into_iter().map(|r| r.event).collect();
    let stream_of = |role: &str| -> HashSet<String> {
        events
            .iter()
            .filter(|e| e["source"]["role"] == role)
            .map(|e| e["source"]["stream"].as_str().unwrap().to_owned())
            .collect()
    };
    let (primary_streams, standby_streams) = (stream_of("primary"), stream_of("standby"));
    assert_eq!(primary_streams.len(), 1);
    assert_eq!(standby_streams.len(), 1);
    assert!(
        primary_streams.is_disjoint(&standby_streams),
        "a copy starts a stream of its own"
    );
    // The standby did not re-ship the primary's spool (which its base backup copied).
    let standby_lines: Vec<&str> = events
        .iter()
        .filter(|e| e["source"]["role"] == "standby")
        .map(|e| e["line"].as_str().unwrap())
        .collect();
    assert!(
        standby_lines
            .iter()
            .all(|l| !l.contains("INSERT INTO t VALUES (1)")),
        "{standby_lines:?}"
    );
    assert!(standby_lines.iter().any(|l| l.contains("on the standby")));
    standby.assert_no_crash();
}

#[test]
fn an_oversized_line_goes_to_the_server_log_and_the_stream_counts_it() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-oversized", &receiver)
        .setting("pgaudit_siem.session_audit_server_log", "off")
        .start_logged();
    let mut c = cluster.connect();
    let huge = format!("SELECT '{}' AS big", "\u{1}".repeat(400 * 1024));
    c.batch_execute(&huge).unwrap();
    c.batch_execute("SELECT 'after'").unwrap();
    wait_until(
        "the overflow record and the next one",
        Duration::from_secs(30),
        || {
            let all = records(&receiver).0;
            all.values().any(|r| {
                r["event"]["action"] == "spool_overflow"
                    && r["overflow"]["records_in_server_log"] == 1
            }) && all
                .values()
                .any(|r| r["line"].as_str().is_some_and(|l| l.contains("'after'")))
        },
    );
    let in_log = audit_lines(&cluster.log_records());
    assert_eq!(
        in_log.len(),
        1,
        "only the oversized line is in the server log"
    );
    assert!(in_log[0].contains("AS big"));
    assert_gapless(&receiver);
    cluster.assert_no_crash();
}

/// Session-audit records of `action`, in sequence order.
fn records_of(receiver: &Receiver, action: &str) -> Vec<Value> {
    records(receiver)
        .0
        .into_values()
        .filter(|r| r["event"]["action"] == action)
        .collect()
}

#[test]
fn connections_and_failed_logins_are_records_without_passwords() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-connections", &receiver)
        .setting("pgaudit_siem.log_connections", "on")
        .start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE ROLE bob LOGIN PASSWORD 'right-s3cret'; CREATE ROLE rejected LOGIN PASSWORD 'rej-s3cret'",
    )
    .unwrap();
    std::fs::write(
        cluster.data_dir().join("pg_hba.conf"),
        "local all all trust\nhost all postgres 127.0.0.1/32 trust\n\
         host all rejected 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 scram-sha-256\n",
    )
    .unwrap();
    cluster.reload_config();
    let attempt = |user: &str, password: &str| {
        pgaudit_siem_tests::postgres::Client::connect(
            &format!(
                "{} password={password} application_name=trail",
                cluster.conninfo("postgres", user)
            ),
            pgaudit_siem_tests::postgres::NoTls,
        )
    };
    let mut bob = attempt("bob", "right-s3cret").unwrap();
    bob.batch_execute("SELECT 1; SELECT 2").unwrap();
    drop(bob);
    for (user, password) in [
        ("bob", "wrong-s3cret"),
        ("ghost", "ghost-s3cret"),
        ("rejected", "rej-s3cret"),
    ] {
        assert!(attempt(user, password).is_err(), "{user} got in");
    }
    wait_until(
        "the failures and bob's disconnection",
        Duration::from_secs(30),
        || {
            records_of(&receiver, "authentication_failed").len() >= 3
                && records_of(&receiver, "disconnect")
                    .iter()
                    .any(|r| r["connection"]["role"] == "bob")
        },
    );
    let connect = records_of(&receiver, "connect")
        .into_iter()
        .find(|r| r["connection"]["role"] == "bob")
        .expect("bob's connect record");
    let c = &connect["connection"];
    assert_eq!(c["database"], "postgres");
    assert_eq!(c["method"], "scram-sha-256");
    assert_eq!(c["ssl"], false);
    assert_eq!(c["application_name"], "trail");
    assert_eq!(c["client_addr"], "127.0.0.1");
    assert!(c["client_port"].as_u64().is_some());
    let disconnect = records_of(&receiver, "disconnect")
        .into_iter()
        .find(|r| r["connection"]["role"] == "bob")
        .unwrap();
    assert!(
        disconnect["connection"]["statements"].as_u64().unwrap() >= 2,
        "{disconnect}"
    );
    assert!(disconnect["connection"]["duration_us"].as_u64().unwrap() > 0);
    assert_eq!(disconnect["session"]["session_user"], "bob");
    let failures: Vec<(String, String, String)> = records_of(&receiver, "authentication_failed")
        .iter()
        .map(|r| {
            (
                r["connection"]["role"].as_str().unwrap().to_owned(),
                r["connection"]["failure"].as_str().unwrap().to_owned(),
                r["connection"]["sqlstate"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        failures,
        [
            (
                "bob".to_owned(),
                "invalid_password".to_owned(),
                "28P01".to_owned()
            ),
            (
                "ghost".to_owned(),
                "unknown_role".to_owned(),
                "28P01".to_owned()
            ),
            (
                "rejected".to_owned(),
                "rejected_by_pg_hba".to_owned(),
                "28000".to_owned()
            ),
        ]
    );
    let everything: String = receiver
        .events()
        .iter()
        .map(|r| r.event.to_string())
        .collect();
    assert!(
        !everything.contains("s3cret"),
        "a password reached the SIEM"
    );
    assert_gapless(&receiver);
    assert_spool_is_canonical(&cluster);
    cluster.assert_no_crash();
}

#[test]
fn failed_statements_of_audited_sessions_are_error_records() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-errors", &receiver).start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE ROLE app_user LOGIN; CREATE ROLE quiet LOGIN;
         ALTER ROLE quiet SET pgaudit.featureEnabled = off;
         CREATE TABLE secret (x int); CREATE TABLE u (x int PRIMARY KEY); INSERT INTO u VALUES (1);
         GRANT INSERT ON u TO app_user;
         CREATE FUNCTION dup() RETURNS void LANGUAGE plpgsql AS $$ BEGIN INSERT INTO u VALUES (1); END $$;",
    )
    .unwrap();
    let mut app = cluster.connect_as("postgres", "app_user");
    for statement in [
        "SELECT * FROM secret",
        "SELEC 1",
        "SELECT dup()",
        "ALTER ROLE nobody PASSWORD 'pw-s3cret'",
    ] {
        assert!(app.batch_execute(statement).is_err(), "{statement}");
    }
    // A caught error is not a failed statement; an unaudited session has no trail.
    app.batch_execute(
        "DO $$ BEGIN PERFORM 1/0; EXCEPTION WHEN division_by_zero THEN NULL; END $$; SELECT 'marker'",
    )
    .unwrap();
    let mut quiet = cluster.connect_as("postgres", "quiet");
    assert!(quiet.batch_execute("SELECT * FROM missing_table").is_err());
    wait_until(
        "four error records and the marker",
        Duration::from_secs(30),
        || {
            records_of(&receiver, "error").len() >= 4
                && audit_records(&receiver).iter().any(|r| {
                    r["audit"]["statement"]
                        .as_str()
                        .is_some_and(|s| s.contains("marker"))
                })
        },
    );
    let errors = records_of(&receiver, "error");
    let summary: Vec<(String, String)> = errors
        .iter()
        .map(|r| {
            (
                r["error"]["sqlstate"].as_str().unwrap().to_owned(),
                r["audit"]["statement"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("42501".to_owned(), "SELECT * FROM secret".to_owned()),
            ("42601".to_owned(), "SELEC 1".to_owned()),
            ("23505".to_owned(), "SELECT dup()".to_owned()),
            (
                "42704".to_owned(),
                "ALTER ROLE nobody PASSWORD <REDACTED>".to_owned()
            ),
        ],
        "{errors:#?}"
    );
    assert_eq!(
        errors[0]["error"]["message"],
        "permission denied for table secret"
    );
    assert_eq!(errors[0]["session"]["session_user"], "app_user");
    assert_eq!(errors[3]["error"]["message"], "<REDACTED>");
    // The failing call inside the function was logged before it failed: the record
    // names its statement id; a syntax error never got one.
    assert!(
        errors[2]["audit"]["statement_id"].as_u64().is_some(),
        "{}",
        errors[2]
    );
    assert!(errors[1]["audit"]["statement_id"].is_null());
    let everything: String = receiver
        .events()
        .iter()
        .map(|r| r.event.to_string())
        .collect();
    assert!(!everything.contains("s3cret"));
    assert!(
        !everything.contains("missing_table"),
        "the unaudited session has a trail"
    );
    assert!(!everything.contains("division by zero"));
    assert_gapless(&receiver);
    assert_spool_is_canonical(&cluster);
    cluster.assert_no_crash();
}

/// Runs the shipped verifier: (exit status, its report).
fn verify(args: &[&std::path::Path]) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgaudit_siem_verify"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[test]
fn the_hash_chain_verifies_and_names_each_tampered_record() {
    let receiver = Receiver::start(0, None).unwrap();
    let key = std::env::temp_dir().join(format!("pgaudit_siem-chain-key-{}", std::process::id()));
    std::fs::write(&key, "0123456789abcdef-chain-key\n").unwrap();
    server_owned(&key, 0o600);
    let cluster = builder("stream-chain", &receiver)
        .setting(
            "pgaudit_siem.chain_key_file",
            &format!("'{}'", key.display()),
        )
        .start();
    let mut c = cluster.connect();
    c.batch_execute("CREATE TABLE t (x int)").unwrap();
    for i in 0..12 {
        c.batch_execute(&format!("INSERT INTO t VALUES ({i})"))
            .unwrap();
    }
    wait_until("thirteen records", Duration::from_secs(30), || {
        audit_records(&receiver).len() >= 13
    });
    // The export, as received (arrival order).
    let lines: Vec<Value> = receiver
        .events()
        .iter()
        .filter(|r| r.event["event"]["category"] == "session_audit")
        .map(|r| r.event.clone())
        .collect();
    assert!(
        lines.iter().all(|r| r["chain"]["alg"] == "hmac-sha256"),
        "{lines:#?}"
    );
    let dir = cluster.dir().join("exports");
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, records: &[Value], tail: &str| -> std::path::PathBuf {
        let path = dir.join(name);
        let mut text: String = records.iter().map(|r| format!("{r}\n")).collect();
        text.push_str(tail);
        std::fs::write(&path, text).unwrap();
        path
    };
    let seq = |i: usize| format!("sequence {}", lines[i]["sequence"]);
    let untouched = write("untouched.ndjson", &lines, "");
    let (code, report) = verify(&[std::path::Path::new("--key"), &key, &untouched]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("whole"), "{report}");
    // Keyed records need the key; a wrong key makes every record fail.
    assert_eq!(verify(&[&untouched]).0, 2);
    let wrong = dir.join("wrong.key");
    std::fs::write(&wrong, "another-key-of-enough-length").unwrap();
    assert_eq!(
        verify(&[std::path::Path::new("--key"), &wrong, &untouched]).0,
        1
    );
    let check = |name: &str, records: Vec<Value>, tail: &str, expected: &[&str]| {
        let path = write(name, &records, tail);
        let (code, report) = verify(&[std::path::Path::new("--key"), &key, &path]);
        assert_eq!(code, 1, "{name}: {report}");
        let found = report
            .lines()
            .any(|l| expected.iter().all(|e| l.contains(e)));
        assert!(found, "{name}: expected {expected:?} in\n{report}");
    };
    // Deleted.
    let mut deleted = lines.clone();
    deleted.remove(4);
    check("deleted.ndjson", deleted, "", &["missing", &seq(5)]);
    // One byte altered.
    let mut altered = lines.clone();
    let text = altered[6]["line"]
        .as_str()
        .unwrap()
        .replacen("INSERT", "INSERX", 1);
    altered[6]["line"] = text.into();
    check("altered.ndjson", altered, "", &["altered", &seq(6)]);
    // Two swapped.
    let mut swapped = lines.clone();
    swapped.swap(2, 3);
    check(
        "swapped.ndjson",
        swapped,
        "",
        &["reordered", &seq(3), &seq(2)],
    );
    // One inserted: a forger copies a record's chain position without the key.
    let mut inserted = lines.clone();
    let mut forged = lines[7].clone();
    forged["line"] = "SESSION,99,1,WRITE,DELETE,,,DELETE FROM t,<none>".into();
    forged["sequence"] = 9999.into();
    forged["chain"]["prev"] = lines[7]["chain"]["hash"].clone();
    forged["chain"]["hash"] = "ab".repeat(32).into();
    inserted.insert(8, forged);
    check(
        "inserted.ndjson",
        inserted,
        "",
        &["inserted", "sequence 9999"],
    );
    // A truncated tail.
    let whole = lines[lines.len() - 1].to_string();
    check(
        "truncated.ndjson",
        lines[..lines.len() - 1].to_vec(),
        &whole[..whole.len() / 2],
        &["truncated"],
    );
    // An exact redelivery is no problem: it is counted.
    let mut redelivered = lines.clone();
    redelivered.insert(5, lines[4].clone());
    let path = write("redelivered.ndjson", &redelivered, "");
    let (code, report) = verify(&[std::path::Path::new("--key"), &key, &path]);
    assert_eq!(code, 0, "{report}");
    assert!(report.contains("(1 exact duplicates)"), "{report}");
    // The chain continues across a restart.
    let mut cluster = cluster;
    drop(c);
    cluster.restart();
    cluster
        .connect()
        .batch_execute("SELECT 'after restart'")
        .unwrap();
    wait_until(
        "the record after the restart",
        Duration::from_secs(30),
        || {
            audit_records(&receiver).iter().any(|r| {
                r["line"]
                    .as_str()
                    .is_some_and(|l| l.contains("after restart"))
            })
        },
    );
    let all: Vec<Value> = receiver
        .events()
        .iter()
        .filter(|r| r.event["event"]["category"] == "session_audit")
        .map(|r| r.event.clone())
        .collect();
    let path = write("restarted.ndjson", &all, "");
    let (code, report) = verify(&[std::path::Path::new("--key"), &key, &path]);
    assert_eq!(code, 0, "{report}");
    let _ = std::fs::remove_file(&key);
    cluster.assert_no_crash();
}

#[test]
fn session_audit_log_returns_the_spools_records_by_privilege() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-sql-log", &receiver).start();
    let mut su = cluster.connect();
    su.batch_execute(
        "CREATE EXTENSION pgaudit_siem; CREATE ROLE auditor LOGIN; GRANT pgaudit_admin TO auditor;
         CREATE ROLE app_user LOGIN; CREATE TABLE t (x int); GRANT ALL ON t TO app_user",
    )
    .unwrap();
    let since: String = su.query_one("SELECT now()::text", &[]).unwrap().get(0);
    su.batch_execute("SELECT 'by the superuser'").unwrap();
    let mut app = cluster.connect_as("postgres", "app_user");
    app.batch_execute("INSERT INTO t VALUES (1); SELECT 'by app_user'")
        .unwrap();
    let mut auditor = cluster.connect_as("postgres", "auditor");
    // Shipped records stay readable (session_audit_retention).
    wait_until("the workload shipped", Duration::from_secs(30), || {
        audit_records(&receiver).iter().any(|r| {
            r["line"]
                .as_str()
                .is_some_and(|l| l.contains("by app_user"))
        })
    });
    let read = |c: &mut pgaudit_siem_tests::postgres::Client| -> Vec<(i64, String, String)> {
        c.query(
            "SELECT sequence, login_role, coalesce(statement, '') FROM pgaudit_siem.session_audit_log($1::text::timestamptz)",
            &[&since],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    let all = read(&mut su);
    let sequences: Vec<i64> = all.iter().map(|r| r.0).collect();
    let mut sorted_sequences = sequences.clone();
    sorted_sequences.sort();
    assert_eq!(sequences, sorted_sequences, "in order");
    assert!(
        all.iter()
            .any(|r| r.1 == "postgres" && r.2.contains("by the superuser")),
        "{all:#?}"
    );
    assert!(
        all.iter()
            .any(|r| r.1 == "app_user" && r.2.contains("by app_user")),
        "{all:#?}"
    );
    // The same records as the SIEM got, by sequence.
    let (shipped, _) = records(&receiver);
    for (sequence, _, statement) in &all {
        let record = &shipped[&(*sequence as u64)];
        assert_eq!(
            record["audit"]["statement"].as_str().unwrap_or(""),
            statement.as_str()
        );
    }
    let seen_by_admin = read(&mut auditor);
    assert!(seen_by_admin.iter().any(|r| r.2.contains("by app_user")));
    assert!(
        !seen_by_admin.iter().any(|r| r.1 == "postgres"),
        "an admin sees superusers' sessions: {seen_by_admin:#?}"
    );
    // The record column is the whole record.
    let record: Value = auditor
        .query_one(
            "SELECT record::text::json FROM pgaudit_siem.session_audit_log($1::text::timestamptz) WHERE statement LIKE '%by app_user%' LIMIT 1",
            &[&since],
        )
        .unwrap()
        .get(0);
    assert_eq!(record["session"]["session_user"], "app_user");
    let err = app
        .query(
            "SELECT * FROM pgaudit_siem.session_audit_log(now() - interval '1 hour')",
            &[],
        )
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&pgaudit_siem_tests::postgres::error::SqlState::INSUFFICIENT_PRIVILEGE)
    );
    cluster.assert_no_crash();
}

/// Creates the extension and writes 2,000 records, over a megabyte: with 1 MB segments
/// the spool rotates several times.
fn spool_over_a_megabyte(cluster: &Cluster) -> pgaudit_siem_tests::postgres::Client {
    let mut su = cluster.connect();
    su.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    for i in 0..40 {
        let statements: String = (0..50)
            .map(|j| format!("SELECT {i} * 1000 + {j};"))
            .collect();
        su.batch_execute(&statements).unwrap();
    }
    su
}

#[test]
fn shipped_records_leave_the_spool_after_the_retention() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-retention", &receiver)
        .setting("pgaudit_siem.session_audit_segment_size", "'1MB'")
        .setting("pgaudit_siem.session_audit_retention", "0")
        .start();
    let mut su = spool_over_a_megabyte(&cluster);
    let spool = cluster.data_dir().join("pgaudit_siem_spool");
    let segments = || {
        std::fs::read_dir(&spool)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .is_ok_and(|e| e.file_name().to_string_lossy().ends_with(".seg"))
            })
            .count()
    };
    wait_until(
        "everything shipped and old segments removed",
        Duration::from_secs(60),
        || {
            let (shipped, _) = records(&receiver);
            shipped.len() >= 2000 && segments() == 1
        },
    );
    let first: i64 = su
        .query_one(
            "SELECT min(sequence) FROM pgaudit_siem.session_audit_log(now() - interval '1 hour')",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(first > 1, "the first segment's records are still there");
    cluster.assert_no_crash();
}

/// A SIGTERM (`pg_terminate_backend`) stops the shipper, and the postmaster starts it
/// again: the stream never ends silently. Signals that reach the shipper while it starts
/// its HTTP thread never land on that thread (where PostgreSQL's handlers would abort
/// the process and the postmaster would reset every backend): a flood of SIGHUPs (every
/// `pg_reload_conf()` is relayed to every server process) through repeated restarts
/// leaves no crash restart, and the stream still delivers afterwards.
#[test]
fn sigterm_restarts_the_shipper_and_signals_never_crash_the_server() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-signals", &receiver).start();
    let shipper = |c: &mut postgres::Client| -> Option<i32> {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE '%session audit%'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    let mut c = cluster.connect();
    wait_until("shipper", Duration::from_secs(20), || {
        shipper(&mut c).is_some()
    });
    let stop = Arc::new(AtomicBool::new(false));
    let mut flood_client = cluster.connect();
    let flood = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                flood_client
                    .batch_execute("SELECT pg_reload_conf()")
                    .unwrap();
                sent += 1;
            }
            sent
        })
    };
    for _ in 0..8 {
        let pid = shipper(&mut c).unwrap();
        c.execute("SELECT pg_terminate_backend($1)", &[&pid])
            .unwrap();
        wait_until("shipper restarted", Duration::from_secs(20), || {
            shipper(&mut c).is_some_and(|p| p != pid)
        });
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 100, "only {sent} reloads were sent");
    c.batch_execute("SELECT 'after the signals'").unwrap();
    wait_until(
        "a record after the signals",
        Duration::from_secs(20),
        || {
            audit_records(&receiver).iter().any(|r| {
                r["line"]
                    .as_str()
                    .unwrap_or("")
                    .contains("after the signals")
            })
        },
    );
    cluster.assert_no_crash();
    assert!(cluster.crash_reports().is_empty());
}

/// How many of the file's pages are in the page cache (`mincore` over a mapping).
fn resident_pages(path: &std::path::Path) -> usize {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(path).unwrap();
    let len = file.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    // SAFETY: a read-only shared mapping of a file we opened, unmapped below; only its
    // residency is asked, never its contents.
    unsafe {
        let map = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            file.as_raw_fd(),
            0,
        );
        assert_ne!(map, libc::MAP_FAILED);
        let page = libc::sysconf(libc::_SC_PAGESIZE) as usize;
        let mut flags = vec![0u8; len.div_ceil(page)];
        assert_eq!(libc::mincore(map, len, flags.as_mut_ptr()), 0);
        libc::munmap(map, len);
        flags.iter().filter(|f| **f & 1 != 0).count()
    }
}

/// Whether `path` is on tmpfs (`statfs`).
fn on_tmpfs(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(path.as_os_str().as_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct we own from a NUL-terminated path.
    unsafe {
        let mut fs: libc::statfs = std::mem::zeroed();
        libc::statfs(name.as_ptr(), &mut fs) == 0 && fs.f_type == libc::TMPFS_MAGIC
    }
}

/// Segments whose records were all shipped leave the page cache (the spool's history
/// neither pushes the database's pages out nor makes the next segment take pages never
/// used before), and stay readable from disk for session_audit_log().
#[test]
fn shipped_segments_leave_the_page_cache_and_stay_readable() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = builder("stream-page-cache", &receiver)
        .setting("pgaudit_siem.session_audit_segment_size", "'1MB'")
        .start();
    let mut su = spool_over_a_megabyte(&cluster);
    let spool = cluster.data_dir().join("pgaudit_siem_spool");
    if on_tmpfs(&spool) {
        // tmpfs keeps every file in memory: there is no page cache to leave.
        eprintln!("skipped: the data directory is on tmpfs");
        return;
    }
    let segments = || {
        let mut found: Vec<std::path::PathBuf> = std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        found.sort();
        found
    };
    wait_until("everything shipped", Duration::from_secs(60), || {
        records(&receiver).0.len() >= 2000
    });
    assert!(segments().len() >= 3, "the records span several segments");
    wait_until(
        "the shipped segments' pages released",
        Duration::from_secs(30),
        || {
            let list = segments();
            // The last segment is still written; the one before may hold the last
            // records shipped.
            list[..list.len().saturating_sub(2)]
                .iter()
                .all(|s| resident_pages(s) == 0)
        },
    );
    let (first, count): (i64, i64) = {
        let row = su
            .query_one(
                "SELECT min(sequence), count(*) FROM pgaudit_siem.session_audit_log(now() - interval '1 hour')",
                &[],
            )
            .unwrap();
        (row.get(0), row.get(1))
    };
    assert_eq!(first, 1, "the first segment is still read");
    assert!(count >= 2000);
    cluster.assert_no_crash();
}
