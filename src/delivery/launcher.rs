//! The launcher: one static background worker that keeps one delivery worker running in
//! every database where `pgaudit_siem` is installed.
//!
//! It connects to no database (it reads only the shared catalog `pg_database`), starts a
//! dynamic worker per connectable database, and learns from the worker itself whether
//! the extension is there (a worker that finds none records that in shared memory and
//! exits). `CREATE EXTENSION` wakes it at commit (bumping a generation counter, so
//! databases found empty before are probed again); databases created from a template
//! that has the extension are found by the periodic rescan.
//!
//! # Invariants
//! - Runs only on a primary (`BgWorkerStart_RecoveryFinished`): standbys start it on
//!   promotion.
//! - A worker that stopped for any other reason is restarted after [`RESTART_DELAY`];
//!   one that `DROP DATABASE` stopped is not restarted while the drop runs.
//! - Started workers report to the launcher (`bgw_notify_pid`), which wakes it when they
//!   exit.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BackgroundWorkerStatus, DynamicBackgroundWorker,
    SignalWakeFlags,
};
use pgrx::pg_sys;
use pgrx::prelude::*;

use super::shmem;

const RESCAN: Duration = Duration::from_secs(10);
const RESTART_DELAY: Duration = Duration::from_secs(2);

pub fn register() {
    BackgroundWorkerBuilder::new("pgaudit_siem launcher")
        .set_type("pgaudit_siem launcher")
        .set_library("pgaudit_siem")
        .set_function("pgaudit_siem_launcher_main")
        .enable_spi_access()
        .set_restart_time(Some(Duration::from_secs(5)))
        .load();
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn pgaudit_siem_launcher_main(_arg: pg_sys::Datum) {
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    BackgroundWorker::connect_worker_to_spi(None, None);
    shmem::publish_launcher();
    // SAFETY: static C string.
    unsafe { pg_sys::pgstat_report_appname(c"pgaudit_siem launcher".as_ptr()) };
    let mut children: HashMap<u32, DynamicBackgroundWorker> = HashMap::new();
    let mut not_before: HashMap<u32, Instant> = HashMap::new();
    let mut warned_no_slots = false;
    loop {
        if BackgroundWorker::sighup_received() {
            // SAFETY: outside a transaction, main thread.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
        }
        let generation = shmem::generation();
        let databases = BackgroundWorker::transaction(connectable_databases);
        shmem::retain_databases(&databases);
        let registry = shmem::snapshot();
        let now = Instant::now();
        children.retain(|dboid, child| match child.pid() {
            Ok(_) | Err(BackgroundWorkerStatus::NotYetStarted) => true,
            _ => {
                not_before.insert(*dboid, now + RESTART_DELAY);
                false
            }
        });
        // SAFETY: clock read.
        let now_pg = unsafe { pg_sys::GetCurrentTimestamp() };
        let mut next_wake = RESCAN;
        for &dboid in &databases {
            if children.contains_key(&dboid) {
                continue;
            }
            if let Some(slot) = registry.slot(dboid) {
                if slot.absent_generation == generation || slot.stopped_until > now_pg {
                    continue;
                }
                if shmem::is_worker_of(slot.pid, dboid) {
                    continue; // started by an earlier launcher incarnation
                }
            }
            if let Some(&t) = not_before.get(&dboid) {
                if t > now {
                    next_wake = next_wake.min(t - now);
                    continue;
                }
            }
            match start_worker(dboid) {
                Some(handle) => {
                    warned_no_slots = false;
                    not_before.remove(&dboid);
                    children.insert(dboid, handle);
                }
                None => {
                    if !warned_no_slots {
                        warning!("pgaudit_siem: no background worker slot for a delivery worker; raise max_worker_processes");
                        warned_no_slots = true;
                    }
                    not_before.insert(dboid, now + RESTART_DELAY);
                    next_wake = next_wake.min(RESTART_DELAY);
                }
            }
        }
        not_before.retain(|dboid, _| databases.contains(dboid));
        if !BackgroundWorker::wait_latch(Some(next_wake)) {
            break;
        }
    }
    shmem::clear_launcher();
    crate::pg::worker_exit::exit_to_be_restarted("launcher");
}

fn start_worker(dboid: u32) -> Option<DynamicBackgroundWorker> {
    BackgroundWorkerBuilder::new(&format!("pgaudit_siem delivery {dboid}"))
        .set_type("pgaudit_siem delivery")
        .set_library("pgaudit_siem")
        .set_function("pgaudit_siem_delivery_worker_main")
        .enable_spi_access()
        .set_restart_time(None)
        .set_argument(Some(pg_sys::Datum::from(dboid)))
        // SAFETY: plain read of our own pid.
        .set_notify_pid(unsafe { pg_sys::MyProcPid })
        .load_dynamic()
        .ok()
}

/// Oids of databases that accept connections and are not templates.
fn connectable_databases() -> Vec<u32> {
    let mut oids = Vec::new();
    // SAFETY: a catalog heap scan inside the transaction opened by the caller; the
    // relation is opened, scanned and closed here, tuples are read while the scan holds
    // them.
    unsafe {
        let relation =
            pg_sys::table_open(pg_sys::DatabaseRelationId, pg_sys::AccessShareLock as i32);
        let scan = pg_sys::table_beginscan_catalog(relation, 0, std::ptr::null_mut());
        loop {
            let tuple = pg_sys::heap_getnext(scan, pg_sys::ScanDirection::ForwardScanDirection);
            if tuple.is_null() {
                break;
            }
            let header = (*tuple).t_data;
            let form = &*((header as *const u8).add((*header).t_hoff as usize)
                as *const pg_sys::FormData_pg_database);
            if form.datallowconn && !form.datistemplate {
                oids.push(form.oid.to_u32());
            }
        }
        pg_sys::table_endscan(scan);
        pg_sys::table_close(relation, pg_sys::AccessShareLock as i32);
    }
    oids
}
