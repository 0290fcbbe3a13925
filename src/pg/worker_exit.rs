//! How a static background worker ends when it is told to (SIGTERM).
//!
//! The postmaster restarts a static worker after its `bgw_restart_time` only if it
//! exits with status 1; status 0 (returning from the main function) unregisters it for
//! good. A `pg_terminate_backend()` of the shipper or the launcher, such as a DBA's
//! "terminate every other backend" before maintenance, must not silently end the audit
//! stream or change-capture delivery until the next server restart, so these workers
//! exit as PostgreSQL's own logical replication launcher does: with status 1. During a
//! shutdown the status does not matter (the postmaster restarts nothing then).

use pgrx::pg_sys;

/// Ends this static worker so that the postmaster starts it again after its restart
/// time. Never returns.
pub fn exit_to_be_restarted(what: &str) -> ! {
    pgrx::log!("pgaudit_siem: the {what} stops on request and is restarted unless the server is shutting down");
    // SAFETY: called from the worker's main thread outside any transaction; proc_exit
    // runs the registered exit callbacks (the worker's shared-memory slot included) and
    // does not return.
    unsafe { pg_sys::proc_exit(1) }
}
