//! What the delivery worker ships from: a [`Source`] yields ordered batches of events
//! and is told what became of them. Today's source is the per-database outbox
//! ([`super::outbox`]); the session-audit spool is the next.
//!
//! # Invariants
//! - A batch is a prefix of what the source still holds, in the source's order; the
//!   worker acknowledges a batch only after every forwarded event was delivered or
//!   refused for good, so a crash at any point redelivers (at least once, in order).
//! - Every call runs in its own transaction, outside any the worker holds.

use std::time::Duration;

use crate::settings::DeliverySettings;
use crate::sinks::{Event, Sink};

/// Where and how a source's events go.
#[derive(Clone)]
pub struct Endpoint {
    pub url: String,
    pub headers: Vec<(String, String)>,
    /// Categories to forward; `None` for all.
    pub categories: Option<Vec<String>>,
    pub sink: &'static dyn Sink,
    /// Changes whenever the configuration does.
    pub version: i64,
}

/// What the worker should do next.
pub enum Plan {
    /// The source is gone (extension dropped): the worker exits.
    Exit,
    /// Delivery is disabled or not configured: sleep until a configuration change.
    Disabled,
    /// Nothing to deliver.
    Idle,
    /// Events exist but wait for an older transaction to finish.
    Blocked,
    Deliver(Endpoint, Batch),
}

/// Events read after the source's cursor, and where the cursor goes once handled.
pub struct Batch {
    pub events: Vec<Event>,
    /// Indices of events to forward (category filter applied).
    pub forward: Vec<usize>,
    /// The order key of the last event read.
    pub end: (u64, i64),
    /// The read stopped at a size limit (more events are likely waiting).
    pub full: bool,
    /// The hash chain after the batch's last forwarded event (`events::chain`), stored
    /// with the cursor when the batch is acknowledged.
    pub chain_hash: String,
}

/// An event the receiver refused for good.
pub struct Refused {
    pub index: usize,
    pub status: u16,
    pub excerpt: String,
    pub attempts: i32,
}

/// A source of ordered events.
pub trait Source {
    /// The next batch (or why there is none).
    fn next_batch(&mut self, settings: &DeliverySettings) -> Plan;
    /// The endpoint as configured now (`None`: delivery switched off).
    fn endpoint(&mut self) -> Option<Endpoint>;
    /// A failed attempt for `events` events, for the statistics.
    fn record_failure(&mut self, events: i64, status: Option<u16>, error: &str, backoff: Duration);
    /// The batch is handled: `delivered` events arrived, `refused` ones go to the dead
    /// letter; the cursor moves past the batch.
    fn acknowledge(
        &mut self,
        batch: &Batch,
        delivered: i64,
        refused: &[Refused],
        status: Option<u16>,
        rate: f64,
    );
    /// Periodic upkeep (retention).
    fn housekeeping(&mut self);
    /// The worker waits for work (`true`) or works (`false`): sources whose writers
    /// wake the worker use it to skip needless wake-ups.
    fn set_waiting(&mut self, _waiting: bool) {}
    /// Why `next_batch` said [`Plan::Exit`], for the log.
    fn gone_reason(&self) -> &'static str {
        "the source is gone"
    }
    /// How long the worker may wait at most before calling [`Source::tick`] (`None`:
    /// as long as it likes).
    fn tick_interval(&self) -> Option<Duration> {
        None
    }
    /// Work due every [`Source::tick_interval`], whatever the worker is doing (flushing
    /// the spool to disk).
    fn tick(&mut self) {}
}
