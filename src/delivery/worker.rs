//! The per-database delivery worker: reads the outbox after the delivery cursor, posts
//! the events, and moves the cursor once the SIEM acknowledged them.
//!
//! # Loop
//! 1. Short transaction: is the extension still installed (else exit), is delivery
//!    enabled, read up to `delivery_batch_events` / `delivery_batch_bytes` of events
//!    after the cursor whose order key is below the source's horizon.
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

use super::outbox::{self, Outbox};
use super::shmem;
use super::source::{Batch, Endpoint, Plan, Refused, Source};
use crate::settings::{self, DeliverySettings};
use crate::sinks::http::{self, Outcome, Request, Sender};
use crate::sinks::retry::{self, Disposition};
use crate::sinks::{self, Event, Origin};

/// Rechecks the outbox this often even without a wake-up (prepared transactions, events
/// restored from a dump) and runs retention.
const IDLE_RECHECK: Duration = Duration::from_secs(10);
const PURGE_INTERVAL: Duration = Duration::from_secs(60);

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

/// This server's host name (HEC `host`).
pub fn host_name() -> String {
    crate::pg::names::host()
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
    if !BackgroundWorker::transaction(outbox::installed) {
        shmem::mark_absent(dboid.to_u32(), generation);
        return;
    }
    if !shmem::publish_worker(dboid.to_u32()) {
        log!("pgaudit_siem: another delivery worker serves this database, or it is being dropped or copied; exiting");
        return;
    }
    // SAFETY: reporting our application name; a static C string.
    unsafe { pg_sys::pgstat_report_appname(c"pgaudit_siem delivery".as_ptr()) };
    // On failure the slot is released by the exit callback publish_worker registered.
    let sender = spawn_sender();
    let database = BackgroundWorker::transaction(crate::pg::names::database);
    let origin = Origin {
        host: host_name(),
        source: format!("pgaudit_siem:{database}"),
    };
    Worker::new(Outbox::new(dboid.to_u32()), origin, sender).run();
}

/// Starts the HTTP thread for a worker; the process exits with an ERROR if it cannot.
pub fn spawn_sender() -> Sender {
    match Sender::spawn() {
        Ok(s) => s,
        Err(e) => {
            super::error::DeliveryError::Internal(format!("cannot start the HTTP thread: {e}"))
                .raise()
        }
    }
}

impl<S: Source> Worker<S> {
    pub fn new(source: S, origin: Origin, sender: Sender) -> Worker<S> {
        Worker {
            sender,
            source,
            origin,
            shutdown: false,
            reloaded: false,
            attempt: 0,
            blocked_wait: Duration::from_millis(5),
            // Due at once (or a minute after boot, where the clock cannot go back that far).
            last_purge: Instant::now()
                .checked_sub(PURGE_INTERVAL)
                .unwrap_or_else(Instant::now),
            recent: VecDeque::new(),
            random_state: seed(),
        }
    }
}

fn seed() -> u64 {
    let mut bytes = [0u8; 8];
    // SAFETY: fills our 8-byte buffer.
    if !unsafe { pg_sys::pg_strong_random(bytes.as_mut_ptr().cast(), bytes.len()) } {
        return 0x9e37_79b9_7f4a_7c15 ^ std::process::id() as u64;
    }
    u64::from_le_bytes(bytes) | 1
}

pub struct Worker<S: Source> {
    sender: Sender,
    source: S,
    origin: Origin,
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

impl<S: Source> Worker<S> {
    pub fn run(&mut self) {
        while !self.shutdown {
            self.reloaded = false;
            let settings = settings::delivery();
            self.source.set_waiting(true);
            let plan = self.source.next_batch(&settings);
            report_stat();
            if matches!(plan, Plan::Deliver(..) | Plan::Disabled) {
                self.source.set_waiting(false);
            }
            match plan {
                Plan::Exit => {
                    log!(
                        "pgaudit_siem: {}; the worker exits",
                        self.source.gone_reason()
                    );
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
        // A source with periodic work (flushing the spool) gets it done whatever the
        // worker waits for.
        let timeout = match (timeout, self.source.tick_interval()) {
            (Some(t), Some(tick)) => Some(t.min(tick)),
            (None, tick) => tick,
            (t, None) => t,
        };
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
        self.source.tick();
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
            Err(e) => super::error::DeliveryError::Internal(format!(
                "cannot restart the HTTP thread: {e}"
            ))
            .raise(),
        }
        warning!("pgaudit_siem: the delivery worker's HTTP thread stopped and was restarted");
        http::thread_gone()
    }

    fn request(&self, config: &Endpoint, settings: &DeliverySettings, body: Vec<u8>) -> Request {
        Request {
            method: "POST",
            url: config.url.clone(),
            headers: config.headers.clone(),
            content_type: config.sink.content_type(),
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
        config: &Endpoint,
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
        if !config.sink.batches() {
            return self.send_one_by_one(config, settings, events, pending);
        }
        let chosen: Vec<&Event> = pending.iter().map(|&i| &events[i]).collect();
        let body = sinks::encode(config.sink, &chosen, &self.origin);
        let reply = self.exchange(self.request(config, settings, body))?;
        let whole = judge(&reply.outcome);
        match (&reply.outcome, &whole) {
            (Outcome::Response { body, .. }, ItemResult::Delivered) => {
                match config.sink.item_statuses(body, chosen.len()) {
                    Some(None) => Some(vec![whole; chosen.len()]),
                    Some(Some(items)) => Some(items.into_iter().map(judge_item).collect()),
                    // An answer we cannot match item by item: resend everything (the
                    // sink's ids make that idempotent).
                    None => Some(vec![
                        ItemResult::Retry {
                            status: None,
                            retry_after: None,
                            error: "unreadable per-item response".into()
                        };
                        chosen.len()
                    ]),
                }
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
        config: &Endpoint,
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
            let body = sinks::encode(config.sink, &[&events[i]], &self.origin);
            let reply = self.exchange(self.request(config, settings, body))?;
            results.push(judge(&reply.outcome));
        }
        Some(results)
    }

    fn deliver(&mut self, mut config: Endpoint, batch: Batch, mut settings: DeliverySettings) {
        let mut pending: Vec<usize> = batch.forward.clone();
        let mut attempts = vec![0i32; batch.events.len()];
        let mut dead: Vec<(usize, u16, String)> = Vec::new();
        let mut last_status: Option<u16> = None;
        while !pending.is_empty() {
            // A reload (possibly noticed while a request was in flight) applies to the
            // next attempt: new TLS files, timeouts or batch limits.
            if std::mem::take(&mut self.reloaded) {
                settings = settings::delivery();
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
            self.source.record_failure(failed, status, &error, delay);
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
                let current = self.source.endpoint();
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
        let refused: Vec<Refused> = dead
            .into_iter()
            .map(|(index, status, excerpt)| Refused {
                index,
                status,
                excerpt,
                attempts: attempts[index],
            })
            .collect();
        let rate = self.rate(delivered as u64);
        self.source
            .acknowledge(&batch, delivered as i64, &refused, last_status, rate);
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
        self.source.housekeeping();
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

fn judge_item((status, answer): (u16, String)) -> ItemResult {
    match retry::classify_bulk_item(status) {
        Disposition::Delivered => ItemResult::Delivered,
        Disposition::Retry => ItemResult::Retry {
            status: Some(status),
            retry_after: None,
            error: format!(
                "item answered HTTP {status}: {}",
                http::excerpt(answer.as_bytes())
            ),
        },
        Disposition::DeadLetter => ItemResult::DeadLetter {
            status,
            excerpt: http::excerpt(answer.as_bytes()),
        },
    }
}
