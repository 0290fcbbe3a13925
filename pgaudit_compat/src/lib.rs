//! Differential harness against Debian's real pgAudit 1.7.
//!
//! # How it works
//! [`Twins::start`] starts two clusters with identical settings: one preloading the real
//! `pgaudit`, one preloading `pgaudit_siem` with `pgaudit.featureEnabled = on`; each has
//! its extension created in `template1`, so every database made for a case has it.
//! A corpus case (`corpus/*.sql`) is a psql script with header directives:
//!
//! ```text
//! -- settings: pgaudit.log = 'all'; pgaudit.log_relation = on
//! -- deviation: D4
//! ```
//!
//! For each case, on each cluster, the harness creates a fresh database, stores the
//! settings on it (`ALTER DATABASE ... SET`), runs the script with `psql` under a unique
//! `application_name`, waits for that session's disconnection record, and collects the
//! session's `AUDIT:` messages from the JSON log, in order. Multi-line statements stay
//! whole because the JSON log keeps each message in one record.
//!
//! # Invariants
//! - Both clusters get exactly the same settings apart from the preload and the master
//!   switch, so any difference comes from the extension.
//! - A difference fails the comparison unless the case names a documented deviation
//!   (`pgaudit_compat/README.md`) whose filter explains it; filters only remove oracle
//!   lines of the documented shape, so an undocumented difference still fails.

use std::path::{Path, PathBuf};
use std::process::Command;

pub use pgaudit_siem_tests::audit_lines;
use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::{pg_bin_dir, Cluster, ClusterBuilder};

/// The oracle and the candidate, configured alike.
pub struct Twins {
    pub pgaudit: Cluster,
    pub siem: Cluster,
}

/// Settings both clusters share for corpus runs. Parallel query is off because pgAudit
/// 1.7.0 logs duplicates from parallel workers (deviation D5, tested separately).
pub const CORPUS_SETTINGS: &[(&str, &str)] = &[("max_parallel_workers_per_gather", "0")];

impl Twins {
    /// Starts both clusters with the same extra settings (`(name, value)` as written to
    /// postgresql.conf).
    pub fn start(settings: &[(&str, &str)]) -> Twins {
        let configure = |builder: ClusterBuilder| {
            settings
                .iter()
                .fold(builder, |b, (name, value)| b.setting(name, value))
        };
        let pgaudit =
            configure(Cluster::builder().name("oracle").preload("pgaudit")).start_logged();
        let siem = configure(Cluster::builder().name("siem").preload("pgaudit_siem"))
            .setting("pgaudit.featureEnabled", "on")
            .start_logged();
        Twins { pgaudit, siem }
    }

    /// Twins ready for corpus cases: extensions created in `template1`.
    pub fn for_corpus() -> Twins {
        let twins = Twins::start(CORPUS_SETTINGS);
        for (cluster, extension) in [(&twins.pgaudit, "pgaudit"), (&twins.siem, "pgaudit_siem")] {
            cluster
                .connect_as("template1", "postgres")
                .batch_execute(&format!("CREATE EXTENSION {extension}"))
                .unwrap_or_else(|e| panic!("CREATE EXTENSION {extension}: {e}"));
        }
        twins
    }

    /// Runs the same closure against a fresh superuser connection to each cluster and
    /// returns both results, oracle first.
    pub fn both<T>(&self, mut f: impl FnMut(&mut Client) -> T) -> (T, T) {
        (f(&mut self.pgaudit.connect()), f(&mut self.siem.connect()))
    }

    /// Runs one corpus case on both clusters and compares the AUDIT lines.
    pub fn run_case(&self, case: &Case) -> CaseResult {
        let oracle = run_on(&self.pgaudit, case);
        let siem = run_on(&self.siem, case);
        let oracle_kept: Vec<String> = oracle
            .iter()
            .filter(|line| !case.deviations.iter().any(|d| d.explains(line)))
            .cloned()
            .collect();
        CaseResult {
            name: case.name.clone(),
            oracle,
            oracle_kept,
            siem,
        }
    }
}

/// One corpus file.
#[derive(Debug, Clone)]
pub struct Case {
    pub name: String,
    pub path: PathBuf,
    pub settings: Vec<String>,
    pub deviations: Vec<Deviation>,
}

/// Documented differences a case may show (see README).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Deviation {
    /// D4: pgAudit 1.7.0 audits range-table entries that need no permission
    /// (partitions added by the planner), printing extra `MISC,???` lines.
    NoPermissionEntries,
}

impl Deviation {
    fn parse(name: &str) -> Deviation {
        match name {
            "D4" => Deviation::NoPermissionEntries,
            other => panic!("unknown deviation {other} (see pgaudit_compat/README.md)"),
        }
    }

    /// Whether an oracle line is of the shape this deviation documents.
    fn explains(&self, line: &str) -> bool {
        match self {
            // <type>,<stmt>,<sub>,MISC,???,TABLE,<partition>,...
            Deviation::NoPermissionEntries => line
                .splitn(7, ',')
                .skip(3)
                .take(3)
                .eq(["MISC", "???", "TABLE"]),
        }
    }
}

#[derive(Debug)]
pub struct CaseResult {
    pub name: String,
    pub oracle: Vec<String>,
    /// Oracle lines left after removing those the case's deviations explain.
    pub oracle_kept: Vec<String>,
    pub siem: Vec<String>,
}

impl CaseResult {
    /// (identical lines, reference lines) for the `N/M identical` summary.
    pub fn score(&self) -> (usize, usize) {
        let identical = self
            .oracle_kept
            .iter()
            .zip(&self.siem)
            .filter(|(a, b)| a == b)
            .count();
        (identical, self.oracle_kept.len().max(self.siem.len()))
    }

    pub fn is_identical(&self) -> bool {
        self.oracle_kept == self.siem
    }

    /// A unified-style diff of the two line lists; oracle lines a documented deviation
    /// explains are listed first with `~`.
    pub fn diff(&self) -> String {
        let mut out = format!(
            "--- pgAudit 1.7 ({})\n+++ pgaudit_siem ({})\n",
            self.name, self.name
        );
        let mut kept = self.oracle_kept.iter().peekable();
        for line in &self.oracle {
            if kept.peek() == Some(&line) {
                kept.next();
            } else {
                out.push_str(&format!("~ {line}   (documented deviation)\n"));
            }
        }
        let n = self.oracle_kept.len().max(self.siem.len());
        for i in 0..n {
            match (self.oracle_kept.get(i), self.siem.get(i)) {
                (Some(a), Some(b)) if a == b => out.push_str(&format!("  {a}\n")),
                (a, b) => {
                    if let Some(a) = a {
                        out.push_str(&format!("- {a}\n"));
                    }
                    if let Some(b) = b {
                        out.push_str(&format!("+ {b}\n"));
                    }
                }
            }
        }
        out
    }
}

/// Reads every `*.sql` case under `dir`, sorted by name.
pub fn load_corpus(dir: &Path) -> Vec<Case> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read corpus {}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sql"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let mut settings = Vec::new();
            let mut deviations = Vec::new();
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("-- settings:") {
                    settings.extend(
                        rest.split(';')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(str::to_owned),
                    );
                } else if let Some(rest) = line.strip_prefix("-- deviation:") {
                    deviations.extend(rest.split(',').map(|d| Deviation::parse(d.trim())));
                }
            }
            Case {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                path,
                settings,
                deviations,
            }
        })
        .collect()
}

/// Creates a fresh database `db` whose sessions get `settings` (`name = value` each).
pub fn fresh_database(cluster: &Cluster, db: &str, settings: &[String]) {
    let mut admin = cluster.connect();
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {db}"))
        .unwrap();
    admin
        .batch_execute(&format!("CREATE DATABASE {db}"))
        .unwrap();
    for setting in settings {
        let (name, value) = setting
            .split_once('=')
            .unwrap_or_else(|| panic!("{db}: setting without '=': {setting}"));
        admin
            .batch_execute(&format!(
                "ALTER DATABASE {db} SET {} = {}",
                name.trim(),
                value.trim()
            ))
            .unwrap_or_else(|e| panic!("{db}: {setting}: {e}"));
    }
}

/// Runs a case on one cluster and returns its session's AUDIT messages in order.
fn run_on(cluster: &Cluster, case: &Case) -> Vec<String> {
    let db = format!("c_{}", case.name.replace('-', "_"));
    fresh_database(cluster, &db, &case.settings);
    let app = format!("case_{}_{}", case.name, cluster.port());
    let out = Command::new(pg_bin_dir().join("psql"))
        .args(["-X", "-q", "-h", "127.0.0.1", "-U", "postgres", "-p"])
        .arg(cluster.port().to_string())
        .arg("-d")
        .arg(&db)
        .arg("-f")
        .arg(&case.path)
        .env("PGAPPNAME", &app)
        .output()
        .expect("run psql");
    // Statements in a case may fail on purpose; psql going away abnormally may not.
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "{}: psql: {}",
        case.name,
        String::from_utf8_lossy(&out.stderr)
    );
    audit_lines(&cluster.application_records(&app))
}

/// What a client sees of a statement's outcome: `Ok` or (SQLSTATE, message, detail, hint).
pub fn outcome(
    client: &mut Client,
    sql: &str,
) -> Result<(), (String, String, Option<String>, Option<String>)> {
    client
        .batch_execute(sql)
        .map_err(|e| match e.as_db_error() {
            Some(db) => (
                db.code().code().to_owned(),
                db.message().to_owned(),
                db.detail().map(str::to_owned),
                db.hint().map(str::to_owned),
            ),
            None => ("client".into(), e.to_string(), None, None),
        })
}
