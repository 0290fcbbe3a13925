//! SIEM delivery on a real cluster with the real local receiver (127.0.0.1): every
//! format, the configuration API, test_connection's failure kinds, ordering across
//! out-of-order commits, and the fault tests (receiver down, 5xx + Retry-After, 4xx to
//! dead letter and back, a hanging receiver, SIGKILL of the worker mid-batch, immediate
//! postmaster stop, DROP EXTENSION / DROP DATABASE with a running worker).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use pgaudit_siem_tests::postgres::error::SqlState;
use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::receiver::{Faults, Receiver};
use pgaudit_siem_tests::{assert_stays, wait_until, Cluster};
use serde_json::Value;

fn cluster(name: &str) -> Cluster {
    builder(name).start()
}

fn builder(name: &str) -> pgaudit_siem_tests::ClusterBuilder {
    Cluster::builder().name(name).with_fast_delivery()
}

/// Installs the extension, tracks `t(n int)` and points delivery at `url`.
fn setup(c: &mut Client, url: &str, format: &str) {
    c.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    c.batch_execute("CREATE TABLE t (n int); SELECT pgaudit_siem.track('t', 'orgs')")
        .unwrap();
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{\"Authorization\": \"Bearer s3cret-token\"}', NULL, $2)",
        &[&url, &format],
    )
    .unwrap();
    c.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
}

/// Row markers `n` of received change events on table t, in arrival order.
fn received_markers(receiver: &Receiver) -> Vec<i64> {
    receiver
        .events()
        .iter()
        .filter(|r| r.event.pointer("/source/table") == Some(&Value::from("t")))
        .flat_map(|r| {
            r.event["changes"]["data_after"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter()
                .map(|row| row["n"].as_i64().unwrap())
        })
        .collect()
}

fn stat(c: &mut Client, column: &str) -> i64 {
    c.query_one(
        &format!("SELECT coalesce({column}, 0)::int8 FROM pgaudit_siem.stats"),
        &[],
    )
    .unwrap()
    .get(0)
}

fn worker_pid(c: &mut Client, db: &str) -> Option<i32> {
    c.query_opt(
        "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem delivery' AND datname = $1",
        &[&db],
    )
    .unwrap()
    .map(|r| r.get(0))
}

#[test]
fn every_format_delivers_the_outbox_payloads() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = cluster("delivery-formats");
    let mut c = cluster.connect();
    setup(&mut c, &receiver.url("/hook"), "json");
    let formats = [
        ("json", "/hook"),
        ("ndjson", "/ingest"),
        ("splunk_hec", "/services/collector/event"),
        ("opensearch_bulk", "/audit/_bulk"),
    ];
    let mut next: i32 = 0;
    for (format, path) in formats {
        // Counted before configure(): the worker may deliver its settings event at once.
        let before = receiver.event_count();
        c.execute(
            "SELECT pgaudit_siem.configure($1, '{\"Authorization\": \"Bearer s3cret-token\"}', NULL, $2)",
            &[&receiver.url(path), &format],
        )
        .unwrap();
        // Three transactions, the last with two statements.
        for _ in 0..2 {
            c.execute("INSERT INTO t VALUES ($1)", &[&next]).unwrap();
            next += 1;
        }
        c.batch_execute(&format!(
            "BEGIN; INSERT INTO t VALUES ({}); INSERT INTO t VALUES ({}); COMMIT",
            next,
            next + 1
        ))
        .unwrap();
        next += 2;
        // configure() itself is an event (siem_settings) plus four change events.
        wait_until(&format!("{format} events"), Duration::from_secs(20), || {
            received_markers(&receiver).len() == next as usize
        });
        let got: Vec<_> = receiver.events()[before..].to_vec();
        assert!(
            got.iter().all(|r| r.format == format),
            "{format}: {:?}",
            got.iter().map(|r| r.format).collect::<Vec<_>>()
        );
        assert!(got.iter().all(|r| r
            .headers
            .iter()
            .any(|(k, v)| k == "authorization" && v == "Bearer s3cret-token")));
        // Byte-for-byte the outbox payloads, in delivery order.
        let ids: Vec<String> = got
            .iter()
            .map(|r| r.event["id"].as_str().unwrap().to_owned())
            .collect();
        let expected: Vec<Value> = c
            .query(
                "SELECT payload::text FROM pgaudit_siem.outbox WHERE id = ANY($1::text[]::uuid[]) ORDER BY xid, seq",
                &[&ids],
            )
            .unwrap()
            .iter()
            .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
            .collect();
        // Each carries its link in this database's hash chain (events::chain).
        let got_events: Vec<Value> = got
            .iter()
            .map(|r| {
                let mut event = r.event.clone();
                let chain = event.as_object_mut().unwrap().remove("chain");
                assert_eq!(chain.unwrap()["alg"], "sha256", "{format}");
                event
            })
            .collect();
        assert_eq!(got_events, expected, "{format}");
        // The first settings event of the round is this configure() (the first round
        // also delivers setup's track event before it).
        let settings = got
            .iter()
            .find(|r| r.event["event"]["category"] == "siem_settings")
            .unwrap();
        assert_eq!(settings.event["changes"]["data_after"][0]["format"], format);
    }
    assert_eq!(
        received_markers(&receiver),
        (0..i64::from(next)).collect::<Vec<_>>()
    );
    wait_until("the cursor", Duration::from_secs(5), || {
        stat(&mut c, "queued") == 0
    });
    assert!(stat(&mut c, "delivered") >= 20);
    assert_eq!(stat(&mut c, "last_http_status"), 200);

    // Batching follows pgaudit_siem.delivery_batch_events after a reload (SIGHUP).
    cluster.alter_system(&[("pgaudit_siem.delivery_batch_events", "2")]);
    let settings_events = |r: &Receiver| {
        r.events()
            .iter()
            .filter(|e| e.event["event"]["category"] == "siem_settings")
            .count()
    };
    let seen = settings_events(&receiver);
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', ARRAY['orgs'], 'ndjson')",
        &[&receiver.url("/ingest")],
    )
    .unwrap();
    // configure() reports itself to the SIEM whatever the category filter: once that
    // event arrived, the worker runs the new configuration.
    wait_until("the configuration event", Duration::from_secs(20), || {
        settings_events(&receiver) > seen
    });
    let requests = receiver.requests();
    let before = receiver.event_count();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (100); INSERT INTO t VALUES (101); INSERT INTO t VALUES (102); INSERT INTO t VALUES (103); COMMIT")
        .unwrap();
    wait_until("batched events", Duration::from_secs(20), || {
        receiver.event_count() >= before + 4
    });
    assert_eq!(
        receiver.requests() - requests,
        2,
        "4 events in batches of 2"
    );
    // The category filter lets only `orgs` through (the settings event came before).
    assert!(receiver.events()[before..]
        .iter()
        .all(|r| r.event["event"]["category"] == "orgs"));

    // Compressed request bodies (Content-Encoding: gzip) decode to the same events.
    cluster.alter_system(&[("pgaudit_siem.delivery_gzip", "on")]);
    let before = receiver.event_count();
    c.batch_execute("INSERT INTO t VALUES (104)").unwrap();
    wait_until("gzip event", Duration::from_secs(20), || {
        receiver.event_count() > before
    });
    let last = receiver.events().pop().unwrap();
    assert!(
        last.headers
            .contains(&("content-encoding".into(), "gzip".into())),
        "{:?}",
        last.headers
    );
    assert_eq!(last.event["changes"]["data_after"][0]["n"], 104);
    // What the SIEM holds, whatever the format it came in, is one whole chain.
    let export = cluster.dir().join("export.ndjson");
    let text: String = receiver
        .events()
        .iter()
        .map(|r| format!("{}\n", r.event))
        .collect();
    std::fs::write(&export, text).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgaudit_siem_verify"))
        .arg(&export)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{report}");
    assert_eq!(
        report.lines().filter(|l| l.contains("whole")).count(),
        1,
        "{report}"
    );
}

#[test]
fn configuration_is_for_admins_validated_audited_and_masked() {
    // Session audit logs everything, with parameters: the tokens must still not appear.
    let cluster = builder("delivery-config")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit.log_parameter", "on")
        .start();
    let mut c = cluster.connect();
    c.batch_execute(
        "CREATE EXTENSION pgaudit_siem;
         CREATE ROLE avnadmin LOGIN IN ROLE pgaudit_admin; CREATE ROLE app LOGIN;",
    )
    .unwrap();
    let mut admin = cluster.connect_as("postgres", "avnadmin");
    admin
        .batch_execute(
            "SELECT pgaudit_siem.configure('https://new-siem.example.com/path', '{\"Authorization\": \"Bearer s3cret-token\", \"X-Org\": \"42\"}', ARRAY['orgs', 'users_orgs'], 'json')",
        )
        .unwrap();
    let row = admin
        .query_one(
            "SELECT enabled, url, headers::text, categories, format FROM pgaudit_siem.settings",
            &[],
        )
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert_eq!(row.get::<_, &str>(1), "https://new-siem.example.com/path");
    assert_eq!(
        row.get::<_, &str>(2),
        r#"{"X-Org": "********", "Authorization": "********"}"#
    );
    assert_eq!(row.get::<_, Vec<String>>(3), ["orgs", "users_orgs"]);
    admin.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
    // The changes are audit events in the document's shape, secrets masked.
    let events: Vec<Value> = admin
        .query("SELECT payload::text FROM pgaudit_siem.events WHERE category = 'siem_settings' ORDER BY xid", &[])
        .unwrap()
        .iter()
        .map(|r| serde_json::from_str(r.get::<_, &str>(0)).unwrap())
        .collect();
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1]["event"],
        serde_json::json!({"category": "siem_settings", "action": "update"})
    );
    assert_eq!(events[1]["changes"]["processed_row_count"], 1);
    assert_eq!(
        events[1]["changes"]["data_before"][0]["siem_integration_enabled"],
        false
    );
    assert_eq!(
        events[1]["changes"]["data_after"][0]["siem_integration_enabled"],
        true
    );
    assert_eq!(
        events[0]["changes"]["data_after"][0]["siem_integration_url"],
        "https://new-siem.example.com/path"
    );
    assert_eq!(events[1]["actor"]["id"], "avnadmin");
    let all_events: String = admin
        .query_one(
            "SELECT string_agg(payload::text, '') FROM pgaudit_siem.events",
            &[],
        )
        .unwrap()
        .get(0);
    assert!(!all_events.contains("s3cret"), "secret in an event");
    // The admin sees the worker (shared memory, not pg_stat_activity privileges).
    wait_until("worker pid", Duration::from_secs(20), || {
        stat(&mut admin, "worker_pid") > 0
    });
    // Only the extension owner can read the real headers.
    let err = admin
        .query("SELECT headers FROM pgaudit_siem.siem_config", &[])
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));

    // Bad input: clear errors, nothing changed.
    let version: i64 = c
        .query_one("SELECT version FROM pgaudit_siem.siem_config", &[])
        .unwrap()
        .get(0);
    for (call, message) in [
        ("SELECT pgaudit_siem.configure('ftp://siem.example.com/x')", "invalid SIEM endpoint URL: the URL scheme must be http or https"),
        ("SELECT pgaudit_siem.configure('https://user:pw@siem.example.com/x')", "invalid SIEM endpoint URL: credentials in the URL are not accepted"),
        ("SELECT pgaudit_siem.configure('not a url')", "invalid SIEM endpoint URL: the URL contains whitespace or control characters"),
        ("SELECT pgaudit_siem.configure(NULL)", "the SIEM endpoint URL must not be NULL"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '[1]')", "headers must be a JSON object"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{\"X\": 1}')", "invalid SIEM header: the value of header \"X\" must be a JSON string"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{\"Bad Name\": \"v\"}')", "invalid SIEM header: a header name is not a valid HTTP token"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{\"X\": \"a\\nb\"}')", "invalid SIEM header: the value of header \"X\" contains characters HTTP headers cannot carry"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{\"Host\": \"h\"}')", "invalid SIEM header: header \"Host\" is set by pgaudit_siem itself"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{}', '{}')", "categories must not be empty"),
        ("SELECT pgaudit_siem.configure('https://siem.example.com', '{}', NULL, 'xml')", "unknown SIEM format \"xml\""),
    ] {
        let err = admin.batch_execute(call).unwrap_err();
        let db = err.as_db_error().unwrap_or_else(|| panic!("{call}: {err}"));
        assert_eq!(db.code(), &SqlState::INVALID_PARAMETER_VALUE, "{call}");
        assert_eq!(db.message(), message, "{call}");
        assert!(db.hint().is_some(), "{call}");
        assert!(!db.message().contains("pw@"), "{call}");
    }
    let after: i64 = c
        .query_one("SELECT version FROM pgaudit_siem.siem_config", &[])
        .unwrap()
        .get(0);
    assert_eq!(after, version);

    // Not for everybody.
    let mut app = cluster.connect_as("postgres", "app");
    for call in [
        "SELECT pgaudit_siem.configure('https://evil.example.com')",
        "SELECT pgaudit_siem.enable()",
        "SELECT pgaudit_siem.disable()",
        "SELECT * FROM pgaudit_siem.test_connection()",
        "SELECT * FROM pgaudit_siem.settings",
        "SELECT * FROM pgaudit_siem.stats",
        "SELECT * FROM pgaudit_siem.dead_letter",
        "SELECT pgaudit_siem.requeue_dead_letter()",
        "SELECT * FROM pgaudit_siem._send_test_event('http://127.0.0.1:1/', '{}', 'json')",
        "SELECT pgaudit_siem._wake_delivery_at_commit()",
        "SELECT pgaudit_siem._start_delivery_at_commit()",
    ] {
        let err = app.batch_execute(call).unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::INSUFFICIENT_PRIVILEGE),
            "{call}"
        );
    }
    // The platform can pin where events may go (and test connections may reach).
    cluster.alter_system(&[(
        "pgaudit_siem.delivery_allowed_hosts",
        "'siem.example.com, *.corp.example'",
    )]);
    let mut admin = cluster.connect_as("postgres", "avnadmin");
    for call in [
        "SELECT pgaudit_siem.configure('https://169.254.169.254/latest/meta-data')",
        "SELECT * FROM pgaudit_siem.test_connection('http://127.0.0.1:1/')",
        "SELECT pgaudit_siem.configure('https://siem.example.com.evil.net/')",
    ] {
        let err = admin.batch_execute(call).unwrap_err();
        let db = err.as_db_error().unwrap();
        assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{call}");
        assert_eq!(
            db.message(),
            "this SIEM endpoint host is not allowed on this server"
        );
    }
    admin.batch_execute("SELECT pgaudit_siem.configure('https://hec.eu.corp.example:8088/services/collector/event')").unwrap();
    cluster.alter_system(&[("pgaudit_siem.delivery_allowed_hosts", "''")]);
    // enable() needs an endpoint.
    c.batch_execute("UPDATE pgaudit_siem.siem_config SET url = NULL, enabled = false")
        .unwrap();
    let err = admin
        .batch_execute("SELECT pgaudit_siem.enable()")
        .unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE)
    );
    assert!(
        !cluster.server_log().contains("s3cret"),
        "secret in the server log"
    );
}

#[test]
fn test_connection_tells_failures_apart() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = cluster("delivery-test-connection");
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    c.execute("SELECT pgaudit_siem.configure($1, '{\"Authorization\": \"Splunk tok\"}', NULL, 'splunk_hec')", &[&receiver.url("/services/collector/event")])
        .unwrap();
    let test = |c: &mut Client,
                url: Option<&str>,
                headers: Option<&str>|
     -> (bool, Option<i32>, f64, Option<String>) {
        let row = c
            .query_one("SELECT ok, http_status, latency_ms, error FROM pgaudit_siem.test_connection($1, $2::text::jsonb)", &[&url, &headers])
            .unwrap();
        (row.get(0), row.get(1), row.get(2), row.get(3))
    };
    // The configured endpoint: HEC health check, then a marked test event.
    let (ok, status, latency, error) = test(&mut c, None, None);
    assert!(ok, "{error:?}");
    assert_eq!(status, Some(200));
    assert!(latency > 0.0);
    let got = receiver.events();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].event["event"]["category"], "pgaudit_siem_test");
    assert_eq!(got[0].event["test"], true);
    assert!(got[0]
        .headers
        .contains(&("authorization".into(), "Splunk tok".into())));
    // A bad token: the health check says 400.
    receiver.set_faults(Faults {
        require_authorization: Some("Splunk right".into()),
        ..Faults::default()
    });
    let (ok, status, _, error) = test(&mut c, None, None);
    assert!(!ok);
    assert_eq!(status, Some(400));
    assert!(error.unwrap().starts_with("authentication: "));
    receiver.clear_faults();
    // Stored headers are not sent to another URL.
    test(&mut c, Some(&receiver.url("/other")), None);
    assert!(receiver
        .events()
        .last()
        .unwrap()
        .headers
        .iter()
        .all(|(k, _)| k != "authorization"));
    // Connection refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let (ok, status, _, error) = test(
        &mut c,
        Some(&format!("http://127.0.0.1:{closed}/")),
        Some("{}"),
    );
    assert!(!ok && status.is_none());
    assert!(
        error.as_deref().unwrap().starts_with("connect: "),
        "{error:?}"
    );
    // HTTP status and authentication.
    receiver.set_faults(Faults {
        status: Some(500),
        ..Faults::default()
    });
    let (ok, status, _, error) = test(&mut c, Some(&receiver.url("/hook")), Some("{}"));
    assert!(!ok && status == Some(500));
    assert!(
        error
            .as_deref()
            .unwrap()
            .starts_with("http_status: HTTP 500"),
        "{error:?}"
    );
    receiver.set_faults(Faults {
        status: Some(401),
        ..Faults::default()
    });
    let (_, _, _, error) = test(&mut c, Some(&receiver.url("/hook")), Some("{}"));
    assert!(
        error
            .as_deref()
            .unwrap()
            .starts_with("authentication: HTTP 401"),
        "{error:?}"
    );
    // Timeout (bounded by pgaudit_siem.delivery_timeout = 2s here).
    receiver.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let (ok, _, _, error) = test(&mut c, Some(&receiver.url("/hook")), Some("{}"));
    assert!(!ok);
    assert!(
        error.as_deref().unwrap().starts_with("timeout: "),
        "{error:?}"
    );
    receiver.clear_faults();
    // TLS: https to a plain-HTTP port.
    let (ok, _, _, error) = test(
        &mut c,
        Some(&format!("https://127.0.0.1:{}/", receiver.port())),
        Some("{}"),
    );
    assert!(!ok);
    assert!(
        error.as_deref().unwrap().starts_with("tls: ")
            || error.as_deref().unwrap().starts_with("protocol: "),
        "{error:?}"
    );
}

#[test]
fn out_of_order_commits_are_delivered_in_transaction_order_without_skips() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = cluster("delivery-order");
    let mut c = cluster.connect();
    setup(&mut c, &receiver.url("/ingest"), "ndjson");
    let mut older = cluster.connect();
    // The older transaction takes its id first but commits last.
    older
        .batch_execute("BEGIN; INSERT INTO t VALUES (1)")
        .unwrap();
    c.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    c.batch_execute("INSERT INTO t VALUES (3)").unwrap();
    assert_stays(
        "nothing is delivered past a running older transaction",
        Duration::from_millis(500),
        || received_markers(&receiver).is_empty(),
    );
    older.batch_execute("COMMIT").unwrap();
    wait_until("all three", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 3
    });
    assert_eq!(received_markers(&receiver), [1, 2, 3]);
    // A rolled-back transaction leaves nothing to deliver.
    c.batch_execute("BEGIN; INSERT INTO t VALUES (-1); ROLLBACK; INSERT INTO t VALUES (4)")
        .unwrap();
    wait_until("the fourth", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 4
    });
    assert_eq!(received_markers(&receiver), [1, 2, 3, 4]);
}

#[test]
fn receiver_outage_and_5xx_are_retried_until_delivered() {
    let receiver = Receiver::start(0, None).unwrap();
    let port = receiver.port();
    let cluster = cluster("delivery-outage");
    let mut c = cluster.connect();
    setup(&mut c, &receiver.url("/ingest"), "ndjson");
    wait_until("settings events", Duration::from_secs(20), || {
        stat(&mut c, "queued") == 0
    });
    receiver.stop();
    for n in 0..20 {
        c.execute("INSERT INTO t VALUES ($1)", &[&n]).unwrap();
    }
    wait_until("retries", Duration::from_secs(20), || {
        stat(&mut c, "retried") >= 3
    });
    // The first attempt may still find the old keep-alive connection closed (protocol
    // error); fresh connections are refused.
    wait_until("connection refused", Duration::from_secs(20), || {
        c.query_one(
            "SELECT coalesce(last_error, '') FROM pgaudit_siem.stats",
            &[],
        )
        .unwrap()
        .get::<_, String>(0)
        .starts_with("connect: connection refused")
    });
    assert_eq!(stat(&mut c, "queued"), 20);
    // Back on the same port: everything arrives, once, in order.
    let receiver = Receiver::start(port, None).unwrap();
    wait_until("all events", Duration::from_secs(20), || {
        received_markers(&receiver).len() >= 20
    });
    assert_eq!(received_markers(&receiver), (0..20).collect::<Vec<_>>());
    wait_until("cursor", Duration::from_secs(5), || {
        stat(&mut c, "queued") == 0
    });
    assert_eq!(
        stat(&mut c, "extract(epoch FROM current_backoff)"),
        0,
        "backoff resets after a success"
    );

    // 503 with Retry-After: 1 twice, then accepted.
    receiver.set_faults(Faults {
        status: Some(503),
        status_count: 2,
        retry_after: Some(1),
        ..Faults::default()
    });
    let started = Instant::now();
    let retried = stat(&mut c, "retried");
    c.batch_execute("INSERT INTO t VALUES (20)").unwrap();
    wait_until("after 503s", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 21
    });
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After was not honoured"
    );
    assert_eq!(stat(&mut c, "retried") - retried, 2);
    assert_eq!(stat(&mut c, "last_http_status"), 200);
    // 429 and a dropped connection are retried too.
    receiver.set_faults(Faults {
        status: Some(429),
        status_count: 1,
        ..Faults::default()
    });
    c.batch_execute("INSERT INTO t VALUES (21)").unwrap();
    wait_until("after 429", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 22
    });
    receiver.set_faults(Faults {
        drop: true,
        ..Faults::default()
    });
    c.batch_execute("INSERT INTO t VALUES (22)").unwrap();
    wait_until("a dropped connection", Duration::from_secs(20), || {
        c.query_one(
            "SELECT coalesce(last_error, '') FROM pgaudit_siem.stats",
            &[],
        )
        .unwrap()
        .get::<_, String>(0)
        .starts_with("protocol: ")
    });
    receiver.clear_faults();
    wait_until("after the drop", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 23
    });
    assert_eq!(received_markers(&receiver), (0..23).collect::<Vec<_>>());
    // disable() stops forwarding; events keep queueing and go out after enable().
    c.batch_execute("SELECT pgaudit_siem.disable(); INSERT INTO t VALUES (23)")
        .unwrap();
    assert_stays(
        "disable() stops forwarding",
        Duration::from_millis(500),
        || received_markers(&receiver).len() == 23,
    );
    assert!(
        stat(&mut c, "queued") >= 2,
        "the event and the disable() settings event wait"
    );
    c.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
    wait_until("after enable()", Duration::from_secs(20), || {
        received_markers(&receiver).len() == 24
    });
}

#[test]
fn refused_events_go_to_dead_letter_and_can_be_requeued() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = cluster("delivery-dead-letter");
    let mut c = cluster.connect();
    setup(&mut c, &receiver.url("/audit/_bulk"), "opensearch_bulk");
    c.batch_execute(
        "CREATE TABLE secrets (n int); SELECT pgaudit_siem.track('secrets', 'secrets')",
    )
    .unwrap();
    wait_until("settings events", Duration::from_secs(20), || {
        stat(&mut c, "queued") == 0
    });
    // The bulk API refuses the items of one category inside a 200 answer.
    receiver.set_faults(Faults {
        bulk_item_status: Some(400),
        bulk_item_category: Some("secrets".into()),
        ..Faults::default()
    });
    c.batch_execute("BEGIN; INSERT INTO t VALUES (1); INSERT INTO secrets VALUES (2); INSERT INTO t VALUES (3); COMMIT").unwrap();
    wait_until("dead letters", Duration::from_secs(20), || {
        stat(&mut c, "in_dead_letter") == 1
    });
    wait_until("cursor", Duration::from_secs(5), || {
        stat(&mut c, "queued") == 0
    });
    assert_eq!(received_markers(&receiver), [1, 3]);
    let row = c.query_one("SELECT category, http_status, response_excerpt, attempts FROM pgaudit_siem.dead_letter", &[]).unwrap();
    assert_eq!(row.get::<_, &str>(0), "secrets");
    assert_eq!(row.get::<_, i32>(1), 400);
    assert!(row.get::<_, &str>(2).contains("\"status\":400"));
    assert_eq!(row.get::<_, i32>(3), 1);
    assert_eq!(stat(&mut c, "dead_lettered"), 1);
    // Bulk items refused with 429 are retried on their own until accepted.
    receiver.set_faults(Faults {
        bulk_item_status: Some(429),
        bulk_item_category: Some("secrets".into()),
        ..Faults::default()
    });
    let retried = stat(&mut c, "retried");
    c.batch_execute("BEGIN; INSERT INTO t VALUES (4); INSERT INTO secrets VALUES (5); COMMIT")
        .unwrap();
    wait_until("item retries", Duration::from_secs(20), || {
        stat(&mut c, "retried") >= retried + 2
    });
    assert_eq!(
        received_markers(&receiver),
        [1, 3, 4],
        "each accepted item arrives once"
    );
    receiver.clear_faults();
    wait_until("the retried item", Duration::from_secs(20), || {
        receiver
            .events()
            .iter()
            .any(|r| r.event["changes"]["data_after"][0]["n"] == 5)
    });
    assert_eq!(stat(&mut c, "in_dead_letter"), 1);
    // Fixed on the SIEM side: requeue, and it arrives with its original id.
    receiver.clear_faults();
    let id: String = c
        .query_one("SELECT id::text FROM pgaudit_siem.dead_letter", &[])
        .unwrap()
        .get(0);
    let requeued: i64 = c
        .query_one("SELECT pgaudit_siem.requeue_dead_letter()", &[])
        .unwrap()
        .get(0);
    assert_eq!(requeued, 1);
    wait_until("requeued event", Duration::from_secs(20), || {
        receiver
            .events()
            .iter()
            .any(|r| r.event["id"] == id.as_str())
    });
    assert_eq!(stat(&mut c, "in_dead_letter"), 0);

    // A batch refused as a whole (4xx for the request) is split so only the bad event is
    // dead-lettered: here the receiver refuses the first request only.
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', NULL, 'ndjson')",
        &[&receiver.url("/ingest")],
    )
    .unwrap();
    wait_until("settings event", Duration::from_secs(20), || {
        stat(&mut c, "queued") == 0
    });
    receiver.set_faults(Faults {
        status: Some(400),
        status_count: 1,
        ..Faults::default()
    });
    let before = received_markers(&receiver).len();
    c.batch_execute("BEGIN; INSERT INTO t VALUES (10); INSERT INTO t VALUES (11); COMMIT")
        .unwrap();
    wait_until("split batch", Duration::from_secs(20), || {
        received_markers(&receiver).len() == before + 2
    });
    assert_eq!(stat(&mut c, "in_dead_letter"), 0);
    // Every request refused: both events go to the dead letter table.
    receiver.set_faults(Faults {
        status: Some(422),
        ..Faults::default()
    });
    c.batch_execute("BEGIN; INSERT INTO t VALUES (12); INSERT INTO t VALUES (13); COMMIT")
        .unwrap();
    wait_until("dead letters", Duration::from_secs(20), || {
        stat(&mut c, "in_dead_letter") == 2
    });
    let statuses: Vec<i32> = c
        .query("SELECT http_status FROM pgaudit_siem.dead_letter", &[])
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(statuses, [422, 422]);
}

#[test]
fn hanging_receiver_never_blocks_writers_or_other_databases() {
    let receiver = Receiver::start(0, None).unwrap();
    let cluster = cluster("delivery-hang");
    let mut c = cluster.connect();
    cluster.alter_system(&[("pgaudit_siem.delivery_timeout", "'10min'")]);
    setup(&mut c, &receiver.url("/ingest"), "ndjson");
    wait_until("settings events", Duration::from_secs(20), || {
        stat(&mut c, "queued") == 0
    });
    receiver.set_faults(Faults {
        hang: true,
        ..Faults::default()
    });
    let requests = receiver.requests();
    c.batch_execute("INSERT INTO t VALUES (0)").unwrap();
    wait_until("a hanging request", Duration::from_secs(20), || {
        receiver.requests() > requests
    });
    // The worker is stuck in a request that will not end for 10 minutes; writers commit.
    for n in 1..=200 {
        c.execute("INSERT INTO t VALUES ($1)", &[&n]).unwrap();
    }
    let activity: String = c
        .query_one(
            "SELECT query FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem delivery'",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(activity, "delivering 1 events");
    // The worker still serves interrupts: creating and dropping another database needs
    // every process to absorb a ProcSignalBarrier.
    c.batch_execute("CREATE DATABASE other").unwrap();
    c.batch_execute("DROP DATABASE other").unwrap();
    receiver.clear_faults();
    // The hung request ends only when its connection does; the timeout is 10 min, so end it
    // by restarting delivery with a configuration change (the worker resends).
    drop(receiver);
    let receiver = Receiver::start(0, None).unwrap();
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', NULL, 'ndjson')",
        &[&receiver.url("/ingest")],
    )
    .unwrap();
    wait_until("all events", Duration::from_secs(30), || {
        received_markers(&receiver).len() >= 201
    });
    assert_eq!(received_markers(&receiver), (0..=200).collect::<Vec<_>>());
}

#[test]
fn worker_sigkill_and_immediate_stop_lose_no_committed_event() {
    let out =
        std::env::temp_dir().join(format!("pgaudit_siem_crash_{}.ndjson", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let receiver = Receiver::start(0, Some(&out)).unwrap();
    let port = receiver.port();
    let mut cluster = cluster("delivery-crash");
    // The SIGKILL below makes the postmaster reset the cluster: expected here.
    cluster.expect_crash_restarts();
    let mut c = cluster.connect();
    setup(&mut c, &receiver.url("/ingest"), "ndjson");
    cluster.alter_system(&[("pgaudit_siem.delivery_batch_events", "50")]);
    // Slow answers keep the worker mid-batch.
    receiver.set_faults(Faults {
        delay_ms: 200,
        ..Faults::default()
    });
    let mut committed = HashSet::new();
    let writer = |c: &mut Client, from: i32, to: i32, committed: &mut HashSet<i64>| {
        for n in from..to {
            if n % 7 == 0 {
                c.batch_execute(&format!("BEGIN; INSERT INTO t VALUES ({}); ROLLBACK", -n))
                    .unwrap();
            } else {
                c.execute("INSERT INTO t VALUES ($1)", &[&n]).unwrap();
                committed.insert(n as i64);
            }
        }
    };
    writer(&mut c, 1, 400, &mut committed);
    wait_until("a batch in flight", Duration::from_secs(20), || {
        receiver.event_count() > 0
    });
    let pid = worker_pid(&mut c, "postgres").expect("worker running");
    // SIGKILL mid-batch: PostgreSQL resets every backend (crash recovery).
    // SAFETY: kill(2) on the worker's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    drop(c);
    // Crash recovery is over once a new worker runs.
    let mut c = loop {
        std::thread::sleep(Duration::from_millis(100));
        if let Ok(mut c) = cluster.try_connect_as("postgres", "postgres", "t") {
            if let Ok(Some(new)) = c
                .query_opt(
                    "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem delivery'",
                    &[],
                )
                .map(|r| r.map(|r| r.get::<_, i32>(0)))
            {
                if new != pid {
                    break c;
                }
            }
        }
    };
    let before = receiver.event_count();
    writer(&mut c, 400, 600, &mut committed);
    // Immediate stop (no shutdown checkpoint) while delivering, then restart.
    wait_until("the new events in flight", Duration::from_secs(20), || {
        receiver.event_count() > before
    });
    drop(c);
    cluster.stop("immediate");
    drop(receiver);
    let receiver = Receiver::start(port, Some(&out)).unwrap();
    cluster.restart();
    let mut c = cluster.connect();
    wait_until("every committed event", Duration::from_secs(90), || {
        stat(&mut c, "queued") == 0
    });
    drop(receiver);
    // Count from the receiver's file across both receiver lifetimes.
    let mut seen: HashMap<i64, usize> = HashMap::new();
    for line in pgaudit_siem_tests::receiver::read_output(&out) {
        if line.pointer("/event/source/table") != Some(&Value::from("t")) {
            continue;
        }
        for row in line["event"]["changes"]["data_after"].as_array().unwrap() {
            *seen.entry(row["n"].as_i64().unwrap()).or_default() += 1;
        }
    }
    let distinct: HashSet<i64> = seen.keys().copied().collect();
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "committed {} events; received {} distinct, {} duplicates",
        committed.len(),
        distinct.len(),
        duplicates
    );
    assert!(
        distinct.iter().all(|n| *n > 0),
        "an event from a rolled-back transaction arrived"
    );
    assert_eq!(distinct, committed, "every committed event arrives");
    let _ = std::fs::remove_file(&out);
}

/// A cluster whose launcher runs, and a database `app` with the extension delivering to
/// `receiver`, its worker running.
fn cluster_with_app(name: &str, receiver: &Receiver) -> (Cluster, Client) {
    let cluster = cluster(name);
    let mut c = cluster.connect();
    // The launcher runs without a database.
    wait_until("launcher", Duration::from_secs(20), || {
        c.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem launcher'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
    c.batch_execute("CREATE DATABASE app").unwrap();
    let mut app = cluster.connect_as("app", "postgres");
    setup(&mut app, &receiver.url("/ingest"), "ndjson");
    wait_until("worker in app", Duration::from_secs(20), || {
        worker_pid(&mut c, "app").is_some()
    });
    (cluster, c)
}

/// No worker ended with an error or a signal.
fn assert_clean_worker_exits(cluster: &Cluster) {
    let log = cluster.server_log();
    assert!(
        !log.lines().any(|l| l.contains("pgaudit_siem")
            && (l.contains("exited with exit code") || l.contains("terminated by signal"))),
        "{log}"
    );
}

#[test]
fn a_worker_comes_with_create_extension_and_goes_with_drop_extension() {
    let receiver = Receiver::start(0, None).unwrap();
    let (cluster, mut c) = cluster_with_app("delivery-extension-lifecycle", &receiver);
    assert_stays(
        "no worker without the extension",
        Duration::from_millis(500),
        || worker_pid(&mut c, "postgres").is_none(),
    );
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    wait_until("event", Duration::from_secs(20), || {
        received_markers(&receiver) == [1]
    });
    wait_until("the cursor", Duration::from_secs(5), || {
        stat(&mut app, "queued") == 0
    });
    app.batch_execute("DROP EXTENSION pgaudit_siem CASCADE; DROP TABLE t")
        .unwrap();
    wait_until("worker gone", Duration::from_secs(20), || {
        worker_pid(&mut c, "app").is_none()
    });
    setup(&mut app, &receiver.url("/ingest"), "ndjson");
    wait_until("worker back", Duration::from_secs(20), || {
        worker_pid(&mut c, "app").is_some()
    });
    app.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    wait_until("event", Duration::from_secs(20), || {
        received_markers(&receiver) == [1, 2]
    });
    assert_clean_worker_exits(&cluster);
}

#[test]
fn renaming_or_copying_a_database_is_not_blocked_by_its_worker() {
    let receiver = Receiver::start(0, None).unwrap();
    let (cluster, mut c) = cluster_with_app("delivery-rename-copy", &receiver);
    c.batch_execute("ALTER DATABASE app RENAME TO app_renamed")
        .unwrap();
    c.batch_execute("ALTER DATABASE app_renamed RENAME TO app")
        .unwrap();
    wait_until(
        "worker restarted after the renames",
        Duration::from_secs(30),
        || worker_pid(&mut c, "app").is_some(),
    );
    c.batch_execute("CREATE DATABASE app_copy TEMPLATE app")
        .unwrap();
    wait_until("worker in the copy", Duration::from_secs(20), || {
        worker_pid(&mut c, "app_copy").is_some()
    });
    let mut copy = cluster.connect_as("app_copy", "postgres");
    copy.batch_execute("INSERT INTO t VALUES (7)").unwrap();
    wait_until("the copy delivers", Duration::from_secs(20), || {
        received_markers(&receiver).contains(&7)
    });
    drop(copy);
    c.batch_execute("DROP DATABASE app_copy").unwrap();
    assert_clean_worker_exits(&cluster);
}

#[test]
fn drop_database_does_not_wait_for_its_worker_and_new_databases_get_one() {
    let receiver = Receiver::start(0, None).unwrap();
    let (cluster, mut c) = cluster_with_app("delivery-drop-database", &receiver);
    let started = Instant::now();
    if let Err(e) = c.batch_execute("DROP DATABASE app") {
        // Seen rarely under load (the connection closed): show what the server said.
        panic!("DROP DATABASE app failed: {e}\n{}", cluster.server_log());
    }
    eprintln!(
        "DROP DATABASE with a running worker took {:?}",
        started.elapsed()
    );
    assert_eq!(worker_pid(&mut c, "app"), None);
    // A database created later gets its worker too.
    c.batch_execute("CREATE DATABASE later").unwrap();
    let mut later = cluster.connect_as("later", "postgres");
    setup(&mut later, &receiver.url("/ingest"), "ndjson");
    wait_until("worker in later", Duration::from_secs(20), || {
        worker_pid(&mut c, "later").is_some()
    });
    later.batch_execute("INSERT INTO t VALUES (3)").unwrap();
    wait_until("event", Duration::from_secs(20), || {
        received_markers(&receiver) == [3]
    });
    assert_clean_worker_exits(&cluster);
}

#[test]
fn sigterm_ends_a_worker_cleanly_and_the_launcher_restarts_it_and_is_itself_restarted() {
    let receiver = Receiver::start(0, None).unwrap();
    let (cluster, mut c) = cluster_with_app("delivery-sigterm", &receiver);
    let pid = worker_pid(&mut c, "app").unwrap();
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until("worker restarted", Duration::from_secs(20), || {
        worker_pid(&mut c, "app").is_some_and(|p| p != pid)
    });
    let mut app = cluster.connect_as("app", "postgres");
    app.batch_execute("INSERT INTO t VALUES (4)").unwrap();
    wait_until("event after the restart", Duration::from_secs(20), || {
        received_markers(&receiver) == [4]
    });
    assert_clean_worker_exits(&cluster);
    // The launcher too comes back after a SIGTERM (a DBA terminating every other
    // backend before maintenance must not end delivery until the next server restart),
    // and then restarts a worker that stops.
    let launcher = |c: &mut Client| -> Option<i32> {
        c.query_opt(
            "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem launcher'",
            &[],
        )
        .unwrap()
        .map(|r| r.get(0))
    };
    let old_launcher = launcher(&mut c).unwrap();
    c.execute("SELECT pg_terminate_backend($1)", &[&old_launcher])
        .unwrap();
    wait_until("launcher restarted", Duration::from_secs(30), || {
        launcher(&mut c).is_some_and(|p| p != old_launcher)
    });
    let pid = worker_pid(&mut c, "app").unwrap();
    c.execute("SELECT pg_terminate_backend($1)", &[&pid])
        .unwrap();
    wait_until(
        "worker restarted by the new launcher",
        Duration::from_secs(20),
        || worker_pid(&mut c, "app").is_some_and(|p| p != pid),
    );
    app.batch_execute("INSERT INTO t VALUES (5)").unwrap();
    wait_until(
        "event after the launcher's restart",
        Duration::from_secs(20),
        || received_markers(&receiver) == [4, 5],
    );
    let restarts = cluster
        .server_log()
        .lines()
        .filter(|l| {
            l.contains("\"pgaudit_siem launcher\"") && l.contains("exited with exit code 1")
        })
        .count();
    assert_eq!(restarts, 1, "{}", cluster.server_log());
}

#[test]
fn workers_run_only_on_a_primary() {
    let receiver = Receiver::start(0, None).unwrap();
    let primary = cluster("delivery-primary");
    let mut c = primary.connect();
    setup(&mut c, &receiver.url("/ingest"), "ndjson");
    wait_until("worker on the primary", Duration::from_secs(20), || {
        worker_pid(&mut c, "postgres").is_some()
    });
    let standby = primary.start_standby(builder("delivery-primary"));
    let mut s = standby.connect();
    let ours = |s: &mut Client| -> i64 {
        s.query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE backend_type LIKE 'pgaudit_siem%' AND backend_type NOT LIKE '%session audit%'",
            &[],
        )
        .unwrap()
        .get(0)
    };
    // Replicated events are not delivered twice: the standby runs no launcher and no worker
    // (only the session-audit shipper, which ships the standby's own sessions).
    c.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    wait_until("replicated event", Duration::from_secs(20), || {
        s.query_one(
            "SELECT count(*) FROM pgaudit_siem.outbox WHERE category = 'orgs'",
            &[],
        )
        .unwrap()
        .get::<_, i64>(0)
            == 1
    });
    assert_stays("no worker on a standby", Duration::from_millis(500), || {
        ours(&mut s) == 0
    });
    wait_until("delivery from the primary", Duration::from_secs(20), || {
        received_markers(&receiver) == [1]
    });
    // Promotion starts them.
    drop(c);
    standby.promote();
    wait_until("worker after promotion", Duration::from_secs(30), || {
        worker_pid(&mut s, "postgres").is_some()
    });
    assert_eq!(ours(&mut s), 2, "launcher and one worker");
}

/// A throwaway CA, a server certificate for 127.0.0.1 and a client certificate, made with
/// the openssl CLI in a directory the server's OS user can read.
fn certificates(dir: &std::path::Path) {
    std::fs::create_dir_all(dir).unwrap();
    let script = r#"set -e
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=pgaudit-siem-test-ca
for who in server client; do
  openssl req -newkey rsa:2048 -nodes -keyout $who.key -out $who.csr -subj /CN=127.0.0.1
done
printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > server.ext
printf 'basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n' > client.ext
for who in server client; do
  openssl x509 -req -in $who.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out $who.pem -days 1 -extfile $who.ext
done
chmod 755 . && chmod 644 *"#;
    let mut cmd = std::process::Command::new("bash");
    cmd.arg("-c").arg(script).current_dir(dir);
    pgaudit_siem_tests::run_checked(cmd, "making test certificates");
}

/// A child process killed when the test ends, also when it fails.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// socat terminating TLS on a free port in front of `target` (mutual TLS if `verify`).
fn tls_front(dir: &std::path::Path, target: u16, verify: bool) -> (KillOnDrop, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let listen = format!(
        "OPENSSL-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork,cert={0}/server.pem,key={0}/server.key,cafile={0}/ca.pem,verify={1}",
        dir.display(),
        u8::from(verify)
    );
    let child = std::process::Command::new("socat")
        .args([listen.as_str(), &format!("TCP:127.0.0.1:{target}")])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map(KillOnDrop)
        .expect("socat (installed by scripts/setup.sh)");
    wait_until("TLS front", Duration::from_secs(10), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (child, port)
}

#[test]
fn https_with_a_private_ca_and_mutual_tls() {
    let dir = std::env::temp_dir().join(format!("pgaudit_siem_tls_{}", std::process::id()));
    certificates(&dir);
    let receiver = Receiver::start(0, None).unwrap();
    let (front, port) = tls_front(&dir, receiver.port(), false);
    let cluster = cluster("delivery-tls");
    let mut c = cluster.connect();
    setup(
        &mut c,
        &format!("https://127.0.0.1:{port}/ingest"),
        "ndjson",
    );
    let test = |c: &mut Client| -> (bool, Option<String>) {
        let row = c
            .query_one("SELECT ok, error FROM pgaudit_siem.test_connection()", &[])
            .unwrap();
        (row.get(0), row.get(1))
    };
    // The built-in Mozilla roots do not know this CA.
    let (ok, error) = test(&mut c);
    assert!(!ok);
    assert!(error.as_deref().unwrap().starts_with("tls: "), "{error:?}");
    // Trust the private CA: test and delivery work.
    let ca = dir.join("ca.pem").display().to_string();
    cluster.alter_system(&[("pgaudit_siem.delivery_ca_file", &format!("'{ca}'"))]);
    c = cluster.connect();
    let (ok, error) = test(&mut c);
    assert!(ok, "{error:?}");
    c.batch_execute("INSERT INTO t VALUES (1)").unwrap();
    wait_until("event over https", Duration::from_secs(20), || {
        received_markers(&receiver) == [1]
    });
    // Mutual TLS: without a client certificate the handshake fails; with one it works.
    drop(front);
    let (_front, mtls_port) = tls_front(&dir, receiver.port(), true);
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', NULL, 'ndjson')",
        &[&format!("https://127.0.0.1:{mtls_port}/ingest")],
    )
    .unwrap();
    let (ok, error) = test(&mut c);
    assert!(!ok, "handshake without a client certificate");
    assert!(
        error
            .as_deref()
            .is_some_and(|e| e.starts_with("tls: ") || e.starts_with("protocol: ")),
        "{error:?}"
    );
    let (cert, key) = (
        dir.join("client.pem").display().to_string(),
        dir.join("client.key").display().to_string(),
    );
    cluster.alter_system(&[
        (
            "pgaudit_siem.delivery_client_cert_file",
            &format!("'{cert}'"),
        ),
        ("pgaudit_siem.delivery_client_key_file", &format!("'{key}'")),
    ]);
    c = cluster.connect();
    let (ok, error) = test(&mut c);
    assert!(ok, "{error:?}");
    c.batch_execute("INSERT INTO t VALUES (2)").unwrap();
    wait_until("event over mutual TLS", Duration::from_secs(20), || {
        received_markers(&receiver) == [1, 2]
    });
    // Only superusers may point the server at files.
    c.batch_execute("CREATE ROLE avnadmin LOGIN IN ROLE pgaudit_admin")
        .unwrap();
    let err = cluster
        .connect_as("postgres", "avnadmin")
        .batch_execute("SHOW pgaudit_siem.delivery_client_key_file")
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::INSUFFICIENT_PRIVILEGE));
    let _ = std::fs::remove_dir_all(&dir);
}
