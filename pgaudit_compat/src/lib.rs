//! Differential harness against Debian's real pgAudit 1.7.
//!
//! # How it works
//! [`Twins::start`] starts two clusters with identical settings: one preloading the real
//! `pgaudit`, one preloading `pgaudit_siem` with `pgaudit.featureEnabled = on`. Tests run
//! the same workload on both and compare what users can observe: settings, error
//! messages and, with the session-audit work, the AUDIT lines of both server logs.
//!
//! # Invariants
//! - Both clusters get exactly the same `postgresql.conf` lines apart from the preload
//!   and the master switch, so any difference comes from the extension.
//! - Intentional differences are listed, with reasons, in `pgaudit_compat/README.md`;
//!   a test that tolerates one names it.

use pgaudit_siem_tests::postgres::Client;
use pgaudit_siem_tests::{Cluster, ClusterBuilder};

/// The oracle and the candidate, configured alike.
pub struct Twins {
    pub pgaudit: Cluster,
    pub siem: Cluster,
}

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

    /// Runs the same closure against a fresh superuser connection to each cluster and
    /// returns both results, oracle first.
    pub fn both<T>(&self, mut f: impl FnMut(&mut Client) -> T) -> (T, T) {
        (f(&mut self.pgaudit.connect()), f(&mut self.siem.connect()))
    }
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
