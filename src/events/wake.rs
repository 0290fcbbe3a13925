//! What the current transaction asks of the delivery side when it commits: sources record
//! a request here (new events, changed configuration, a new database with the
//! extension), and delivery's commit callback takes it. Producers so never call delivery.
//!
//! # Invariants
//! - Requests are per transaction: [`take_at_commit`] hands them over once, and
//!   [`forget`] drops them at abort and PREPARE (a prepared transaction's events are
//!   found by the worker's idle recheck).

use std::cell::Cell;

/// What this database's worker should do when the transaction commits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum WorkerRequest {
    None,
    /// New events: wake the worker if it waits for work.
    IfWaiting,
    /// Configuration changed, events requeued, or the extension dropped: wake it in any
    /// case.
    Always,
}

thread_local! {
    static WORKER: Cell<WorkerRequest> = const { Cell::new(WorkerRequest::None) };
    static LAUNCHER: Cell<bool> = const { Cell::new(false) };
}

/// The current transaction queued events.
pub fn new_events() {
    request(WorkerRequest::IfWaiting);
}

/// The current transaction changed what the worker must do.
pub fn worker_must_recheck() {
    request(WorkerRequest::Always);
}

/// The current transaction installs the extension or creates a database from a template
/// that has it: the launcher should look again.
pub fn launcher_must_rescan() {
    LAUNCHER.with(|w| w.set(true));
}

fn request(request: WorkerRequest) {
    WORKER.with(|w| w.set(w.get().max(request)));
}

/// The requests of the committing transaction: (worker, launcher). Resets them.
pub fn take_at_commit() -> (WorkerRequest, bool) {
    (
        WORKER.with(|w| w.replace(WorkerRequest::None)),
        LAUNCHER.with(|w| w.replace(false)),
    )
}

/// Drops the requests of an aborted or prepared transaction.
pub fn forget() {
    take_at_commit();
}

/// `pgaudit_siem._wake_delivery_at_commit()`: the SQL API's configuration changes,
/// requeues and administrative events ask the worker to look again.
#[pgrx::pg_extern(name = "_wake_delivery_at_commit", volatile, parallel_unsafe)]
fn wake_delivery_at_commit() {
    worker_must_recheck();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_strongest_request_wins_and_is_taken_once() {
        new_events();
        worker_must_recheck();
        new_events();
        assert_eq!(take_at_commit(), (WorkerRequest::Always, false));
        assert_eq!(take_at_commit(), (WorkerRequest::None, false));
        launcher_must_rescan();
        forget();
        assert_eq!(take_at_commit(), (WorkerRequest::None, false));
    }
}
