//! The per-database outbox as a delivery [`Source`]: `pgaudit_siem.outbox` read in
//! `(xid, seq)` order below the delivery horizon, with the cursor, dead letters and
//! statistics in `pgaudit_siem.delivery_state` / `dead_letter`.
//!
//! # Invariants
//! - The horizon is read in a transaction of its own *before* the one that reads
//!   events, so the events are read with a snapshot taken after the activity was read:
//!   a transaction that ended in between is then visible, never skipped.
//! - Only transactions that wrote events to this outbox (and this database's prepared
//!   transactions) hold the horizon back (`events::order`).
//! - Every query is in `sql/queries/`, schema-qualified, and run as an internal
//!   statement under the worker's pinned settings.

use std::time::Duration;

use pgrx::bgworkers::BackgroundWorker;
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::error::DeliveryError;
use super::source::{Batch, Endpoint, Plan, Refused, Source};
use crate::events::chain::Chain;
use crate::settings::DeliverySettings;
use crate::sinks::{self, Event};

/// Rows read per batch at least, whatever `delivery_batch_events` (filtered rows are
/// skipped cheaply).
const MIN_ROWS_PER_READ: usize = 1000;
/// Rows fetched from the outbox cursor at a time.
const FETCH_ROWS: i64 = 256;

const ENDPOINT_SQL: &str = include_str!("../../sql/queries/outbox_endpoint.sql");
const HORIZON_SQL: &str = include_str!("../../sql/queries/outbox_horizon.sql");
const CURSOR_SQL: &str = include_str!("../../sql/queries/outbox_cursor.sql");
const READ_BATCH_SQL: &str = include_str!("../../sql/queries/outbox_read_batch.sql");
const ANY_AFTER_SQL: &str = include_str!("../../sql/queries/outbox_any_after.sql");
const RECORD_FAILURE_SQL: &str = include_str!("../../sql/queries/outbox_record_failure.sql");
const DEAD_LETTER_SQL: &str = include_str!("../../sql/queries/outbox_dead_letter.sql");
const ACKNOWLEDGE_SQL: &str = include_str!("../../sql/queries/outbox_acknowledge.sql");

/// This database's outbox.
pub struct Outbox {
    dboid: u32,
}

impl Outbox {
    pub fn new(dboid: u32) -> Outbox {
        Outbox { dboid }
    }
}

impl Source for Outbox {
    fn next_batch(&mut self, settings: &DeliverySettings) -> Plan {
        let horizon = BackgroundWorker::transaction(horizon);
        let plan = BackgroundWorker::transaction(|| plan(settings, horizon));
        if matches!(plan, Plan::Exit) {
            super::shmem::mark_absent(self.dboid, super::shmem::generation());
        }
        plan
    }

    fn set_waiting(&mut self, waiting: bool) {
        super::shmem::set_waiting(self.dboid, waiting);
    }

    fn gone_reason(&self) -> &'static str {
        "the extension was dropped"
    }

    fn endpoint(&mut self) -> Option<Endpoint> {
        BackgroundWorker::transaction(read_endpoint)
    }

    fn record_failure(&mut self, events: i64, status: Option<u16>, error: &str, backoff: Duration) {
        BackgroundWorker::transaction(|| {
            internal(|| {
                Spi::run_with_args(
                    RECORD_FAILURE_SQL,
                    &[
                        events.into(),
                        error.into(),
                        status.map(i32::from).into(),
                        (backoff.as_millis() as i64).into(),
                    ],
                )
            })
        });
    }

    fn acknowledge(
        &mut self,
        batch: &Batch,
        delivered: i64,
        refused: &[Refused],
        status: Option<u16>,
        rate: f64,
    ) {
        BackgroundWorker::transaction(|| acknowledge(batch, delivered, refused, status, rate));
    }

    fn housekeeping(&mut self) {
        BackgroundWorker::transaction(|| {
            if installed() {
                internal(|| Spi::run("SELECT pgaudit_siem._purge_delivered()"));
            }
        });
    }
}

/// Whether the extension exists in this database (inside a transaction).
pub fn installed() -> bool {
    // SAFETY: catalog lookup inside a transaction.
    unsafe { pg_sys::get_extension_oid(c"pgaudit_siem".as_ptr(), true) != pg_sys::InvalidOid }
}

/// The version this library's SQL queries are written for.
const LIBRARY_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Runs SPI work as internal statements (never audit-logged).
fn internal<R>(f: impl FnOnce() -> Result<R, pgrx::spi::Error>) -> R {
    crate::pg::internal::run(|| {
        f().unwrap_or_else(|e| DeliveryError::Internal(e.to_string()).raise())
    })
}

/// A full transaction id as SQL prints it.
fn parse_xid(text: &str) -> u64 {
    text.parse().unwrap_or_else(|_| {
        DeliveryError::Internal(format!("unreadable transaction id \"{text}\"")).raise()
    })
}

/// The endpoint, if delivery is enabled and configured (inside a transaction).
fn read_endpoint() -> Option<Endpoint> {
    if !installed() {
        return None;
    }
    internal(|| {
        Spi::connect(|client| {
            let rows = client.select(ENDPOINT_SQL, Some(1), &[])?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(None);
            };
            let enabled: bool = row.get(1)?.unwrap_or(false);
            let url: Option<String> = row.get(2)?;
            let (true, Some(url)) = (enabled, url) else {
                return Ok(None);
            };
            let headers: String = row.get(3)?.unwrap_or_default();
            let headers = serde_json::from_str(&headers)
                .map(|h| super::header_pairs(&h))
                .unwrap_or_default();
            let categories: Option<Vec<Option<String>>> = row.get(4)?;
            let format: String = row.get(5)?.unwrap_or_default();
            // configure() refuses unknown formats; a row edited behind its back stops
            // delivery with a warning instead of sending in a format nobody chose.
            let Some(sink) = sinks::by_name(&format) else {
                warning!(
                    "pgaudit_siem: delivery paused: unknown format \"{format}\" in pgaudit_siem.siem_config; supported: {}",
                    sinks::names()
                );
                return Ok(None);
            };
            Ok(Some(Endpoint {
                url,
                headers,
                categories: categories.map(|c| c.into_iter().flatten().collect()),
                sink,
                version: row.get(6)?.unwrap_or(0),
            }))
        })
    })
}

/// The delivery horizon: every event with a smaller order key belongs to a transaction
/// that has ended. Only this database's writers (`events::order`), its prepared
/// transactions and, under the conservative rule, its running transactions hold it back.
fn horizon() -> u64 {
    // SAFETY: plain read of a process-global.
    let dboid = unsafe { pg_sys::MyDatabaseId };
    let (writers, conservative) = crate::events::order::horizon(dboid.to_u32());
    internal(|| {
        Spi::connect(|client| {
            let row = client
                .select(HORIZON_SQL, Some(1), &[conservative.into(), dboid.into()])?
                .first();
            let prepared: Vec<Option<String>> = row.get(1)?.unwrap_or_default();
            let running: Vec<Option<String>> = row.get(2)?.unwrap_or_default();
            Ok(database_horizon(
                writers,
                prepared
                    .iter()
                    .chain(&running)
                    .flatten()
                    .map(|x| parse_xid(x) as u32),
            ))
        })
    })
}

/// The horizon bounded by `running` (32-bit ids of transactions in progress, assigned
/// before the horizon was read, so within 2^31 below it or above it): the oldest of
/// them, or `xmax` itself.
pub fn database_horizon(xmax: u64, running: impl Iterator<Item = u32>) -> u64 {
    running
        // A running id is within 2^31 of xmax (ids assigned after the snapshot are above
        // it): widen it to a full id by its signed distance.
        .map(|x| {
            let below = (xmax as u32).wrapping_sub(x) as i32;
            if below <= 0 {
                xmax
            } else {
                xmax.saturating_sub(below as u64)
            }
        })
        .min()
        .unwrap_or(xmax)
        .min(xmax)
}

/// The next batch (inside a transaction started after [`horizon`]'s).
fn plan(settings: &DeliverySettings, horizon: u64) -> Plan {
    if !installed() {
        return Plan::Exit;
    }
    if let Some(installed) =
        crate::pg::extension::installed_version().filter(|v| v != LIBRARY_VERSION)
    {
        // The library was replaced (a package upgrade) before ALTER EXTENSION UPDATE:
        // the tables are the old version's. Events wait, nothing is lost.
        report_once(&format!(
            "the extension's SQL objects are version {installed} and the library is {LIBRARY_VERSION}; run ALTER EXTENSION pgaudit_siem UPDATE"
        ));
        return Plan::Disabled;
    }
    let Some(endpoint) = read_endpoint() else {
        return Plan::Disabled;
    };
    let key = match super::chain_key() {
        Ok(key) => key,
        Err(problem) => {
            report_once(&problem);
            return Plan::Disabled;
        }
    };
    internal(|| {
        Spi::connect(|client| {
            let Some(row) = client.select(CURSOR_SQL, Some(1), &[])?.into_iter().next() else {
                return Ok(Plan::Idle);
            };
            let last_xid: String = row.get(1)?.unwrap_or_default();
            let last_seq: i64 = row.get(2)?.unwrap_or(0);
            let chain_hash: String = row
                .get(3)?
                .unwrap_or_else(|| crate::events::chain::GENESIS.to_owned());
            let horizon = horizon.to_string();
            let row_limit = settings.batch_events.max(MIN_ROWS_PER_READ);
            let query = READ_BATCH_SQL.replace("{row_limit}", &row_limit.to_string());
            let args = [
                last_xid.as_str().into(),
                last_seq.into(),
                horizon.as_str().into(),
                endpoint.categories.clone().into(),
            ];
            let mut rows = client.open_cursor(query.as_str(), &args);
            let mut events: Vec<Event> = Vec::new();
            let mut forward = Vec::new();
            let mut bytes = 0usize;
            let mut full = false;
            'fetch: loop {
                let table = rows.fetch(FETCH_ROWS)?;
                if table.is_empty() {
                    break;
                }
                for row in table {
                    let payload: Option<String> = row.get(6)?;
                    let forwarded = payload.is_some();
                    let event = Event {
                        xid: parse_xid(&row.get::<String>(1)?.unwrap_or_default()),
                        seq: row.get(2)?.unwrap_or_default(),
                        id: row.get(3)?.unwrap_or_default(),
                        category: row.get(4)?.unwrap_or_default(),
                        epoch_seconds: row.get(5)?.unwrap_or_default(),
                        payload: payload.unwrap_or_default(),
                    };
                    if forwarded {
                        bytes += event.payload.len();
                        forward.push(events.len());
                    }
                    events.push(event);
                    // Rows of categories not forwarded count too, so a long run of them
                    // cannot make one batch unbounded.
                    if forward.len() >= settings.batch_events
                        || bytes >= settings.batch_bytes
                        || events.len() >= row_limit
                    {
                        full = true;
                        break 'fetch;
                    }
                }
            }
            let Some(last) = events.last() else {
                let waiting = client
                    .select(
                        ANY_AFTER_SQL,
                        Some(1),
                        &[last_xid.as_str().into(), last_seq.into()],
                    )?
                    .first()
                    .get_one::<bool>()?
                    .unwrap_or(false);
                return Ok(if waiting { Plan::Blocked } else { Plan::Idle });
            };
            let end = (last.xid, last.seq);
            // Forwarded events are sealed into this database's hash chain, after the
            // last delivered one: a resent batch is sealed the same way again.
            let mut chain = Chain {
                stream: chain_stream(),
                prev: chain_hash,
            };
            for &i in &forward {
                let event = &mut events[i];
                if let Ok((sealed, hash)) = chain.seal(key.as_deref(), event.payload.as_bytes()) {
                    if let Ok(sealed) = String::from_utf8(sealed) {
                        event.payload = sealed;
                        chain.prev = hash;
                    }
                }
            }
            Ok(Plan::Deliver(
                endpoint.clone(),
                Batch {
                    events,
                    forward,
                    end,
                    full,
                    chain_hash: chain.prev,
                },
            ))
        })
    })
}

/// Dead letters, cursor and counters, in one transaction.
fn acknowledge(batch: &Batch, delivered: i64, refused: &[Refused], status: Option<u16>, rate: f64) {
    internal(|| {
        if !refused.is_empty() {
            let event = |r: &Refused| &batch.events[r.index];
            let seqs: Vec<i64> = refused.iter().map(|r| event(r).seq).collect();
            let xids: Vec<String> = refused.iter().map(|r| event(r).xid.to_string()).collect();
            let statuses: Vec<i32> = refused.iter().map(|r| i32::from(r.status)).collect();
            let excerpts: Vec<String> = refused.iter().map(|r| r.excerpt.clone()).collect();
            let attempts: Vec<i32> = refused.iter().map(|r| r.attempts).collect();
            Spi::run_with_args(
                DEAD_LETTER_SQL,
                &[
                    seqs.into(),
                    xids.into(),
                    statuses.into(),
                    excerpts.into(),
                    attempts.into(),
                ],
            )?;
            warning!(
                "pgaudit_siem: {} events refused by the SIEM (HTTP {}) were moved to pgaudit_siem.dead_letter",
                refused.len(),
                refused[0].status
            );
        }
        Spi::run_with_args(
            ACKNOWLEDGE_SQL,
            &[
                batch.end.0.to_string().as_str().into(),
                batch.end.1.into(),
                delivered.into(),
                (refused.len() as i64).into(),
                status.map(i32::from).into(),
                rate.into(),
                batch.chain_hash.as_str().into(),
            ],
        )
    });
}

/// This outbox's chain id: the server's system identifier and the database's oid.
fn chain_stream() -> String {
    // SAFETY: plain reads of process globals.
    let (system, dboid) = unsafe { (pg_sys::GetSystemIdentifier(), pg_sys::MyDatabaseId.to_u32()) };
    format!("outbox:{system}/{dboid}")
}

/// Logs a configuration problem once per distinct problem (the worker polls).
fn report_once(problem: &str) {
    thread_local! {
        static REPORTED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
    }
    REPORTED.with(|r| {
        if *r.borrow() != problem {
            warning!("pgaudit_siem: delivery is paused: {problem}");
            *r.borrow_mut() = problem.to_owned();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::database_horizon;

    #[test]
    fn horizon_is_the_oldest_running_transaction_of_the_database() {
        assert_eq!(database_horizon(1000, [].into_iter()), 1000);
        assert_eq!(database_horizon(1000, [990, 995].into_iter()), 990);
        // Assigned after the snapshot: above xmax, so it does not lower the horizon.
        assert_eq!(database_horizon(1000, [1001].into_iter()), 1000);
        // Across an epoch boundary: xmax 2^32 + 5, a running id just below the wrap.
        let xmax = (1u64 << 32) + 5;
        assert_eq!(
            database_horizon(xmax, [u32::MAX - 1].into_iter()),
            (1u64 << 32) - 2
        );
    }
}
