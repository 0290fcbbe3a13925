//! The trail's costs: (1) a flood of 1,000 failed logins per second against pgbench
//! select-only TPS, with no connection logging, PostgreSQL's own `log_connections`, and
//! `pgaudit_siem.log_connections` (the stream), side by side in alternating rounds;
//! (2) the hash chain's per-record work in the shipper (parse only, then canonical form
//! with SHA-256, then with HMAC-SHA256), measured in the same run.

#[path = "../../src/events/chain.rs"]
#[allow(dead_code)]
mod chain;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgaudit_siem_tests::receiver::Receiver;
use pgaudit_siem_tests::{Cluster, ClusterBuilder};

use crate::pgbench::{median, parse_tps, Options};

const FLOOD_PER_SECOND: u64 = 1000;
/// Client threads sharing the flood: one thread waits for each refused backend's fork
/// and round trip, which caps it near 300 attempts/s on this machine.
const FLOODERS: u64 = 4;

/// Refuses `victim` from 127.0.0.1 (a pg_hba.conf `reject` line), trusts the rest.
fn with_rejecting_hba(cluster: &Cluster) {
    std::fs::write(
        cluster.data_dir().join("pg_hba.conf"),
        "local all all trust\nhost all victim 127.0.0.1/32 reject\nhost all all 127.0.0.1/32 trust\n",
    )
    .unwrap();
    cluster.reload_config();
}

/// Failed logins at `FLOOD_PER_SECOND / FLOODERS` per second until `stop`; adds the
/// attempts made to `attempts`.
fn flood(conninfo: String, stop: Arc<AtomicBool>, attempts: Arc<AtomicU64>) {
    let started = Instant::now();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let due = started + Duration::from_micros(n * 1_000_000 * FLOODERS / FLOOD_PER_SECOND);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let refused = pgaudit_siem_tests::postgres::Client::connect(
            &conninfo,
            pgaudit_siem_tests::postgres::NoTls,
        )
        .is_err();
        assert!(refused, "the flood's role got in");
        n += 1;
        attempts.fetch_add(1, Ordering::Relaxed);
    }
}

pub fn failed_logins(opts: &Options) {
    let receiver = Receiver::start_with(0, None, false).expect("receiver");
    let stream = |b: ClusterBuilder| {
        b.preload("pgaudit_siem").setting(
            "pgaudit_siem.session_audit_url",
            &format!("'{}'", receiver.url("/stream")),
        )
    };
    let configs: Vec<(&str, ClusterBuilder)> = vec![
        (
            "no connection logging",
            crate::bench_cluster("bench-logins-none"),
        ),
        (
            "PostgreSQL log_connections = on",
            crate::bench_cluster("bench-logins-pg").setting("log_connections", "on"),
        ),
        (
            "pgaudit_siem.log_connections = on (stream)",
            stream(crate::bench_cluster("bench-logins-siem"))
                .setting("pgaudit_siem.log_connections", "on"),
        ),
    ];
    let clusters: Vec<(&str, Cluster)> = configs
        .into_iter()
        .map(|(label, builder)| {
            let cluster = builder.start();
            cluster
                .connect()
                .batch_execute("CREATE ROLE victim LOGIN")
                .unwrap();
            with_rejecting_hba(&cluster);
            let init = cluster
                .pgbench()
                .args(["-i", "-q", "-s", &opts.scale.to_string(), "postgres"])
                .output()
                .unwrap();
            assert!(init.status.success());
            (label, cluster)
        })
        .collect();
    let mut tps = vec![Vec::new(); clusters.len()];
    let mut rates = vec![Vec::new(); clusters.len()];
    for round in 0..opts.rounds {
        let mut order: Vec<usize> = (0..clusters.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for c in order {
            let (label, cluster) = &clusters[c];
            let stop = Arc::new(AtomicBool::new(false));
            let attempts = Arc::new(AtomicU64::new(0));
            let flooders: Vec<_> = (0..FLOODERS)
                .map(|_| {
                    let (conninfo, stop, attempts) = (
                        cluster.conninfo("postgres", "victim"),
                        stop.clone(),
                        attempts.clone(),
                    );
                    std::thread::spawn(move || flood(conninfo, stop, attempts))
                })
                .collect();
            let started = Instant::now();
            let out = cluster
                .pgbench()
                .args([
                    "-n",
                    "-S",
                    "-T",
                    &opts.seconds.to_string(),
                    "-c",
                    &opts.clients.to_string(),
                    "-j",
                    &opts.clients.to_string(),
                    "postgres",
                ])
                .output()
                .unwrap();
            stop.store(true, Ordering::Relaxed);
            for flooder in flooders {
                flooder.join().unwrap();
            }
            let text = String::from_utf8_lossy(&out.stdout);
            let value = parse_tps(&text).expect("tps");
            let rate = attempts.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
            eprintln!(
                "round {} {label:<45} {value:>10.1} tps, {rate:.0} failed logins/s",
                round + 1
            );
            tps[c].push(value);
            rates[c].push(rate);
        }
    }
    println!(
        "## Failed-login flood ({FLOOD_PER_SECOND}/s, pg_hba.conf reject) during pgbench select-only\n\n\
         {} clients, scale {}, {} rounds of {} s per configuration, alternating; the flood runs \
         from {FLOODERS} threads of the benchmark process on the same 2 cores.\n",
        opts.clients, opts.scale, opts.rounds, opts.seconds
    );
    println!("| configuration | TPS (median) | failed logins/s | × no logging | × PostgreSQL log_connections | target |");
    println!("|---|---:|---:|---:|---:|---|");
    let m: Vec<f64> = tps.iter().map(|t| median(t)).collect();
    for (c, (label, _)) in clusters.iter().enumerate() {
        let target = match c {
            2 => format!(
                "≥ PostgreSQL's log_connections: {}",
                if m[2] >= m[1] * 0.98 {
                    "met (within 2 %)"
                } else {
                    "NOT met"
                }
            ),
            0 => "anchor".into(),
            _ => "reference".into(),
        };
        println!(
            "| {label} | {:.0} | {:.0} | {:.3} | {:.3} | {target} |",
            m[c],
            median(&rates[c]),
            m[c] / m[0],
            m[c] / m[1]
        );
    }
    println!();
}

/// The shipper's per-record work for the chain, on a typical session-audit record.
pub fn chain_cost() {
    let record = br#"{"id":"01a23c79-57f6-741d-b54e-80354d69ee23","timestamp":"2026-12-03T15:15:15.062022Z","sequence":9,"event":{"category":"session_audit","action":"select"},"org":{"id":null,"name":"postgres","alias":"postgres"},"actor":{"id":"app_user","email":null,"first_name":null,"last_name":null},"audit":{"type":"SESSION","statement_id":1,"substatement_id":1,"class":"READ","command":"SELECT","object_type":"TABLE","object_name":"public.pgbench_accounts","statement":"SELECT abalance FROM pgbench_accounts WHERE aid = $1;","parameter":"<none>","rows":null},"line":"SESSION,1,1,READ,SELECT,TABLE,public.pgbench_accounts,SELECT abalance FROM pgbench_accounts WHERE aid = $1;,<none>","session":{"database":"postgres","session_user":"app_user","current_user":"app_user","application_name":"pgbench","client_addr":"127.0.0.1","client_port":39718,"pid":25397,"session_id":"6b118783.6335","backend_start":"2026-12-03T15:15:15.059381Z","transaction_id":null},"source":{"host":"vm","cluster":"7715096631013585686","role":"primary","stream":"01a23c79-5788-74a8-b8f9-0d62b2cebfbe"}}"#;
    const N: u32 = 200_000;
    let time = |f: &mut dyn FnMut()| {
        let started = Instant::now();
        for _ in 0..N {
            f();
        }
        started.elapsed().as_secs_f64() / f64::from(N) * 1e6
    };
    let parse = time(&mut || {
        std::hint::black_box(serde_json::from_slice::<serde_json::Value>(record).unwrap());
    });
    let mut chain = chain::Chain {
        stream: "s".into(),
        prev: chain::GENESIS.into(),
    };
    let reordered = time(&mut || {
        let (_, hash) = chain.seal(None, record).unwrap();
        chain.prev = hash;
    });
    // The same record as the extension writes it now: in canonical form already.
    let canonical = chain::canonical(&serde_json::from_slice(record).unwrap());
    assert!(chain::is_canonical(&canonical));
    let sha = time(&mut || {
        let (_, hash) = chain.seal(None, &canonical).unwrap();
        chain.prev = hash;
    });
    let key = b"0123456789abcdef-chain-key".as_slice();
    let hmac = time(&mut || {
        let (_, hash) = chain.seal(Some(key), &canonical).unwrap();
        chain.prev = hash;
    });
    println!(
        "## Hash chain: the shipper's work per record ({} bytes, one core)\n",
        record.len()
    );
    println!("| step | µs per record | records/s | × parse only |\n|---|---:|---:|---:|");
    for (label, us) in [
        ("parse the record (no chain)", parse),
        (
            "seal a record in 0.2.0's member order: parse, canonical form (RFC 8785), SHA-256",
            reordered,
        ),
        ("seal a record written canonical: check, SHA-256", sha),
        ("seal a record written canonical: check, HMAC-SHA256", hmac),
    ] {
        println!(
            "| {label} | {us:.2} | {:.0} | {:.2} |",
            1e6 / us,
            us / parse
        );
    }
    println!();
}
