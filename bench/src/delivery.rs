//! SIEM delivery benchmarks against the local receiver (127.0.0.1):
//! (a) drain a backlog of queued events with `ndjson`: events per second and the
//!     worker's peak private memory;
//! (b) end-to-end latency, commit to receipt, at a steady 500 events/s.
//!
//! Anchors: pg_net (queue table + background worker) "reaches 400 req/s max before
//! request errors" in its maintainers' load test (one event per request); Vector and
//! Fluent Bit batch to about 1 MB. Targets: >= 50,000 events/s, worker RSS < 64 MB,
//! p50 < 50 ms, p99 < 250 ms.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::receiver::Receiver;
use pgaudit_siem_tests::Cluster;

/// A table shaped like the document's example (organisation settings), ~450-byte events.
const SETUP: &str = "
CREATE EXTENSION pgaudit_siem;
CREATE TABLE orgs (n bigint, id bigint, name text, alias text, siem_integration_enabled boolean,
                   siem_integration_url text, updated_at timestamptz);
SELECT pgaudit_siem.track('orgs', 'orgs');
";

const PG_NET_REQUESTS_PER_SECOND: f64 = 400.0;
const TARGET_EVENTS_PER_SECOND: f64 = 50_000.0;
const TARGET_RSS_MB: f64 = 64.0;
const TARGET_P50_MS: f64 = 50.0;
const TARGET_P99_MS: f64 = 250.0;

fn cluster(name: &str) -> Cluster {
    Cluster::builder()
        .name(name)
        .preload("pgaudit_siem")
        .setting("checkpoint_timeout", "'1h'")
        .setting("max_wal_size", "'8GB'")
        .start()
}

fn worker_pid(c: &mut Client) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(row) = c
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'pgaudit_siem delivery'",
                &[],
            )
            .unwrap()
        {
            return row.get(0);
        }
        assert!(Instant::now() < deadline, "no delivery worker");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// (private resident kB, peak resident kB incl. shared buffers) of a process.
fn memory_kb(pid: i32) -> (u64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("RssAnon:"), field("VmHWM:"))
}

fn queued(c: &mut Client) -> i64 {
    c.query_one("SELECT queued FROM pgaudit_siem.stats", &[])
        .unwrap()
        .get(0)
}

pub fn run(events: u64) {
    println!("## SIEM delivery (local receiver on 127.0.0.1)\n");
    let (rate, private_mb, peak_mb, batch, seconds) = drain(events, "ndjson");
    let json_events = (events / 10).max(1);
    let (json_rate, _, _, _, json_seconds) = drain(json_events, "json");
    let (p50_ndjson, p99_ndjson, n_ndjson) = latency("ndjson", 500, 20);
    let (p50_json, p99_json, n_json) = latency("json", 500, 20);
    println!("| measurement | value | target | vs target | anchor | vs anchor |");
    println!("|---|---:|---:|---:|---|---:|");
    println!(
        "| drain {events} queued events, ndjson: events/s ({seconds:.1} s) | {rate:.0} | >= {TARGET_EVENTS_PER_SECOND:.0} | {:.2} | pg_net ~{PG_NET_REQUESTS_PER_SECOND:.0} req/s (1 event each) | {:.0}x |",
        rate / TARGET_EVENTS_PER_SECOND,
        rate / PG_NET_REQUESTS_PER_SECOND
    );
    println!(
        "| drain {json_events} queued events, json (one request per event): events/s ({json_seconds:.1} s) | {json_rate:.0} | | | pg_net ~{PG_NET_REQUESTS_PER_SECOND:.0} req/s | {:.0}x |",
        json_rate / PG_NET_REQUESTS_PER_SECOND
    );
    println!(
        "| worker peak private memory (RssAnon), MB | {private_mb:.1} | < {TARGET_RSS_MB:.0} | {:.2} | pg_net worker ~20 MB (CONTRIBUTING.md) | {:.2} |",
        private_mb / TARGET_RSS_MB,
        private_mb / 20.0
    );
    println!(
        "| worker peak RSS incl. shared buffers it touched (VmHWM), MB | {peak_mb:.1} | | | | |"
    );
    println!("| average batch, events (delivery_batch_bytes = 1 MB) | {batch:.0} | | | Vector / Fluent Bit ~1 MB batches | |");
    for (format, p50, p99, n) in [
        ("ndjson", p50_ndjson, p99_ndjson, n_ndjson),
        ("json", p50_json, p99_json, n_json),
    ] {
        println!(
            "| latency commit→receipt at 500 events/s, {format}, p50 ms ({n} events) | {p50:.1} | < {TARGET_P50_MS:.0} | {:.2} | | |",
            p50 / TARGET_P50_MS
        );
        println!(
            "| latency commit→receipt at 500 events/s, {format}, p99 ms | {p99:.1} | < {TARGET_P99_MS:.0} | {:.2} | | |",
            p99 / TARGET_P99_MS
        );
    }
    println!(
        "\n(vs target: value / target; for memory and latency lower is better, for events/s higher is better.)\n"
    );
}

/// Queues `events` events with delivery disabled, then enables it and times the drain.
fn drain(events: u64, format: &str) -> (f64, f64, f64, f64, f64) {
    let receiver = Receiver::start_with(0, None, false).unwrap();
    let cluster = cluster(&format!("bench-delivery-drain-{format}"));
    let mut c = cluster.connect();
    c.batch_execute(SETUP).unwrap();
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{\"Authorization\": \"Bearer bench\"}', NULL, $2)",
        &[&receiver.url("/ingest"), &format],
    )
    .unwrap();
    // One event per row: a 50,000-row INSERT queues 50,000 events.
    let chunk = 50_000u64;
    let started = Instant::now();
    let mut queued_so_far = 0;
    while queued_so_far < events {
        let rows = chunk.min(events - queued_so_far);
        c.batch_execute(&format!(
            "SET pgaudit_siem.max_rows_per_event = 1;
             INSERT INTO orgs SELECT g, g, 'organisation ' || g, 'org-' || g, g % 2 = 0,
                                     'https://siem-' || g || '.example.com/path', now()
               FROM generate_series({}, {}) g",
            queued_so_far + 1,
            queued_so_far + rows
        ))
        .unwrap();
        queued_so_far += rows;
    }
    c.batch_execute("VACUUM ANALYZE pgaudit_siem.outbox")
        .unwrap();
    let bytes: i64 = c
        .query_one(
            "SELECT sum(octet_length(payload::text))::int8 FROM pgaudit_siem.outbox",
            &[],
        )
        .unwrap()
        .get(0);
    eprintln!(
        "queued {events} events ({:.0} bytes each) in {:.1} s",
        bytes as f64 / events as f64,
        started.elapsed().as_secs_f64()
    );
    let pid = worker_pid(&mut c);
    let started = Instant::now();
    c.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
    let mut peak_private = 0;
    let mut peak_total = 0;
    let mut monitor = cluster.connect();
    loop {
        let (private, total) = memory_kb(pid);
        peak_private = peak_private.max(private);
        peak_total = peak_total.max(total);
        if receiver.event_count() as u64 >= events && queued(&mut monitor) == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(1800),
            "drain did not finish"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let seconds = started.elapsed().as_secs_f64();
    let (private, total) = memory_kb(pid);
    peak_private = peak_private.max(private);
    peak_total = peak_total.max(total);
    let batch: f64 = c
        .query_one(
            "SELECT coalesce(avg_batch_size, 0)::float8 FROM pgaudit_siem.stats",
            &[],
        )
        .unwrap()
        .get(0);
    let received = receiver.event_count() as u64;
    eprintln!(
        "drained {received} events in {seconds:.1} s; receiver requests {}",
        receiver.requests()
    );
    (
        events as f64 / seconds,
        peak_private as f64 / 1024.0,
        peak_total as f64 / 1024.0,
        batch,
        seconds,
    )
}

/// Inserts one event per transaction at `rate`/s for `seconds`; returns (p50, p99, n) in ms.
fn latency(format: &str, rate: u64, seconds: u64) -> (f64, f64, usize) {
    let receiver = Receiver::start_with(0, None, false).unwrap();
    let cluster = cluster(&format!("bench-delivery-latency-{format}"));
    let mut c = cluster.connect();
    c.batch_execute(SETUP).unwrap();
    c.execute(
        "SELECT pgaudit_siem.configure($1, '{}', ARRAY['orgs'], $2)",
        &[&receiver.url("/ingest"), &format],
    )
    .unwrap();
    c.batch_execute("SELECT pgaudit_siem.enable()").unwrap();
    worker_pid(&mut c);
    let insert = c
        .prepare("INSERT INTO orgs VALUES ($1, $1, 'organisation', 'org', true, 'https://siem.example.com/path', now())")
        .unwrap();
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let mut committed_us: HashMap<i64, u64> = HashMap::with_capacity(total as usize);
    let started = Instant::now();
    for n in 0..total as i64 {
        let due = started + interval * n as u32;
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        c.execute(&insert, &[&n]).unwrap();
        committed_us.insert(
            n,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_micros() as u64,
        );
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (receiver.event_count() as u64) < total && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut latencies: Vec<f64> = receiver
        .events()
        .iter()
        .filter_map(|r| {
            let n = r.event.as_i64()?;
            let committed = committed_us.get(&n)?;
            Some(r.received_us.saturating_sub(*committed) as f64 / 1000.0)
        })
        .collect();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let at = |q: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * q).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    eprintln!("{format}: {} of {total} events received", latencies.len());
    (at(0.50), at(0.99), latencies.len())
}
