//! The trail in SQL: `pgaudit_siem.session_audit_log(since, until)` returns the records
//! the local spool still holds (unshipped ones, and shipped ones for
//! `pgaudit_siem.session_audit_retention`), oldest first, as columns plus the record.
//! (`login_role` is the record's `session.session_user`: a column named `session_user`
//! would be shadowed by the SQL keyword.)
//!
//! # Invariants
//! - Superusers see every record; `pgaudit_admin` members every record except those of
//!   superusers' sessions (judged by the record's `session.session_user` against the
//!   roles that are superusers now); anyone else is refused (EXECUTE is also revoked
//!   from PUBLIC).
//! - Reads segment files lazily, one line at a time (memory bounded by one record);
//!   segments last written before `since` are skipped; a line being written (not yet
//!   whole JSON) is skipped.

use std::collections::HashSet;
use std::io::BufRead;

use pgrx::prelude::*;
use serde_json::Value;

use crate::events::{spool, time};

pgrx::extension_sql_file!(
    "../../sql/session_audit_log.sql",
    name = "session_audit_log",
    requires = ["delegated_config", session_audit_log],
);

type Row = (
    i64,
    TimestampWithTimeZone,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    pgrx::JsonB,
);

#[pg_extern(name = "session_audit_log", volatile, parallel_unsafe)]
fn session_audit_log(
    since: TimestampWithTimeZone,
    until: default!(Option<TimestampWithTimeZone>, "now()"),
) -> TableIterator<
    'static,
    (
        name!(sequence, i64),
        name!(recorded_at, TimestampWithTimeZone),
        name!(action, Option<String>),
        name!(database, Option<String>),
        name!(login_role, Option<String>),
        name!(statement, Option<String>),
        name!(record, pgrx::JsonB),
    ),
> {
    // SAFETY: plain reads of the caller's identity.
    let (role, superuser) = unsafe { (pg_sys::GetUserId(), pg_sys::superuser()) };
    if !superuser && !crate::pg::admin::acts_as_admin(role) {
        crate::pg::error::raise(
            PgSqlErrorCode::ERRCODE_INSUFFICIENT_PRIVILEGE,
            "permission denied for function session_audit_log",
            Some("Only superusers and members of pgaudit_admin may read the session-audit trail."),
        );
    }
    let hidden: HashSet<String> = if superuser {
        HashSet::new()
    } else {
        crate::pg::internal::run(|| {
            Spi::connect(|client| {
                client
                    .select(
                        include_str!("../../sql/queries/superuser_names.sql"),
                        None,
                        &[],
                    )?
                    .map(|row| row.get::<String>(1))
                    .collect::<Result<Vec<_>, _>>()
            })
        })
        .unwrap_or_default()
        .into_iter()
        .flatten()
        .collect()
    };
    let since = since.into_inner() + time::POSTGRES_EPOCH_UNIX_MICROS;
    // SAFETY: clock read.
    let until = until.map_or_else(
        || unsafe { pg_sys::GetCurrentTransactionStartTimestamp() },
        |u| u.into_inner(),
    ) + time::POSTGRES_EPOCH_UNIX_MICROS;
    let since_time = std::time::UNIX_EPOCH + std::time::Duration::from_micros(since.max(0) as u64);
    let segments: Vec<std::path::PathBuf> = spool::segments()
        .into_iter()
        .map(spool::segment_path)
        .filter(|path| {
            std::fs::metadata(path)
                .and_then(|m| m.modified())
                .map_or(true, |modified| modified >= since_time)
        })
        .collect();
    // The segment being written holds records only up to here (a prepared one is
    // longer): records written after this call started are not returned.
    let snapshot = spool::snapshot();
    let current = (
        spool::segment_path(snapshot.segment),
        snapshot.segment_bytes,
    );
    TableIterator::new(Records {
        segments: segments.into_iter(),
        current_segment: current,
        current: None,
        since,
        until,
        hidden,
    })
}

struct Records {
    segments: std::vec::IntoIter<std::path::PathBuf>,
    /// The segment being written and the length of its records.
    current_segment: (std::path::PathBuf, u64),
    current: Option<std::io::Lines<std::io::BufReader<std::io::Take<std::fs::File>>>>,
    since: i64,
    until: i64,
    hidden: HashSet<String>,
}

impl Iterator for Records {
    type Item = Row;

    fn next(&mut self) -> Option<Row> {
        loop {
            let Some(lines) = self.current.as_mut() else {
                let path = self.segments.next()?;
                // A segment removed since it was listed (expired) has nothing to read.
                let limit = if path == self.current_segment.0 {
                    self.current_segment.1
                } else {
                    u64::MAX
                };
                self.current = std::fs::File::open(path)
                    .ok()
                    .map(|f| std::io::BufReader::new(std::io::Read::take(f, limit)).lines());
                continue;
            };
            let Some(line) = lines.next() else {
                self.current = None;
                continue;
            };
            let Ok(line) = line else {
                self.current = None;
                continue;
            };
            let Ok(record) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            if let Some(row) = self.row(record) {
                return Some(row);
            }
        }
    }
}

impl Records {
    fn row(&self, record: Value) -> Option<Row> {
        let micros = record
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
            .map(|t| t.timestamp_micros())?;
        if micros < self.since || micros > self.until {
            return None;
        }
        let text = |path: &str| {
            record
                .pointer(path)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        let session_user = text("/session/session_user");
        if session_user
            .as_ref()
            .is_some_and(|u| self.hidden.contains(u))
        {
            return None;
        }
        let recorded_at =
            TimestampWithTimeZone::try_from(micros - time::POSTGRES_EPOCH_UNIX_MICROS).ok()?;
        Some((
            record.get("sequence").and_then(Value::as_i64).unwrap_or(0),
            recorded_at,
            text("/event/action"),
            text("/session/database"),
            session_user,
            text("/audit/statement"),
            pgrx::JsonB(record),
        ))
    }
}
