//! Side-by-side pgbench runs: every configuration runs the same workload in alternating
//! rounds within one process, and the median of each is compared with the first
//! configuration (the anchor). Alternating cancels drift (thermal, noisy neighbours)
//! that would bias back-to-back runs.

use pgaudit_siem_tests::{Cluster, ClusterBuilder};

/// One server configuration under test.
pub struct Config {
    pub label: String,
    pub builder: ClusterBuilder,
}

/// A pgbench workload: the extra pgbench arguments that select it.
#[derive(Clone, Copy)]
pub struct Workload {
    pub name: &'static str,
    pub args: &'static [&'static str],
}

pub const SELECT_ONLY: Workload = Workload {
    name: "select-only",
    args: &["-S"],
};
pub const TPCB_LIKE: Workload = Workload {
    name: "tpcb-like",
    args: &[],
};

pub struct Options {
    pub seconds: u32,
    pub rounds: u32,
    pub clients: u32,
    pub scale: u32,
}

/// Median TPS per (workload, configuration), in input order.
pub struct Results {
    pub workloads: Vec<&'static str>,
    pub configs: Vec<String>,
    /// `tps[w][c]` holds every round's TPS.
    pub tps: Vec<Vec<Vec<f64>>>,
}

pub fn run(configs: Vec<Config>, workloads: &[Workload], opts: &Options) -> Results {
    let clusters: Vec<(String, Cluster)> = configs
        .into_iter()
        .map(|c| {
            let cluster = c.builder.start();
            pgbench(&cluster, &["-i", "-q", "-s", &opts.scale.to_string()]);
            (c.label, cluster)
        })
        .collect();
    let mut tps = vec![vec![Vec::new(); clusters.len()]; workloads.len()];
    for round in 0..opts.rounds {
        for (w, workload) in workloads.iter().enumerate() {
            // Reverse the order every other round so no configuration always goes first.
            let mut order: Vec<usize> = (0..clusters.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for c in order {
                let (label, cluster) = &clusters[c];
                let mut args: Vec<String> = [
                    "-n",
                    "-T",
                    &opts.seconds.to_string(),
                    "-c",
                    &opts.clients.to_string(),
                    "-j",
                    &opts.clients.to_string(),
                ]
                .iter()
                .map(|s| s.to_string())
                .collect();
                args.extend(workload.args.iter().map(|s| s.to_string()));
                let out = pgbench(
                    cluster,
                    &args.iter().map(String::as_str).collect::<Vec<_>>(),
                );
                let value =
                    parse_tps(&out).unwrap_or_else(|| panic!("no tps in pgbench output:\n{out}"));
                eprintln!(
                    "round {} {:<12} {:<40} {value:>10.1} tps",
                    round + 1,
                    workload.name,
                    label
                );
                tps[w][c].push(value);
            }
        }
    }
    Results {
        workloads: workloads.iter().map(|w| w.name).collect(),
        configs: clusters.iter().map(|(l, _)| l.clone()).collect(),
        tps,
    }
}

fn pgbench(cluster: &Cluster, args: &[&str]) -> String {
    let out = cluster
        .pgbench()
        .args(args)
        .arg("postgres")
        .output()
        .expect("run pgbench");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "pgbench {args:?} failed:\n{text}");
    text
}

/// Reads `tps = 1234.5 (without initial connection time)` from pgbench's report.
pub fn parse_tps(output: &str) -> Option<f64> {
    output
        .lines()
        .find(|l| l.starts_with("tps = ") && l.contains("without initial connection time"))
        .and_then(|l| l["tps = ".len()..].split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

impl Results {
    /// A Markdown table: one row per configuration, median TPS and ratio to the anchor
    /// (first configuration) per workload, then the target column if given.
    pub fn markdown(&self, target: impl Fn(&str, usize, f64) -> String) -> String {
        let mut out = String::from("| configuration |");
        for w in &self.workloads {
            out.push_str(&format!(
                " {w} TPS (median) | {w} ratio (per-round min–max) |"
            ));
        }
        out.push_str(" target |\n|---|");
        for _ in &self.workloads {
            out.push_str("---:|---:|");
        }
        out.push_str("---|\n");
        for (c, label) in self.configs.iter().enumerate() {
            out.push_str(&format!("| {label} |"));
            let mut worst_ratio = f64::INFINITY;
            for w in 0..self.workloads.len() {
                let value = median(&self.tps[w][c]);
                let ratio = value / median(&self.tps[w][0]);
                worst_ratio = worst_ratio.min(ratio);
                // Rounds alternate configurations back to back, so round r of this
                // configuration is compared with round r of the anchor.
                let (low, high) = round_ratio_spread(&self.tps[w][c], &self.tps[w][0]);
                out.push_str(&format!(" {value:.0} | {ratio:.3} ({low:.2}–{high:.2}) |"));
            }
            out.push_str(&format!(" {} |\n", target(label, c, worst_ratio)));
        }
        out
    }
}

/// The lowest and highest per-round ratio of `values` to `anchor`.
fn round_ratio_spread(values: &[f64], anchor: &[f64]) -> (f64, f64) {
    values
        .iter()
        .zip(anchor)
        .filter(|(_, a)| **a > 0.0)
        .map(|(v, a)| v / a)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), r| {
            (lo.min(r), hi.max(r))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_pgbench_tps_line() {
        let out = "latency average = 0.5 ms\ninitial connection time = 2.1 ms\ntps = 3970.123456 (without initial connection time)\n";
        assert_eq!(parse_tps(out), Some(3970.123456));
        assert_eq!(
            parse_tps("tps = 12 (including connections establishing)"),
            None
        );
    }

    #[test]
    fn per_round_spread_pairs_rounds() {
        assert_eq!(
            round_ratio_spread(&[90.0, 110.0], &[100.0, 100.0]),
            (0.9, 1.1)
        );
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
