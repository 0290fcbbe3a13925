//! Benchmark runner. Each benchmark starts its clusters with the test harness, runs the
//! configurations side by side in alternating rounds, and prints a Markdown table with
//! ratios against the anchor configuration measured in the same run.
//!
//! Usage: `bash scripts/bench.sh [overhead] [session] [session_stream] [capture] [capture_memory] [delivery] [sqlsmith] [trail] [chain] [--seconds N] [--rounds N] [--minutes N] [--events N]`
//! (no name: overhead, session, capture, capture_memory and delivery; sqlsmith is a long robustness run, named explicitly; so are session_stream, trail and chain, the hash chain's part of trail alone).

mod capture;
mod delivery;
mod pgbench;
mod session_stream;
mod sqlsmith;
mod trail;

use pgaudit_siem_tests::{Cluster, ClusterBuilder};
use pgbench::{Config, Options, SELECT_ONLY, TPCB_LIKE};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut which = Vec::new();
    let mut opts = Options {
        seconds: 10,
        rounds: 5,
        clients: 2,
        scale: 10,
    };
    let mut minutes = 10;
    let mut events: u64 = 1_000_000;
    while let Some(arg) = args.next() {
        let mut number = |name: &str| -> u32 {
            args.next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{name} needs a number"))
        };
        match arg.as_str() {
            "--seconds" => opts.seconds = number("--seconds"),
            "--rounds" => opts.rounds = number("--rounds"),
            "--clients" => opts.clients = number("--clients"),
            "--scale" => opts.scale = number("--scale"),
            "--minutes" => minutes = number("--minutes"),
            "--events" => events = u64::from(number("--events")),
            "overhead" | "session" | "session_stream" | "capture" | "capture_memory"
            | "delivery" | "sqlsmith" | "trail" | "chain" => which.push(arg),
            other => {
                panic!("unknown argument {other}; benchmarks: overhead, session, session_stream, capture, capture_memory, delivery, sqlsmith, trail, chain")
            }
        }
    }
    if which.is_empty() {
        which.extend([
            "overhead".into(),
            "session".into(),
            "capture".into(),
            "capture_memory".into(),
            "delivery".into(),
        ]);
    }
    println!("# pgaudit_siem benchmarks\n");
    println!("{}\n", machine_description());
    for name in which {
        match name.as_str() {
            "overhead" => overhead(&opts),
            "session" => session(&opts),
            "session_stream" => session_stream::run(&opts),
            "capture" => capture::run(opts.rounds, opts.seconds),
            "capture_memory" => capture::memory(),
            "delivery" => delivery::run(events),
            "sqlsmith" => sqlsmith::run(minutes),
            "trail" => {
                trail::chain_cost();
                trail::failed_logins(&opts);
            }
            "chain" => trail::chain_cost(),
            _ => unreachable!("validated above"),
        }
    }
}

/// A cluster configured for stable measurements: no checkpoint or autovacuum run lands
/// in a measurement window by chance.
pub fn bench_cluster(name: &str) -> ClusterBuilder {
    Cluster::builder()
        .name(name)
        .setting("checkpoint_timeout", "'1h'")
        .setting("max_wal_size", "'8GB'")
        .setting("autovacuum", "off")
}

/// The anchor and the switched-off extension, first in every pgbench comparison.
fn baseline_configs() -> Vec<Config> {
    vec![
        Config {
            label: "no extension".into(),
            builder: bench_cluster("bench-none"),
        },
        Config {
            label: "pgaudit_siem, featureEnabled = off".into(),
            builder: bench_cluster("bench-siem-off").preload("pgaudit_siem"),
        },
    ]
}

/// Cost of having pgaudit_siem preloaded with the master switch off.
fn overhead(opts: &Options) {
    let configs = baseline_configs();
    let results = pgbench::run(configs, &[SELECT_ONLY, TPCB_LIKE], opts);
    println!(
        "## Overhead when preloaded but switched off\n\npgbench, {} clients, scale {}, {} rounds of {} s per configuration and workload, alternating.\n",
        opts.clients, opts.scale, opts.rounds, opts.seconds
    );
    println!(
        "{}",
        results.markdown(|_, c, worst| match c {
            0 => "anchor".into(),
            _ => format!(
                "≥ 0.98 of no extension: {}",
                if worst >= 0.98 { "met" } else { "NOT met" }
            ),
        })
    );
}

/// Session audit cost against real pgAudit at the same settings. Each pgaudit_siem
/// configuration is listed right after its pgAudit counterpart, so (with the runner's
/// order reversal on odd rounds) the two always run back to back.
fn session(opts: &Options) {
    let levels = ["none", "read,write", "all"];
    let mut configs = baseline_configs();
    for level in levels {
        configs.push(Config {
            label: format!("pgAudit, log = {level}"),
            builder: bench_cluster("bench-pgaudit")
                .preload("pgaudit")
                .setting("pgaudit.log", &format!("'{level}'")),
        });
        configs.push(Config {
            label: format!("pgaudit_siem, log = {level}"),
            builder: bench_cluster("bench-siem")
                .preload("pgaudit_siem")
                .setting("pgaudit.featureEnabled", "on")
                .setting("pgaudit.log", &format!("'{level}'")),
        });
    }
    let results = pgbench::run(configs, &[SELECT_ONLY, TPCB_LIKE], opts);
    println!(
        "## Session audit against pgAudit 1.7\n\npgbench, {} clients, scale {}, {} rounds of {} s per configuration and workload, alternating. \
         Ratios are against no extension; the target compares each pgaudit_siem row with the pgAudit row at the same pgaudit.log.\n",
        opts.clients, opts.scale, opts.rounds, opts.seconds
    );
    let median_of = |w: usize, c: usize| pgbench::median(&results.tps[w][c]);
    println!(
        "{}",
        results.markdown(|label, c, worst| {
            if label.starts_with("pgaudit_siem, log = ") {
                let anchor = c - 1; // its pgAudit counterpart, listed just before it
                let ratios: Vec<f64> = (0..results.workloads.len())
                    .map(|w| median_of(w, c) / median_of(w, anchor))
                    .collect();
                let worst_vs_pgaudit = ratios.iter().cloned().fold(f64::INFINITY, f64::min);
                format!(
                    "vs pgAudit: {} → {}",
                    ratios
                        .iter()
                        .map(|r| format!("{r:.3}"))
                        .collect::<Vec<_>>()
                        .join(" / "),
                    if worst_vs_pgaudit >= 1.0 {
                        "met (≥ 1.00)"
                    } else {
                        "NOT met (≥ 1.00)"
                    }
                )
            } else if label.ends_with("featureEnabled = off") {
                format!(
                    "≥ 0.98 of no extension: {}",
                    if worst >= 0.98 { "met" } else { "NOT met" }
                )
            } else if c == 0 {
                "anchor".into()
            } else {
                "reference".into()
            }
        })
    );
}

fn machine_description() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    format!("Run on {date}: {cores} cores, {cpu}, PostgreSQL 15 (Debian).")
}
