//! The session-audit stream's shipper: one background worker per server that posts the
//! spool (`events::spool`) to `pgaudit_siem.session_audit_url` with the same worker
//! loop, sinks, retries and dead letter as change-capture delivery.
//!
//! # Invariants
//! - Runs on primaries and hot standbys alike (`BgWorkerStart_ConsistentState`, no
//!   database connection): a standby ships the records of its own sessions.
//! - At least once, in `sequence` order: the acknowledged sequence is persisted only
//!   after the SIEM accepted (or refused for good) every record up to it.
//! - The spool is flushed to disk every `session_audit_sync_interval`, whatever the
//!   worker is doing (waiting for the SIEM included).
//! - The headers file is read by the shipper only, must be private to the server's OS
//!   user (no group or other permission bits), and its contents never appear in logs,
//!   errors or statistics.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::source::{Batch, Endpoint, Plan, Refused, Source};
use super::worker::{self, Worker};
use crate::events::chain::{self, Chain};
use crate::events::{json, spool};
use crate::settings::{self, DeliverySettings};
use crate::sinks::{self, Event, Origin};

pub fn register() {
    BackgroundWorkerBuilder::new("pgaudit_siem session audit shipper")
        .set_type("pgaudit_siem session audit shipper")
        .set_library("pgaudit_siem")
        .set_function("pgaudit_siem_session_shipper_main")
        // After enable_spi_access, which would make it primary-only (RecoveryFinished).
        .enable_spi_access()
        .set_start_time(BgWorkerStartTime::ConsistentState)
        .set_restart_time(Some(Duration::from_secs(1)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgaudit_siem_session_shipper_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    // No database: only shared catalogs, so it runs on any server (standbys too) and
    // shows in pg_stat_activity.
    BackgroundWorker::connect_worker_to_spi(None, None);
    // SAFETY: static C string.
    unsafe { pg_sys::pgstat_report_appname(c"pgaudit_siem session audit".as_ptr()) };
    let snapshot = spool::snapshot();
    let acknowledged = snapshot.shipped;
    let source = SpoolSource {
        reader: spool::Reader::after(acknowledged),
        acknowledged,
        chain: Chain {
            stream: stream_label(&snapshot),
            prev: String::from_utf8_lossy(&snapshot.shipped_hash).into_owned(),
        },
        pending_bytes: 0,
        last_sync: Instant::now(),
        synced_from: 0,
        synced_below: 0,
        reported_problem: None,
        prepare_failed: false,
        // (The monotonic clock may be younger than the interval right after boot.)
        last_removal: Instant::now()
            .checked_sub(REMOVAL_INTERVAL)
            .unwrap_or_else(Instant::now),
        removed_up_to: 0,
        removal_due: None,
        release_window: [0; RELEASE_PASSES],
        // Not a sequence: the first pass runs.
        released_up_to: u64::MAX,
        release_failed: false,
    };
    let origin = Origin {
        host: worker::host_name(),
        source: "pgaudit_siem:session_audit".into(),
    };
    Worker::new(source, origin, worker::spawn_sender()).run();
    crate::pg::worker_exit::exit_to_be_restarted("session audit shipper");
}

struct SpoolSource {
    reader: spool::Reader,
    acknowledged: u64,
    /// The hash chain, after record `acknowledged`.
    chain: Chain,
    /// Spool bytes of the batch in flight.
    pending_bytes: u64,
    last_sync: Instant,
    /// Segments from this one on may hold unflushed records.
    synced_from: u64,
    /// Every record below this sequence is on disk.
    synced_below: u64,
    /// The configuration problem last reported (each is logged once).
    reported_problem: Option<String>,
    /// Preparing the next segment failed last time (reported once).
    prepare_failed: bool,
    /// When expired segments were last looked for, up to which acknowledged sequence,
    /// and when the oldest segment kept expires.
    last_removal: Instant,
    removed_up_to: u64,
    removal_due: Option<Instant>,
    /// What the last `RELEASE_PASSES` page-release passes found fully shipped (the
    /// segments below each; 0 before the first), oldest first, and the acknowledged
    /// sequence at the last.
    release_window: [u64; RELEASE_PASSES],
    released_up_to: u64,
    release_failed: bool,
}

/// How often at most the shipper looks for expired segments (a directory listing).
const REMOVAL_INTERVAL: Duration = Duration::from_secs(1);
/// For how many passes a shipped segment is advised out of the page cache.
const RELEASE_PASSES: usize = 5;

impl SpoolSource {
    /// Shipped records leave the spool once session_audit_retention has passed, also
    /// while nothing new is shipped.
    fn remove_expired(&mut self) {
        self.last_removal = Instant::now();
        self.removal_due = match spool::remove_expired(settings::session_stream().retention) {
            Ok(wait) => wait.map(|w| self.last_removal + w),
            Err(e) => {
                warning!("pgaudit_siem: removing expired session-audit segments failed: {e}");
                None
            }
        };
        self.removed_up_to = self.acknowledged;
    }

    /// Shipped segments leave the page cache: each is advised in every pass for
    /// `RELEASE_PASSES` passes after it was fully shipped, so that pages still dirty at
    /// the first advice (queued for writing then) go too once written.
    fn release_shipped_pages(&mut self) {
        let from = self.release_window[0];
        let (next, failure) = spool::release_shipped_pages(from);
        self.release_window.rotate_left(1);
        self.release_window[RELEASE_PASSES - 1] = next;
        self.released_up_to = self.acknowledged;
        match failure {
            Some(e) if !self.release_failed => {
                self.release_failed = true;
                warning!("pgaudit_siem: releasing the page cache of shipped session-audit segments failed: {e}");
            }
            Some(_) => {}
            None => self.release_failed = false,
        }
    }

    /// At most once a second, and only when there is something to do: expired segments
    /// are removed after new acknowledgements or when the retention of the oldest one
    /// kept runs out; shipped segments leave the page cache.
    fn maintain_segments(&mut self) {
        if self.last_removal.elapsed() < REMOVAL_INTERVAL {
            return;
        }
        if self.acknowledged != self.removed_up_to
            || self.removal_due.is_some_and(|due| Instant::now() >= due)
        {
            self.remove_expired();
        }
        // Sequences only grow: equal ends mean every pass of the window found the same.
        let settled = self.release_window[0] == self.release_window[RELEASE_PASSES - 1];
        if self.acknowledged != self.released_up_to || !settled {
            self.last_removal = Instant::now();
            self.release_shipped_pages();
        }
    }

    fn report(&mut self, problem: Option<String>) {
        if problem != self.reported_problem {
            if let Some(p) = &problem {
                warning!("pgaudit_siem: the session-audit stream is paused: {p}");
            }
            self.reported_problem = problem;
        }
    }

    fn configured_endpoint(&self) -> Result<Option<Endpoint>, String> {
        let stream = settings::session_stream();
        if stream.url.is_empty() {
            return Ok(None);
        }
        if let Some(problem) = super::url_problem(&stream.url) {
            return Err(format!("pgaudit_siem.session_audit_url: {problem}"));
        }
        let sink = sinks::by_name(&stream.format).ok_or_else(|| {
            format!(
                "unknown pgaudit_siem.session_audit_format \"{}\"; supported: {}",
                stream.format,
                sinks::names()
            )
        })?;
        let headers = if stream.headers_file.is_empty() {
            Vec::new()
        } else {
            read_headers(&stream.headers_file)?
        };
        let mut hash = DefaultHasher::new();
        (&stream.url, &stream.format, &headers).hash(&mut hash);
        Ok(Some(Endpoint {
            url: stream.url,
            headers,
            categories: None,
            sink,
            version: hash.finish() as i64,
        }))
    }
}

/// `Name: value` lines (blank lines and `#` comments skipped) from a file only the
/// server's OS user may read. Errors never quote the file's contents.
fn read_headers(path: &str) -> Result<Vec<(String, String)>, String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("pgaudit_siem.session_audit_headers_file: {e}"))?;
    if meta.mode() & 0o077 != 0 {
        return Err("pgaudit_siem.session_audit_headers_file must not be accessible to group or others (chmod 600)".into());
    }
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("pgaudit_siem.session_audit_headers_file: {e}"))?;
    let mut headers = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, value)) = line.split_once(':') else {
            return Err(format!(
                "pgaudit_siem.session_audit_headers_file line {}: expected \"Name: value\"",
                number + 1
            ));
        };
        let (name, value) = (name.trim(), value.trim());
        if let Some(problem) =
            super::header_problem(name, &serde_json::Value::String(value.to_owned()))
        {
            return Err(format!(
                "pgaudit_siem.session_audit_headers_file line {}: {problem}",
                number + 1
            ));
        }
        headers.push((name.to_owned(), value.to_owned()));
    }
    Ok(headers)
}

/// The chain's id: the stream's.
fn stream_label(snapshot: &spool::Snapshot) -> String {
    uuid::Uuid::from_bytes(snapshot.stream_id)
        .hyphenated()
        .to_string()
}

/// The record's id.
fn record_id(line: &str) -> String {
    json::top_level_plain_string(line.as_bytes(), b"id")
        .unwrap_or_default()
        .to_owned()
}

/// The record's creation time in seconds since the epoch.
fn record_time(line: &str) -> f64 {
    json::top_level_plain_string(line.as_bytes(), b"timestamp").map_or(0.0, epoch_seconds)
}

/// An RFC 3339 time in seconds since the epoch (0 if it is not one).
fn epoch_seconds(time: &str) -> f64 {
    chrono::DateTime::parse_from_rfc3339(time).map_or(0.0, |t| t.timestamp_micros() as f64 / 1e6)
}

impl Source for SpoolSource {
    fn next_batch(&mut self, settings: &DeliverySettings) -> Plan {
        let endpoint = match self.configured_endpoint() {
            Ok(Some(e)) => {
                self.report(None);
                e
            }
            Ok(None) => return Plan::Disabled,
            Err(problem) => {
                self.report(Some(problem));
                return Plan::Disabled;
            }
        };
        let snapshot = spool::snapshot();
        if !snapshot.ready {
            return Plan::Disabled;
        }
        // Only flushed records are shipped: after an operating-system crash the SIEM never
        // holds a sequence the spool lost (and would reuse).
        if snapshot.next_sequence > self.synced_below {
            let below = snapshot.next_sequence;
            match spool::sync_from(self.synced_from) {
                Ok(()) => {
                    self.synced_below = below;
                    self.synced_from = snapshot.segment;
                    self.last_sync = Instant::now();
                }
                Err(e) => {
                    warning!("pgaudit_siem: flushing the session-audit spool failed: {e}");
                    return Plan::Idle;
                }
            }
        }
        if snapshot.shipped != self.acknowledged || self.chain.stream != stream_label(&snapshot) {
            // The spool was rebuilt (a copy found, a crash restart): start over from it.
            self.acknowledged = snapshot.shipped;
            self.reader.rewind(self.acknowledged);
            // Its segments may number from 1 again.
            self.release_window = [0; RELEASE_PASSES];
            self.chain = Chain {
                stream: stream_label(&snapshot),
                prev: String::from_utf8_lossy(&snapshot.shipped_hash).into_owned(),
            };
        }
        let key = match super::chain_key() {
            Ok(key) => key,
            Err(problem) => {
                self.report(Some(problem));
                return Plan::Disabled;
            }
        };
        let records = match self.reader.read(
            self.synced_below,
            settings.batch_events,
            settings.batch_bytes,
        ) {
            Ok(r) => r,
            Err(e) => {
                warning!("pgaudit_siem: reading the session-audit spool failed: {e}");
                self.reader.rewind(self.acknowledged);
                return Plan::Idle;
            }
        };
        let Some(&(last, _)) = records.last() else {
            return Plan::Idle;
        };
        let full = records.len() >= settings.batch_events
            || records.iter().map(|r| r.1.len()).sum::<usize>() >= settings.batch_bytes;
        let needs_time = endpoint.sink.needs_time();
        let oldest = records.first().map_or(0.0, |r| record_time(&r.1));
        // Each record is sealed into the hash chain after the acknowledged one; a resent
        // batch is sealed again from the same point, so it arrives byte for byte the same.
        let mut chain = self.chain.clone();
        let spool_bytes: u64 = records.iter().map(|r| r.1.len() as u64 + 1).sum();
        let events: Vec<Event> = records
            .into_iter()
            .map(|(sequence, payload)| {
                // One pass checks the canonical form and finds the id and time; records
                // written otherwise (0.2.0's member order) take the slower path.
                let members = chain::canonical_text_members(&payload, [b"id", b"timestamp"]);
                let (id, epoch_seconds) = match members {
                    Some([id, time]) => (
                        id.and_then(json::plain_string)
                            .unwrap_or_default()
                            .to_owned(),
                        if needs_time {
                            time.and_then(json::plain_string).map_or(0.0, epoch_seconds)
                        } else {
                            0.0
                        },
                    ),
                    None => (
                        record_id(&payload),
                        if needs_time {
                            record_time(&payload)
                        } else {
                            0.0
                        },
                    ),
                };
                let canonical = members.is_some();
                let payload = match chain.seal_owned(key.as_deref(), payload, canonical) {
                    Ok((sealed, hash)) => {
                        chain.prev = hash;
                        sealed
                    }
                    // Not JSON (a damaged spool): shipped as it is, outside the chain,
                    // which the verifier then reports.
                    Err(unsealed) => unsealed,
                };
                Event {
                    xid: 0,
                    seq: sequence as i64,
                    id,
                    category: "session_audit".into(),
                    epoch_seconds,
                    payload,
                }
            })
            .collect();
        self.pending_bytes = spool_bytes;
        spool::set_oldest_unshipped((oldest * 1e6) as i64);
        let forward = (0..events.len()).collect();
        Plan::Deliver(
            endpoint,
            Batch {
                events,
                forward,
                end: (0, last as i64),
                full,
                chain_hash: chain.prev,
            },
        )
    }

    fn endpoint(&mut self) -> Option<Endpoint> {
        self.configured_endpoint().ok().flatten()
    }

    fn record_failure(
        &mut self,
        _events: i64,
        status: Option<u16>,
        error: &str,
        _backoff: Duration,
    ) {
        spool::record_failure(status, error);
    }

    fn acknowledge(
        &mut self,
        batch: &Batch,
        _delivered: i64,
        refused: &[Refused],
        status: Option<u16>,
        _rate: f64,
    ) {
        if !refused.is_empty() {
            let lines: Vec<String> = refused
                .iter()
                .map(|r| {
                    serde_json::json!({
                        "http_status": r.status,
                        "response_excerpt": r.excerpt,
                        "attempts": r.attempts,
                        "record": batch.events[r.index].payload,
                    })
                    .to_string()
                })
                .collect();
            if let Err(e) = spool::dead_letter(&lines) {
                // Not acknowledged: the batch stays and is sent again (duplicates, no loss).
                warning!("pgaudit_siem: writing the session-audit dead letter failed ({e}); the records stay in the spool");
                self.reader.rewind(self.acknowledged);
                return;
            }
            warning!("pgaudit_siem: {} session-audit records refused by the SIEM were written to {}/dead_letter.ndjson", refused.len(), spool::DIR);
        }
        let end = batch.end.1 as u64;
        let bytes = std::mem::take(&mut self.pending_bytes);
        let result =
            spool::acknowledge(end, &batch.chain_hash, bytes, refused.len() as u64, status);
        self.acknowledged = end;
        self.chain.prev = batch.chain_hash.clone();
        if let Err(e) = result {
            // The next start resends from the persisted position: duplicates, no loss.
            warning!("pgaudit_siem: recording the shipped position failed: {e}");
        }
    }

    fn housekeeping(&mut self) {
        self.remove_expired();
    }

    fn gone_reason(&self) -> &'static str {
        "the spool is gone"
    }

    fn tick_interval(&self) -> Option<Duration> {
        Some(
            settings::session_stream()
                .sync_interval
                .min(Duration::from_millis(100)),
        )
    }

    fn tick(&mut self) {
        self.maintain_segments();
        if !settings::session_stream_enabled() {
            // No stream, so no records to make room for.
            return self.sync_if_due();
        }
        let (_, segment_bytes) = settings::session_stream_limits();
        match spool::prepare_next_segment(segment_bytes) {
            Ok(()) => self.prepare_failed = false,
            // Rotations then start an empty file, as without a prepared segment.
            Err(e) if !self.prepare_failed => {
                self.prepare_failed = true;
                warning!(
                    "pgaudit_siem: preparing the next session-audit spool segment failed: {e}"
                );
            }
            Err(_) => {}
        }
        self.sync_if_due();
    }
}

impl SpoolSource {
    /// Flushes the spool every session_audit_sync_interval.
    fn sync_if_due(&mut self) {
        if self.last_sync.elapsed() < settings::session_stream().sync_interval {
            return;
        }
        self.last_sync = Instant::now();
        let snapshot = spool::snapshot();
        match spool::sync_from(self.synced_from) {
            Ok(()) => {
                self.synced_from = snapshot.segment;
                self.synced_below = self.synced_below.max(snapshot.next_sequence);
            }
            Err(e) => warning!("pgaudit_siem: flushing the session-audit spool failed: {e}"),
        }
    }
}

/// `pgaudit_siem._session_audit_stats()`: the stream's state (the view
/// `pgaudit_siem.session_audit_stats` shows it to superusers and pgaudit_admin).
#[pg_extern(name = "_session_audit_stats", volatile, parallel_safe)]
fn session_audit_stats() -> TableIterator<
    'static,
    (
        name!(enabled, bool),
        name!(stream_id, Option<String>),
        name!(records_spooled, i64),
        name!(records_shipped, i64),
        name!(records_unshipped, i64),
        name!(spool_bytes, i64),
        name!(oldest_unshipped_age_s, Option<f64>),
        name!(fallbacks_to_server_log, i64),
        name!(dead_lettered, i64),
        name!(last_http_status, Option<i32>),
        name!(last_error, Option<String>),
    ),
> {
    let s = spool::snapshot();
    let spooled = s.next_sequence.saturating_sub(1);
    let unshipped = spooled.saturating_sub(s.shipped);
    let age = (unshipped > 0 && s.oldest_unshipped_micros > 0).then(|| {
        (crate::events::time::now_unix_micros() - s.oldest_unshipped_micros).max(0) as f64 / 1e6
    });
    TableIterator::once((
        settings::session_stream_enabled(),
        s.ready
            .then(|| uuid::Uuid::from_bytes(s.stream_id).to_string()),
        spooled as i64,
        s.shipped as i64,
        unshipped as i64,
        s.total_bytes as i64,
        age,
        s.fallbacks as i64,
        s.dead_lettered as i64,
        (s.last_http_status != 0).then_some(s.last_http_status),
        spool::last_error(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_id_time_and_sequence_are_read_from_either_member_order() {
        let id = "01a23c00-6048-75e7-a57f-285724ff403f";
        let time = "2024-12-25T14:57:10.123456Z";
        for line in [
            // As 0.1 and 0.2.0 wrote them, and in canonical (name) order.
            format!(r#"{{"id":"{id}","timestamp":"{time}","sequence":7,"event":{{}}}}"#),
            format!(
                r#"{{"actor":{{"id":"x"}},"event":{{}},"id":"{id}","line":"\"sequence\":1","sequence":7,"timestamp":"{time}"}}"#
            ),
        ] {
            assert_eq!(record_id(&line), id);
            assert_eq!(record_time(&line), 1_735_138_630.123456);
            assert_eq!(spool::sequence_of(line.as_bytes()), Some(7));
        }
    }
}
