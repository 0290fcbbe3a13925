//! The per-database delivery worker: reads the outbox after the delivery cursor, posts
//! the events, and moves the cursor once the SIEM acknowledged them.
//!
//! # Loop
//! 1. Short transaction: is the extension still installed (else exit), is delivery
//!    enabled, read up to `delivery_batch_events` / `delivery_batch_bytes` of events
//!    after the cursor whose transaction id is below the snapshot's xmin.
//! 2. No transaction: send them on the HTTP helper thread, waiting on the latch (so
//!    SIGTERM and ProcSignalBarriers are served while the SIEM is slow).
//! 3. Retryable failures: record the error (own transaction), back off with jitter
//!    (honouring `Retry-After`), resend only the events not yet acknowledged.
//! 4. Short transaction: dead-letter refused events, move the cursor, update counters.
//!
//! # Invariants
//! - The cursor moves only in step 4, only to the end of a batch whose every forwarded
//!   event was acknowledged or dead-lettered. A crash anywhere re-sends the batch.
//! - Memory: one batch (bounded by the two settings, or one event if a single event is
//!   larger) plus its encoded request body.
//! - No transaction is open while waiting for the SIEM or sleeping.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::format::{self, Event, Format, HecSource};
use super::http::{self, Outcome, Request, Sender};
use super::retry::{self, Disposition};
use super::shmem;
use crate::gucs::{self, DeliverySettings};

/// Rechecks the outbox this often even without a wake-up (prepared transactions, events
/// restored from a dump) and runs retention.
const IDLE_RECHECK: Duration = Duration::from_secs(10);
const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Rows read per batch at least, whatever `delivery_batch_events` (filtered rows are skipped cheaply).
const MIN_ROWS_PER_READ: usize = 1000;
/// Rows fetched from the outbox cursor at a time.
const FETCH_ROWS: i64 = 256;

/// The endpoint configuration, as stored in `siem_config`.
#[derive(Clone, Debug)]
struct Config {
    url: String,
    headers: Vec<(String, String)>,
    categories: Option<Vec<String>>,
    format: Format,
    version: i64,
}

enum Plan {
    Exit,
    /// Delivery is disabled or not configured: sleep until a configuration change.
    Disabled,
    /// Nothing to deliver.
    Idle,
    /// Visible events wait for an older transaction to finish.
    Blocked,
    Deliver(Config, Batch),
}

/// Events read after the cursor, and where the cursor goes once they are handled.
struct Batch {
    events: Vec<Event>,
    /// Indices of events to forward (category filter applied).
    forward: Vec<usize>,
    end: (u64, i64),
    /// The read stopped at a size limit (more events are likely waiting).
    full: bool,
}

/// What happened to one forwarded event.
#[derive(Clone, Debug)]
enum ItemResult {
    Delivered,
    Retry {
        status: Option<u16>,
        retry_after: Option<Duration>,
        error: String,
    },
    DeadLetter {
        status: u16,
        excerpt: String,
    },
}

pub fn host_name() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into our buffer.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgaudit_siem_delivery_worker_main(arg: pg_sys::Datum) {
    let dboid = pg_sys::Oid::from(arg.value() as u32);
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi_by_oid(Some(dboid), None);
    // The database owner's ALTER DATABASE ... SET applied at connect: none of it may
    // change what the worker's SQL means (it runs as a superuser).
    crate::pg::worker_settings::pin();
    let generation = shmem::generation();
    if !BackgroundWorker::transaction(extension_installed) {
        shmem::mark_absent(dboid.to_u32(), generation);
        return;
    }
    if !shmem::publish_worker(dboid.to_u32()) {
        log!("pgaudit_siem: another delivery worker serves this database, or it is being dropped or copied; exiting");
        return;
    }
    // SAFETY: reporting our application name; a static C string.
    unsafe { pg_sys::pgstat_report_appname(c"pgaudit_siem delivery".as_ptr()) };
    let sender = match Sender::spawn() {
        Ok(s) => s,
        // The slot is released by the exit callback publish_worker registered.
        Err(e) => error!("pgaudit_siem: cannot start the HTTP thread: {e}"),
    };
    let database = BackgroundWorker::transaction(super::current_database_name);
    let mut worker = Worker {
        dboid: dboid.to_u32(),
        sender,
        hec: HecSource {
            host: host_name(),
            source: format!("pgaudit_siem:{database}"),
        },
        shutdown: false,
        reloaded: false,
        attempt: 0,
        blocked_wait: Duration::from_millis(5),
        last_purge: Instant::now() - PURGE_INTERVAL,
        recent: VecDeque::new(),
        random_state: seed(),
    };
    worker.run();
}

fn extension_installed() -> bool {
    // SAFETY: catalog lookup inside a transaction.
    unsafe { pg_sys::get_extension_oid(c"pgaudit_siem".as_ptr(), true) != pg_sys::InvalidOid }
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: fills our 8-byte buffer.
    if !unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) } {
        return 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    }
    u64::from_le_bytes(bytes) | 1
}

struct Worker {
    dboid: u32,
    sender: Sender,
    hec: HecSource,
    shutdown: bool,
    /// The configuration file was reloaded since the settings in use were read.
    reloaded: bool,
    attempt: u32,
    blocked_wait: Duration,
    last_purge: Instant,
    /// (when, events) of recent acknowledgements, for events per second.
    recent: VecDeque<(Instant, u64)>,
    random_state: u64,
}

impl Worker {
    fn run(&mut self) {
        while !self.shutdown {
            self.reloaded = false;
            let settings = gucs::delivery();
            shmem::set_waiting(self.dboid, true);
            let horizon = BackgroundWorker::transaction(horizon);
            let plan = BackgroundWorker::transaction(|| plan(&settings, horizon));
            report_stat();
            if matches!(plan, Plan::Deliver(..) | Plan::Disabled) {
                shmem::set_waiting(self.dboid, false);
            }
            match plan {
                Plan::Exit => {
                    shmem::mark_absent(self.dboid, shmem::generation());
                    log!("pgaudit_siem: extension dropped; delivery worker exiting");
                    return;
                }
                Plan::Disabled => {
                    self.maybe_purge();
                    self.wait(Some(IDLE_RECHECK), false);
                }
                Plan::Idle => {
                    self.blocked_wait = Duration::from_millis(5);
                    self.maybe_purge();
                    self.wait(Some(IDLE_RECHECK), false);
                }
                Plan::Blocked => {
                    // No commit will wake us when the blocking transaction ends if it
                    // wrote no events: recheck soon, then less often.
                    self.wait(Some(self.blocked_wait), false);
                    self.blocked_wait = (self.blocked_wait * 2).min(Duration::from_secs(1));
                }
                Plan::Deliver(config, batch) => {
                    self.blocked_wait = Duration::from_millis(5);
                    let full = batch.full;
                    let linger = settings.linger;
                    self.deliver(config, batch, settings);
                    self.maybe_purge();
                    // A partial batch means we are caught up: let events gather for a
                    // moment instead of paying a round trip per committing transaction.
                    if !full && !linger.is_zero() && !self.shutdown {
                        self.wait(Some(linger), false);
                    }
                }
            }
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: jitter only, no security role.
        let mut x = self.random_state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.random_state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Waits for the latch (and the HTTP thread, if `http`), a timeout, or a signal.
    /// A SIGHUP reloads the configuration file and sets `self.reloaded`.
    fn wait(&mut self, timeout: Option<Duration>, http: bool) {
        let mut events = pg_sys::WL_LATCH_SET | pg_sys::WL_EXIT_ON_PM_DEATH;
        if timeout.is_some() {
            events |= pg_sys::WL_TIMEOUT;
        }
        if http {
            events |= pg_sys::WL_SOCKET_READABLE;
        }
        let millis = timeout
            .map(|t| t.as_millis().min(i32::MAX as u128) as std::ffi::c_long)
            .unwrap_or(-1);
        // SAFETY: waiting on our own latch and the helper thread's socket, both valid for
        // the life of the process; interrupts are processed right after.
        unsafe {
            pg_sys::WaitLatchOrSocket(
                pg_sys::MyLatch,
                events as i32,
                if http { self.sender.wake_fd() } else { -1 },
                millis,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
        }
        check_for_interrupts!();
        if BackgroundWorker::sigterm_received() {
            self.shutdown = true;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: outside any transaction, in the main thread, as PostgreSQL's own
            // processes reload their configuration.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            self.reloaded = true;
        }
    }

    /// Sends one request; `None` if the worker must stop first.
    /// A dead helper thread is replaced and the request reported as a retryable
    /// failure, so the retry policy (not a busy loop) decides what happens next.
    fn exchange(&mut self, request: Request) -> Option<http::Reply> {
        if !self.sender.start(request) {
            return Some(self.replace_sender());
        }
        loop {
            match self.sender.poll() {
                http::Poll::Ready(reply) => return Some(reply),
                http::Poll::Gone => return Some(self.replace_sender()),
                http::Poll::Pending => {}
            }
            self.wait(None, true);
            if self.shutdown {
                return None;
            }
        }
    }

    fn replace_sender(&mut self) -> http::Reply {
        match Sender::spawn() {
            Ok(sender) => self.sender = sender,
            Err(e) => error!("pgaudit_siem: cannot restart the HTTP thread: {e}"),
        }
        warning!("pgaudit_siem: the delivery worker's HTTP thread stopped and was restarted");
        http::thread_gone()
    }

    fn request(&self, config: &Config, settings: &DeliverySettings, body: Vec<u8>) -> Request {
        Request {
            method: "POST",
            url: config.url.clone(),
            headers: config.headers.clone(),
            content_type: config.format.content_type(),
            body,
            gzip: settings.gzip,
            connect_timeout: settings.connect_timeout,
            timeout: settings.timeout,
            tls: settings.tls.clone(),
            allowed_hosts: settings.allowed_hosts.clone(),
        }
    }

    /// Sends `pending` events once; returns one result per pending event, or `None` on
    /// shutdown. Requests stop at the first retryable failure (the rest wait too).
    fn attempt_send(
        &mut self,
        config: &Config,
        settings: &DeliverySettings,
        events: &[Event],
        pending: &[usize],
    ) -> Option<Vec<ItemResult>> {
        if !super::host_allowed(&config.url, &settings.allowed_hosts) {
            // The platform narrowed the allowed hosts after configure(): events wait.
            let error = format!(
                "not_allowed: {} is not in pgaudit_siem.delivery_allowed_hosts",
                http::endpoint_label(&config.url)
            );
            return Some(vec![
                ItemResult::Retry {
                    status: None,
                    retry_after: None,
                    error
                };
                pending.len()
            ]);
        }
        if !config.format.batches() {
            return self.send_one_by_one(config, settings, events, pending);
        }
        let chosen: Vec<&Event> = pending.iter().map(|&i| &events[i]).collect();
        let body = format::encode(config.format, &chosen, &self.hec);
        let reply = self.exchange(self.request(config, settings, body))?;
        let whole = judge(&reply.outcome);
        match (&reply.outcome, &whole) {
            (Outcome::Response { body, .. }, ItemResult::Delivered)
                if config.format == Format::OpensearchBulk =>
            {
                Some(match format::bulk_items(body, chosen.len()) {
                    Some(items) => items.into_iter().map(judge_bulk_item).collect(),
                    // An answer we cannot match item by item: resend everything
                    // (create with _id makes that idempotent).
                    None => vec![
                        ItemResult::Retry {
                            status: None,
                            retry_after: None,
                            error: "unreadable bulk response".into()
                        };
                        chosen.len()
                    ],
                })
            }
            // One bad event must not take its batch with it: find it by sending the events
            // one at a time.
            (_, ItemResult::DeadLetter { .. }) if chosen.len() > 1 => {
                self.send_one_by_one(config, settings, events, pending)
            }
            _ => Some(vec![whole; chosen.len()]),
        }
    }

    /// One request per event; after the first retryable failure the rest wait as well.
    fn send_one_by_one(
        &mut self,
        config: &Config,
        settings: &DeliverySettings,
        events: &[Event],
        pending: &[usize],
    ) -> Option<Vec<ItemResult>> {
        let mut results: Vec<ItemResult> = Vec::with_capacity(pending.len());
        for &i in pending {
            if let Some(failed @ ItemResult::Retry { .. }) = results.last() {
                results.push(failed.clone());
                continue;
            }
            let body = format::encode(config.format, &[&events[i]], &self.hec);
            let reply = self.exchange(self.request(config, settings, body))?;
            results.push(judge(&reply.outcome));
        }
        Some(results)
    }

    fn deliver(&mut self, mut config: Config, batch: Batch, mut settings: DeliverySettings) {
        let mut pending: Vec<usize> = batch.forward.clone();
        let mut attempts = vec![0i32; batch.events.len()];
        let mut dead: Vec<(usize, u16, String)> = Vec::new();
        let mut last_status: Option<u16> = None;
        while !pending.is_empty() {
            // A reload (possibly noticed while a request was in flight) applies to the
            // next attempt: new TLS files, timeouts or batch limits.
            if std::mem::take(&mut self.reloaded) {
                settings = gucs::delivery();
            }
            report_activity(
                pg_sys::BackendState::STATE_RUNNING,
                Some(&format!("delivering {} events", pending.len())),
            );
            let Some(results) = self.attempt_send(&config, &settings, &batch.events, &pending)
            else {
                return;
            };
            let mut still: Vec<usize> = Vec::new();
            let mut failure: Option<(Option<u16>, Option<Duration>, String)> = None;
            for (&i, result) in pending.iter().zip(results) {
                attempts[i] += 1;
                match result {
                    ItemResult::Delivered => {}
                    ItemResult::DeadLetter { status, excerpt } => {
                        last_status = Some(status);
                        dead.push((i, status, excerpt));
                    }
                    ItemResult::Retry {
                        status,
                        retry_after,
                        error,
                    } => {
                        still.push(i);
                        if failure.is_none() {
                            failure = Some((status, retry_after, error));
                        }
                    }
                }
            }
            if still.len() < pending.len() && last_status.is_none() {
                last_status = Some(200);
            }
            pending = still;
            let Some((status, retry_after, error)) = failure else {
                break;
            };
            let delay = retry::next_delay(
                self.attempt,
                settings.retry_base,
                settings.retry_max,
                self.random(),
                retry_after,
            );
            self.attempt = self.attempt.saturating_add(1);
            let failed = pending.len() as i64;
            BackgroundWorker::transaction(|| record_failure(failed, status, &error, delay));
            report_stat();
            let deadline = Instant::now() + delay;
            report_activity(
                pg_sys::BackendState::STATE_IDLE,
                Some("waiting to retry delivery"),
            );
            loop {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                self.wait(Some(deadline - now), false);
                if self.shutdown {
                    return;
                }
                let reloaded = self.reloaded;
                // An admin may have fixed the endpoint, the TLS files or the timeouts, or
                // switched delivery off: retry at once with what is current.
                let current = BackgroundWorker::transaction(read_config);
                match current {
                    Some(c) if c.version == config.version && !reloaded => {}
                    Some(c) => {
                        config = c;
                        self.attempt = 0;
                        break;
                    }
                    None => return,
                }
            }
        }
        let delivered = batch.forward.len() - dead.len();
        let dead_rows: Vec<(i64, u64, i32, String, i32)> = dead
            .iter()
            .map(|(i, status, excerpt)| {
                let e = &batch.events[*i];
                (e.seq, e.xid, *status as i32, excerpt.clone(), attempts[*i])
            })
            .collect();
        let rate = self.rate(delivered as u64);
        BackgroundWorker::transaction(|| {
            acknowledge(batch.end, delivered as i64, &dead_rows, last_status, rate)
        });
        report_stat();
        self.attempt = 0;
        report_activity(pg_sys::BackendState::STATE_IDLE, None);
    }

    fn rate(&mut self, delivered: u64) -> f64 {
        let now = Instant::now();
        self.recent.push_back((now, delivered));
        while self
            .recent
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > Duration::from_secs(10))
        {
            self.recent.pop_front();
        }
        let total: u64 = self.recent.iter().map(|(_, n)| n).sum();
        let span = self
            .recent
            .front()
            .map(|(t, _)| now.duration_since(*t))
            .unwrap_or_default();
        if span < Duration::from_millis(100) {
            return total as f64;
        }
        total as f64 / span.as_secs_f64()
    }

    fn maybe_purge(&mut self) {
        if self.last_purge.elapsed() < PURGE_INTERVAL {
            return;
        }
        self.last_purge = Instant::now();
        BackgroundWorker::transaction(|| {
            if extension_installed() {
                internal(|| Spi::run("SELECT pgaudit_siem._purge_delivered()"));
            }
        });
        report_stat();
    }
}

/// What pg_stat_activity shows for this worker (`query` and `state`).
fn report_activity(state: pg_sys::BackendState::Type, text: Option<&str>) {
    let text = text.and_then(|t| std::ffi::CString::new(t).ok());
    // SAFETY: PostgreSQL copies the NUL-terminated string (or takes NULL) immediately.
    unsafe {
        pg_sys::pgstat_report_activity(
            state,
            text.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
        )
    };
}

fn report_stat() {
    // SAFETY: outside a transaction; lets autovacuum see the worker's inserts/updates.
    unsafe { pg_sys::pgstat_report_stat(false) };
}

/// Runs SPI work as internal statements (never audit-logged).
fn internal<R>(f: impl FnOnce() -> Result<R, pgrx::spi::Error>) -> R {
    crate::pg::internal::run(|| f().unwrap_or_else(|e| error!("pgaudit_siem delivery: {e}")))
}

fn judge(outcome: &Outcome) -> ItemResult {
    match outcome {
        Outcome::Response {
            status,
            retry_after,
            body,
        } => match retry::classify_status(*status) {
            Disposition::Delivered => ItemResult::Delivered,
            Disposition::Retry => ItemResult::Retry {
                status: Some(*status),
                retry_after: retry_after.as_deref().and_then(retry::parse_retry_after),
                error: format!(
                    "HTTP {status}: {}",
                    http::excerpt(body).chars().take(200).collect::<String>()
                ),
            },
            Disposition::DeadLetter => ItemResult::DeadLetter {
                status: *status,
                excerpt: http::excerpt(body),
            },
        },
        Outcome::Failed { kind, message } => ItemResult::Retry {
            status: None,
            retry_after: None,
            error: format!("{}: {message}", kind.label()),
        },
    }
}

fn judge_bulk_item((status, answer): (u16, String)) -> ItemResult {
    match retry::classify_bulk_item(status) {
        Disposition::Delivered => ItemResult::Delivered,
        Disposition::Retry => ItemResult::Retry {
            status: Some(status),
            retry_after: None,
            error: format!(
                "bulk item answered HTTP {status}: {}",
                http::excerpt(answer.as_bytes())
            ),
        },
        Disposition::DeadLetter => ItemResult::DeadLetter {
            status,
            excerpt: http::excerpt(answer.as_bytes()),
        },
    }
}

/// The endpoint configuration, if delivery is enabled and configured (inside a transaction).
fn read_config() -> Option<Config> {
    if !extension_installed() {
        return None;
    }
    internal(|| {
        Spi::connect(|client| {
            let rows = client.select(
                "SELECT c.enabled, c.url, c.headers::pg_catalog.text, c.categories, c.format, c.version FROM pgaudit_siem.siem_config c",
                Some(1),
                &[],
            )?;
            let Some(row) = rows.into_iter().next() else {
                return Ok(None);
            };
            let enabled: bool = row.get(1)?.unwrap_or(false);
            let url: Option<String> = row.get(2)?;
            if !enabled || url.is_none() {
                return Ok(None);
            }
            let headers: String = row.get(3)?.unwrap_or_default();
            let headers = serde_json::from_str(&headers)
                .map(|h| super::header_pairs(&h))
                .unwrap_or_default();
            let categories: Option<Vec<Option<String>>> = row.get(4)?;
            let format: String = row.get(5)?.unwrap_or_default();
            Ok(Some(Config {
                url: url.unwrap_or_default(),
                headers,
                categories: categories.map(|c| c.into_iter().flatten().collect()),
                format: Format::parse(&format).unwrap_or(Format::Json),
                version: row.get(6)?.unwrap_or(0),
            }))
        })
    })
}

/// The delivery horizon: every transaction with a smaller id has finished, or belongs
/// to another database (whose transactions cannot write to this outbox). Computed in its
/// own transaction, *before* the one that reads events, so the events are read with a
/// snapshot taken after the activity was read: a transaction that ended in between is
/// then visible, never skipped. The snapshot's xmax here bounds every id assigned later.
fn horizon() -> u64 {
    internal(|| {
        Spi::connect(|client| {
            let row = client
                .select(
                    "SELECT pg_catalog.pg_snapshot_xmax(pg_catalog.pg_current_snapshot())::pg_catalog.text,
                            ARRAY(SELECT a.backend_xid::pg_catalog.text FROM pg_catalog.pg_stat_get_activity(NULL) a
                                   WHERE a.datid OPERATOR(pg_catalog.=) $1 AND a.backend_xid IS NOT NULL),
                            ARRAY(SELECT p.transaction::pg_catalog.text FROM pg_catalog.pg_prepared_xacts p
                                   WHERE p.database OPERATOR(pg_catalog.=) pg_catalog.current_database())",
                    Some(1),
                    &[pg_sys::Oid::from(self_dboid()).into()],
                )?
                .first();
            let xmax: u64 = row
                .get::<String>(1)?
                .unwrap_or_default()
                .parse()
                .unwrap_or(0);
            let running: Vec<Option<String>> =
                row.get::<Vec<Option<String>>>(2)?.unwrap_or_default();
            let prepared: Vec<Option<String>> =
                row.get::<Vec<Option<String>>>(3)?.unwrap_or_default();
            Ok(database_horizon(
                xmax,
                running
                    .iter()
                    .chain(&prepared)
                    .flatten()
                    .filter_map(|x| x.parse::<u32>().ok()),
            ))
        })
    })
}

/// Step 1 of the loop (inside a transaction, started after [`horizon`]'s).
fn plan(settings: &DeliverySettings, horizon: u64) -> Plan {
    if !extension_installed() {
        return Plan::Exit;
    }
    let Some(config) = read_config() else {
        return Plan::Disabled;
    };
    internal(|| {
        Spi::connect(|client| {
            let cursor = client.select(
                "SELECT s.last_xid::pg_catalog.text, s.last_seq FROM pgaudit_siem.delivery_state s",
                Some(1),
                &[],
            )?;
            let Some(row) = cursor.into_iter().next() else {
                return Ok(Plan::Idle);
            };
            let last_xid: String = row.get(1)?.unwrap_or_default();
            let last_seq: i64 = row.get(2)?.unwrap_or(0);
            // Computed in a transaction of its own before this one (see `horizon`): the
            // snapshot this read uses is newer than the activity read.
            let horizon = horizon.to_string();
            // A literal LIMIT makes even the cursor's generic plan an ordered index scan
            // (with a parameter the planner sorts the whole backlog for every batch).
            let row_limit = settings.batch_events.max(MIN_ROWS_PER_READ);
            let query = format!(
                "SELECT o.xid::pg_catalog.text, o.seq, o.id::pg_catalog.text, o.category,
                                pg_catalog.date_part('epoch', o.created_at),
                                CASE WHEN $4::pg_catalog.text[] IS NULL
                                       OR o.category OPERATOR(pg_catalog.=) ANY ($4::pg_catalog.text[])
                                       OR o.category OPERATOR(pg_catalog.=) ANY ('{{pgaudit_siem,siem_settings}}'::pg_catalog.text[])
                                     THEN o.payload::pg_catalog.text END
                           FROM pgaudit_siem.outbox o
                          WHERE (o.xid, o.seq) OPERATOR(pg_catalog.>) ($1::pg_catalog.xid8, $2::pg_catalog.int8)
                            AND o.xid OPERATOR(pg_catalog.<) $3::pg_catalog.xid8
                          ORDER BY o.xid, o.seq
                          LIMIT {row_limit}"
            );
            let categories: Option<Vec<String>> = config.categories.clone();
            let args = [
                last_xid.as_str().into(),
                last_seq.into(),
                horizon.as_str().into(),
                categories.into(),
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
                    let xid: String = row.get(1)?.unwrap_or_default();
                    let event = Event {
                        xid: xid.parse().unwrap_or(0),
                        seq: row.get(2)?.unwrap_or(0),
                        id: row.get(3)?.unwrap_or_default(),
                        category: row.get(4)?.unwrap_or_default(),
                        epoch_seconds: row.get(5)?.unwrap_or(0.0),
                        payload: payload.clone().unwrap_or_default(),
                    };
                    if payload.is_some() {
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
                let blocked = client
                    .select(
                        "SELECT EXISTS (SELECT FROM pgaudit_siem.outbox o WHERE (o.xid, o.seq) OPERATOR(pg_catalog.>) ($1::pg_catalog.xid8, $2::pg_catalog.int8))",
                        Some(1),
                        &[last_xid.as_str().into(), last_seq.into()],
                    )?
                    .first()
                    .get_one::<bool>()?
                    .unwrap_or(false);
                return Ok(if blocked { Plan::Blocked } else { Plan::Idle });
            };
            let end = (last.xid, last.seq);
            Ok(Plan::Deliver(
                config.clone(),
                Batch {
                    events,
                    forward,
                    end,
                    full,
                },
            ))
        })
    })
}

fn self_dboid() -> u32 {
    // SAFETY: plain read of a process-global.
    unsafe { pg_sys::MyDatabaseId }.to_u32()
}

/// The oldest full transaction id that may still write events: the oldest of `running`
/// (32-bit ids of transactions in progress, all below `xmax`), or `xmax` itself.
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

/// Step 3: a failed attempt, for `stats`.
fn record_failure(events: i64, status: Option<u16>, error: &str, backoff: Duration) {
    internal(|| {
        Spi::run_with_args(
            "UPDATE pgaudit_siem.delivery_state
                SET retried = retried OPERATOR(pg_catalog.+) $1, last_error = $2, last_error_at = pg_catalog.clock_timestamp(),
                    last_http_status = coalesce($3, last_http_status), current_backoff_ms = $4,
                    worker_pid = pg_catalog.pg_backend_pid()",
            &[events.into(), error.into(), status.map(i32::from).into(), (backoff.as_millis() as i64).into()],
        )
    });
}

/// Step 4: dead letters, cursor, counters — one transaction.
fn acknowledge(
    end: (u64, i64),
    delivered: i64,
    dead: &[(i64, u64, i32, String, i32)],
    status: Option<u16>,
    rate: f64,
) {
    internal(|| {
        if !dead.is_empty() {
            let seqs: Vec<i64> = dead.iter().map(|d| d.0).collect();
            let xids: Vec<String> = dead.iter().map(|d| d.1.to_string()).collect();
            let statuses: Vec<i32> = dead.iter().map(|d| d.2).collect();
            let excerpts: Vec<String> = dead.iter().map(|d| d.3.clone()).collect();
            let attempts: Vec<i32> = dead.iter().map(|d| d.4).collect();
            Spi::run_with_args(
                "INSERT INTO pgaudit_siem.dead_letter (id, seq, xid, created_at, category, action, relid, schema_name, table_name,
                                                       row_count, part, part_count, payload, http_status, response_excerpt, attempts)
                 SELECT o.id, o.seq, o.xid, o.created_at, o.category, o.action, o.relid, o.schema_name, o.table_name,
                        o.row_count, o.part, o.part_count, o.payload, d.status, d.excerpt, d.attempts
                   FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.int8[]), pg_catalog.unnest($2::pg_catalog.text[]),
                                   pg_catalog.unnest($3::pg_catalog.int4[]), pg_catalog.unnest($4::pg_catalog.text[]),
                                   pg_catalog.unnest($5::pg_catalog.int4[])) AS d(seq, xid, status, excerpt, attempts)
                   JOIN pgaudit_siem.outbox o ON o.xid OPERATOR(pg_catalog.=) d.xid::pg_catalog.xid8
                                             AND o.seq OPERATOR(pg_catalog.=) d.seq
                 ON CONFLICT (seq) DO NOTHING",
                &[seqs.into(), xids.into(), statuses.into(), excerpts.into(), attempts.into()],
            )?;
            let first_status = dead[0].2;
            warning!(
                "pgaudit_siem: {} events refused by the SIEM (HTTP {first_status}) were moved to pgaudit_siem.dead_letter",
                dead.len()
            );
        }
        Spi::run_with_args(
            "UPDATE pgaudit_siem.delivery_state
                SET last_xid = $1::pg_catalog.xid8, last_seq = $2, delivered = delivered OPERATOR(pg_catalog.+) $3,
                    dead_lettered = dead_lettered OPERATOR(pg_catalog.+) $4,
                    batches = batches OPERATOR(pg_catalog.+) CASE WHEN $3 OPERATOR(pg_catalog.+) $4 OPERATOR(pg_catalog.>) 0 THEN 1 ELSE 0 END,
                    last_success = CASE WHEN $3 OPERATOR(pg_catalog.>) 0 THEN pg_catalog.clock_timestamp() ELSE last_success END,
                    last_http_status = coalesce($5, last_http_status), current_backoff_ms = 0,
                    events_per_second = $6, worker_pid = pg_catalog.pg_backend_pid()",
            &[
                end.0.to_string().as_str().into(),
                end.1.into(),
                delivered.into(),
                (dead.len() as i64).into(),
                status.map(i32::from).into(),
                rate.into(),
            ],
        )
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
