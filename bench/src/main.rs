//! Benchmark runner. Each benchmark starts its clusters with the test harness, runs the
//! configurations side by side in alternating rounds, and prints a Markdown table with
//! ratios against the anchor configuration measured in the same run.
//!
//! Usage: `bash scripts/bench.sh [overhead] [--seconds N] [--rounds N]`

mod pgbench;

use pgaudit_siem_tests::Cluster;
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
            "overhead" => which.push(arg),
            other => panic!("unknown argument {other}; benchmarks: overhead"),
        }
    }
    if which.is_empty() {
        which.push("overhead".into());
    }
    println!("# pgaudit_siem benchmarks\n");
    println!("{}\n", machine_description());
    for name in which {
        if name == "overhead" {
            overhead(&opts);
        }
    }
}

/// Cost of having pgaudit_siem preloaded with the master switch off.
fn overhead(opts: &Options) {
    let configs = vec![
        Config {
            label: "no extension".into(),
            builder: Cluster::builder().name("bench-none"),
        },
        Config {
            label: "pgaudit_siem, featureEnabled = off".into(),
            builder: Cluster::builder()
                .name("bench-siem-off")
                .preload("pgaudit_siem"),
        },
    ];
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
