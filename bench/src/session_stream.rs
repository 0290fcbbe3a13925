//! The session-audit stream: pgbench TPS with `pgaudit.log = all` against no extension
//! and real pgAudit (side by side, alternating rounds), then how fast the shipper drains a
//! backlog to the local receiver and how much memory it uses, and the delay from
//! statement to receipt at a fixed rate.

use std::time::{Duration, Instant};

use pgaudit_siem_tests::receiver::{Faults, Receiver};

use crate::pgbench::{self, Config, Options, SELECT_ONLY, TPCB_LIKE};

const STREAM_ONLY_TARGET: f64 = 0.85;
const DRAIN_TARGET: f64 = 100_000.0;

fn stream_cluster(name: &str, url: &str) -> pgaudit_siem_tests::ClusterBuilder {
    crate::bench_cluster(name)
        .preload("pgaudit_siem")
        .setting("pgaudit.featureEnabled", "on")
        .setting("pgaudit.log", "'all'")
        .setting("pgaudit_siem.session_audit_url", &format!("'{url}'"))
        .setting("pgaudit_siem.delivery_batch_events", "5000")
        .setting("pgaudit_siem.delivery_batch_bytes", "'8MB'")
        .setting("pgaudit_siem.session_audit_spool_max_size", "'16GB'")
}

pub fn run(opts: &Options) {
    let receiver = Receiver::start_with(0, None, false).expect("receiver");
    let url = receiver.url("/stream");
    let configs = vec![
        Config {
            label: "no extension".into(),
            builder: crate::bench_cluster("bench-none"),
        },
        Config {
            label: "pgAudit, log = all".into(),
            builder: crate::bench_cluster("bench-pgaudit")
                .preload("pgaudit")
                .setting("pgaudit.log", "'all'"),
        },
        Config {
            label: "stream + server log".into(),
            builder: stream_cluster("bench-stream-log", &url),
        },
        Config {
            label: "stream only (server_log = off)".into(),
            builder: stream_cluster("bench-stream-only", &url)
                .setting("pgaudit_siem.session_audit_server_log", "off"),
        },
        Config {
            label: "stream only, HMAC-keyed chain".into(),
            builder: stream_cluster("bench-stream-hmac", &url)
                .setting("pgaudit_siem.session_audit_server_log", "off")
                .setting(
                    "pgaudit_siem.chain_key_file",
                    &format!("'{}'", chain_key().display()),
                ),
        },
    ];
    let results = pgbench::run(configs, &[SELECT_ONLY, TPCB_LIKE], opts);
    println!(
        "## Session-audit stream, pgaudit.log = all\n\npgbench, {} clients, scale {}, {} rounds of {} s per configuration and workload, alternating; \
         the shipper posts ndjson to the local receiver on the same 2 cores.\n",
        opts.clients, opts.scale, opts.rounds, opts.seconds
    );
    let median_of = |w: usize, c: usize| pgbench::median(&results.tps[w][c]);
    println!(
        "{}",
        results.markdown(|label, c, worst| match label {
            "stream only (server_log = off)" | "stream only, HMAC-keyed chain" => format!(
                "≥ {STREAM_ONLY_TARGET} of no extension: {}",
                if worst >= STREAM_ONLY_TARGET {
                    "met"
                } else {
                    "NOT met"
                }
            ),
            "stream + server log" => {
                let vs: Vec<f64> = (0..results.workloads.len())
                    .map(|w| median_of(w, c) / median_of(w, 1))
                    .collect();
                let met = vs.iter().all(|r| *r >= 1.0);
                format!(
                    "≥ pgAudit: {} → {}",
                    vs.iter()
                        .map(|r| format!("{r:.3}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    if met { "met" } else { "NOT met" }
                )
            }
            _ if c == 0 => "anchor".into(),
            _ => "reference".into(),
        })
    );
    drop(results);
    drain(&receiver, &url);
    latency();
}

/// A chain key file the server's OS user owns, mode 0600.
fn chain_key() -> std::path::PathBuf {
    let path =
        std::env::temp_dir().join(format!("pgaudit_siem-bench-chain-{}", std::process::id()));
    std::fs::write(&path, "0123456789abcdef-bench-chain-key\n").unwrap();
    pgaudit_siem_tests::server_owned(&path, 0o600);
    path
}

fn stats(c: &mut pgaudit_siem_tests::postgres::Client) -> (i64, i64) {
    let row = c
        .query_one(
            "SELECT records_spooled, records_shipped FROM pgaudit_siem.session_audit_stats",
            &[],
        )
        .unwrap();
    (row.get(0), row.get(1))
}

fn shipper_pid(c: &mut pgaudit_siem_tests::postgres::Client) -> i32 {
    c.query_one(
        "SELECT pid FROM pg_stat_activity WHERE backend_type LIKE '%session audit%'",
        &[],
    )
    .unwrap()
    .get(0)
}

fn rss_anon_kb(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A backlog built while the receiver refuses, then drained: records/s and memory.
fn drain(receiver: &Receiver, url: &str) {
    let cluster = stream_cluster("bench-stream-drain", url)
        .setting("pgaudit_siem.session_audit_server_log", "off")
        .start();
    let mut c = cluster.connect();
    c.batch_execute("CREATE EXTENSION pgaudit_siem").unwrap();
    receiver.set_faults(Faults {
        status: Some(503),
        ..Faults::default()
    });
    let status = cluster
        .pgbench()
        .args(["-i", "-q", "-s", "1", "postgres"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let run = cluster
        .pgbench()
        .args(["-n", "-S", "-c", "2", "-j", "2", "-t", "150000", "postgres"])
        .output()
        .unwrap();
    assert!(run.status.success());
    let (spooled, shipped) = stats(&mut c);
    let pid = shipper_pid(&mut c);
    receiver.clear_faults();
    // The shipper first waits out the backoff of its last failed attempt (up to
    // delivery_retry_max): that wait is reported apart, and the drain rate is measured
    // from the first records shipped after the outage to the last.
    let cleared = Instant::now();
    let mut peak = 0u64;
    let mut resumed: Option<(Instant, i64)> = None;
    loop {
        peak = peak.max(rss_anon_kb(pid));
        let (_, now_shipped) = stats(&mut c);
        if resumed.is_none() && now_shipped > shipped {
            resumed = Some((Instant::now(), now_shipped));
        }
        if now_shipped >= spooled {
            break;
        }
        assert!(
            cleared.elapsed() < Duration::from_secs(600),
            "drain too slow"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let finished = Instant::now();
    let (resumed_at, shipped_at_resume) = resumed.expect("records were shipped");
    let whole = (spooled - shipped) as f64 / finished.duration_since(cleared).as_secs_f64();
    // Shipped within one poll: nothing to time after the first records, only the whole.
    let rate = if spooled > shipped_at_resume {
        (spooled - shipped_at_resume) as f64
            / finished.duration_since(resumed_at).as_secs_f64().max(1e-3)
    } else {
        whole
    };
    println!("## Session-audit stream: drain and memory\n");
    println!("| measure | value | target | ratio to target |\n|---|---:|---:|---:|");
    println!(
        "| drain of a {} -record backlog once shipping resumed ({} records after the first batch), records/s | {rate:.0} | ≥ {DRAIN_TARGET:.0} | {:.2} |",
        spooled - shipped,
        spooled - shipped_at_resume,
        rate / DRAIN_TARGET
    );
    println!(
        "| wait from the end of the outage to the first records shipped (the last retry's backoff), s | {:.2} | ≤ delivery_retry_max | - |",
        resumed_at.duration_since(cleared).as_secs_f64()
    );
    println!("| the same drain including that wait, records/s | {whole:.0} | - | - |");
    println!(
        "| shipper peak RssAnon during the drain, MB | {:.1} | bounded (batch of 5000) | - |\n",
        peak as f64 / 1024.0
    );
}

/// Statement-to-receipt delay at a fixed 5,000 statements/s.
fn latency() {
    let receiver = Receiver::start(0, None).expect("receiver");
    let url = receiver.url("/stream");
    let cluster = stream_cluster("bench-stream-latency", &url)
        .setting("pgaudit_siem.session_audit_server_log", "off")
        .start();
    let status = cluster
        .pgbench()
        .args(["-i", "-q", "-s", "1", "postgres"])
        .output()
        .unwrap();
    assert!(status.status.success());
    let before = receiver.event_count();
    let run = cluster
        .pgbench()
        .args([
            "-n", "-S", "-c", "2", "-j", "2", "-R", "5000", "-T", "10", "postgres",
        ])
        .output()
        .unwrap();
    assert!(run.status.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    let expected = 45_000;
    while receiver.event_count() < before + expected && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut delays: Vec<f64> = receiver.events()[before..]
        .iter()
        .filter_map(|r| {
            let t = chrono::DateTime::parse_from_rfc3339(r.event["timestamp"].as_str()?).ok()?;
            Some((r.received_us as f64 - t.timestamp_micros() as f64) / 1000.0)
        })
        .collect();
    delays.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pick = |q: f64| {
        delays
            .get(((delays.len() as f64 - 1.0) * q) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    println!("## Session-audit stream: statement to receipt at 5,000 statements/s\n");
    println!("| records | p50 ms | p99 ms | max ms | target p99 | ratio to target |\n|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {:.1} | {:.1} | {:.1} | < 1000 ms | {:.2} |\n",
        delays.len(),
        pick(0.5),
        pick(0.99),
        pick(1.0),
        pick(0.99) / 1000.0
    );
    drop(cluster);
}
